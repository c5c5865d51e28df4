"""Building blocks of a standalone HTML report: the page, sections, cards and sortable tables.

Why a kit: the optimize, bench and tune pages (and any later one) must look alike and
keep the same promises — one file, no network (a Content-Security-Policy forbids every
fetch), readable without script, printable — so those promises live here once.

Tables sort on a header click and filter by text and by the values of one column; the
few lines of script that do it are inline, and a page without script still shows every
row. Every string is escaped with ``html.escape`` before it reaches the page.

Public API (documented in docs/reports.md): ``page``, ``section``, ``cards``,
``data_table``, ``key_value_table``, ``notes_list``, ``esc``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from html import escape
from typing import Any

from onnxopt.report.format import format_number
from onnxopt.report.schema import as_number

CSP = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:"

STYLE = """
:root { color-scheme: light; --muted: #666; --line: #ddd; --accent: #0072B2; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #222; margin: 0 auto;
       padding: 16px 24px 48px; max-width: 1180px; }
h1 { font-size: 22px; margin: 8px 0 2px; } h2 { font-size: 18px; margin: 28px 0 8px; border-bottom: 1px solid
var(--line); padding-bottom: 4px; } h3 { font-size: 15px; margin: 18px 0 6px; }
.subtitle, .muted { color: var(--muted); } code { font-size: 12.5px; background: #f4f4f4; padding: 0 3px; }
.cards { display: flex; flex-wrap: wrap; gap: 10px; margin: 12px 0; }
.card { border: 1px solid var(--line); border-radius: 6px; padding: 8px 12px; min-width: 150px; }
.card .value { font-size: 18px; font-weight: 600; } .card .label { color: var(--muted); font-size: 12px; }
.card .detail { color: var(--muted); font-size: 12px; }
table { border-collapse: collapse; margin: 6px 0 10px; font-size: 13px; }
th, td { border-bottom: 1px solid var(--line); padding: 3px 8px; text-align: left; vertical-align: top; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
th { background: #f6f6f6; position: sticky; top: 0; }
table.sortable th { cursor: pointer; user-select: none; }
table.sortable th[aria-sort=ascending]::after { content: " ▲"; font-size: 10px; }
table.sortable th[aria-sort=descending]::after { content: " ▼"; font-size: 10px; }
.table-wrap { max-height: 560px; overflow: auto; border: 1px solid var(--line); border-radius: 4px; }
.table-wrap table { margin: 0; width: 100%; }
.controls { display: flex; gap: 8px; align-items: center; margin: 6px 0; font-size: 13px; }
.controls input[type=search] { padding: 3px 6px; min-width: 220px; }
.status-ok { color: #007a55; } .status-error, .status-rolled-back { color: #b34700; font-weight: 600; }
.status-unchanged { color: var(--muted); }
table.hide-unchanged tr.unchanged { display: none; }
.charts { display: flex; flex-wrap: wrap; gap: 12px 24px; }
.chart-box { flex: 0 1 760px; min-width: 0; } .chart-box h4 { margin: 8px 0 2px; font-size: 13px; }
svg.chart { display: block; height: auto; }
details > summary { cursor: pointer; color: var(--accent); }
.pass { border-left: 3px solid var(--line); padding-left: 12px; margin: 16px 0; }
@media print {
  body { max-width: none; padding: 0; font-size: 11px; }
  .controls { display: none; }
  .table-wrap { max-height: none; overflow: visible; border: none; }
  th { position: static; }
  .chart-box, .card, tr { break-inside: avoid; }
  h2 { break-after: avoid; }
  details { display: block; } details > summary { display: none; }
}
"""

SCRIPT = """
(function () {
  "use strict";
  function sortKey(cell, numeric) {
    var raw = cell.hasAttribute("data-sort") ? cell.getAttribute("data-sort") : cell.textContent;
    if (numeric) { var n = parseFloat(raw); return isNaN(n) ? null : n; }
    return raw.toLowerCase();
  }
  function sortBy(table, th, col) {
    var numeric = th.getAttribute("data-type") === "number";
    var ascending = th.getAttribute("aria-sort") !== "ascending";
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (h) { h.setAttribute("aria-sort", "none"); });
    th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = sortKey(a.cells[col], numeric), y = sortKey(b.cells[col], numeric);
      if (x === y) { return 0; }
      if (x === null) { return 1; }
      if (y === null) { return -1; }
      return (x < y ? -1 : 1) * (ascending ? 1 : -1);
    });
    rows.forEach(function (row) { body.appendChild(row); });
  }
  function applyFilter(box) {
    var table = box.querySelector("table");
    var text = box.querySelector("input.filter");
    var facet = box.querySelector("select.facet");
    var needle = text ? text.value.toLowerCase() : "";
    var col = facet ? parseInt(facet.getAttribute("data-column"), 10) : -1;
    var wanted = facet ? facet.value : "";
    var shown = 0, rows = table.tBodies[0].rows;
    for (var i = 0; i < rows.length; i++) {
      var row = rows[i];
      var ok = (!needle || row.textContent.toLowerCase().indexOf(needle) >= 0) &&
               (!wanted || row.cells[col].textContent === wanted);
      row.hidden = !ok;
      if (ok) { shown++; }
    }
    var count = box.querySelector(".row-count");
    if (count) { count.textContent = shown + " of " + rows.length + " rows"; }
  }
  document.querySelectorAll("table.sortable").forEach(function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, col) {
      th.addEventListener("click", function () { sortBy(table, th, col); });
    });
  });
  document.querySelectorAll(".data-table").forEach(function (box) {
    box.querySelectorAll("input.filter, select.facet").forEach(function (control) {
      control.addEventListener("input", function () { applyFilter(box); });
      control.addEventListener("change", function () { applyFilter(box); });
    });
  });
  document.querySelectorAll("input.toggle-unchanged").forEach(function (box) {
    var table = document.getElementById(box.getAttribute("data-table"));
    box.addEventListener("change", function () { table.classList.toggle("hide-unchanged", !box.checked); });
  });
})();
"""


def esc(value: Any) -> str:
    """Escape any value for HTML text or a quoted attribute."""
    return escape(str(value), quote=True)


def page(title: str, sections: Sequence[str], subtitle: str = "") -> str:
    """A complete standalone HTML document: inline style and script, no external resource."""
    sub = f"<p class='subtitle'>{esc(subtitle)}</p>" if subtitle else ""
    return (
        "<!doctype html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<meta http-equiv='Content-Security-Policy' content=\"{CSP}\">"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{esc(title)}</title><style>{STYLE}</style></head><body>"
        f"<h1>{esc(title)}</h1>{sub}" + "".join(sections) + f"<script>{SCRIPT}</script></body></html>\n"
    )


def section(title: str, *content: str, anchor: str = "", intro: str = "") -> str:
    """An ``<h2>`` section; ``content`` is HTML already escaped by its builder."""
    ident = f" id='{esc(anchor)}'" if anchor else ""
    text = f"<p class='muted'>{esc(intro)}</p>" if intro else ""
    return f"<section{ident}><h2>{esc(title)}</h2>{text}{''.join(content)}</section>"


def cards(items: Sequence[tuple[str, str, str]]) -> str:
    """Headline figures: (label, value, detail) each."""
    body = "".join(f"<div class='card'><div class='label'>{esc(label)}</div><div class='value'>{esc(value)}</div>"
                   f"<div class='detail'>{esc(detail)}</div></div>" for label, value, detail in items)
    return f"<div class='cards'>{body}</div>"


def chart_box(title: str, svg: str) -> str:
    """A chart with its heading; ``svg`` comes from ``onnxopt.report.svg`` (already escaped)."""
    return f"<div class='chart-box'><h4>{esc(title)}</h4>{svg}</div>"


def charts(*boxes: str) -> str:
    return f"<div class='charts'>{''.join(box for box in boxes if box)}</div>"


def _cell(value: Any, numeric: bool, formatter: Callable[[Any], str] | None) -> str:
    text = formatter(value) if formatter else (format_number(value) if numeric else ("" if value is None else
                                                                                        str(value)))
    if numeric:
        number = as_number(value)
        sort = "" if number is None else f" data-sort='{esc(number)}'"
        return f"<td class='num'{sort}>{esc(text)}</td>"
    return f"<td>{esc(text)}</td>"


def data_table(
    columns: Sequence[str],
    rows: Sequence[Mapping[str, Any]],
    *,
    numeric: Sequence[str] = (),
    formatters: Mapping[str, Callable[[Any], str]] | None = None,
    facet: str | None = None,
    table_id: str = "",
    headers: Mapping[str, str] | None = None,
    row_class: Callable[[Mapping[str, Any]], str] | None = None,
) -> str:
    """A sortable, filterable table of ``rows`` (dicts) showing ``columns``.

    ``numeric`` columns align right and sort as numbers (their raw value rides in
    ``data-sort``); ``facet`` adds a drop-down of that column's distinct values.
    """
    formatters = formatters or {}
    headers = headers or {}
    numeric_set = set(numeric)
    head = "".join(
        f"<th{' class=num' if name in numeric_set else ''} data-type='{'number' if name in numeric_set else 'text'}' "
        f"aria-sort='none' title='sort by {esc(name)}'>{esc(headers.get(name, name))}</th>" for name in columns)
    body = []
    for row in rows:
        klass = row_class(row) if row_class else ""
        cells = "".join(_cell(row.get(name), name in numeric_set, formatters.get(name)) for name in columns)
        attribute = f" class='{esc(klass)}'" if klass else ""
        body.append(f"<tr{attribute}>{cells}</tr>")
    controls = ["<input type='search' class='filter' placeholder='filter rows…' aria-label='filter rows'>"]
    if facet and facet in columns:
        values = sorted({str(row.get(facet)) for row in rows if row.get(facet) is not None})
        options = "".join(f"<option value='{esc(v)}'>{esc(v)}</option>" for v in values)
        controls.append(f"<select class='facet' data-column='{list(columns).index(facet)}' aria-label='{esc(facet)}'>"
                        f"<option value=''>every {esc(facet)}</option>{options}</select>")
    controls.append(f"<span class='row-count muted'>{len(rows)} rows</span>")
    ident = f" id='{esc(table_id)}'" if table_id else ""
    return (f"<div class='data-table'><div class='controls'>{''.join(controls)}</div><div class='table-wrap'>"
            f"<table class='sortable'{ident}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
            "</div></div>")


def simple_table(header: Sequence[str], rows: Sequence[Sequence[str]], numeric: Sequence[int] = ()) -> str:
    """A small static table of already formatted text (no sorting or filtering)."""
    head = "".join(f"<th{' class=num' if i in numeric else ''}>{esc(h)}</th>" for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(f"<td{' class=num' if i in numeric else ''}>{esc(c)}</td>"
                                    for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def key_value_table(items: Sequence[tuple[str, str]], headers: tuple[str, str] = ("", "")) -> str:
    """A two-column table of already formatted text."""
    head = f"<thead><tr><th>{esc(headers[0])}</th><th>{esc(headers[1])}</th></tr></thead>" if any(headers) else ""
    body = "".join(f"<tr><td>{esc(key)}</td><td class='num'>{esc(value)}</td></tr>" for key, value in items)
    return f"<table class='kv'>{head}<tbody>{body}</tbody></table>"


def notes_list(notes: Sequence[str], open_limit: int = 8) -> str:
    """Notes as a list; beyond ``open_limit`` they fold into a ``<details>``."""
    if not notes:
        return ""
    items = [f"<li>{esc(note)}</li>" for note in notes]
    head, rest = items[:open_limit], items[open_limit:]
    folded = (f"<details><summary>{len(rest)} more notes</summary><ul>{''.join(rest)}</ul></details>"
              if rest else "")
    return f"<ul class='notes'>{''.join(head)}</ul>{folded}"
