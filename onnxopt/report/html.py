"""The HTML rendering of a report: one standalone page per kind (optimize, bench, tune).

Built from the typed views of ``onnxopt.report.model`` with the blocks of
``onnxopt.report.htmlkit`` and the charts of ``onnxopt.report.svg``. The page answers, in
this order, what a reader asks: how much smaller and how far off (summary cards), where
the bytes went (by dtype, by op), what each pass did and how long it took (timeline,
table), which nodes each pass changed and why (per-node decision tables with charts), and
how far each output moved (error per output).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from onnxopt.report import htmlkit as kit
from onnxopt.report.format import (
    format_cosine,
    format_count,
    format_error,
    format_number,
    format_ratio,
    format_seconds,
    format_stat,
    human_bytes,
    is_bytes_key,
    ratio,
)
from onnxopt.report.model import (
    KNOWN_FIELDS,
    BenchView,
    DecisionTable,
    OptimizeView,
    PassView,
    TuneView,
    pareto_front,
    view_of,
)
from onnxopt.report.schema import as_number
from onnxopt.report.svg import Point, Series, TimelineSpan, bar_chart, color_for, scatter_chart, timeline_chart

MAX_CHARTED_COLUMNS = 3
MAX_OPS_CHARTED = 25


def render_html(doc: Mapping[str, Any]) -> str:
    """The standalone HTML page of any report document (its ``kind`` picks the page)."""
    view = view_of(doc)
    if isinstance(view, OptimizeView):
        return optimize_page(view)
    if isinstance(view, BenchView):
        return bench_page(view)
    return tune_page(view)


# --- optimize ---------------------------------------------------------------------------


def _subtitle(view: OptimizeView) -> str:
    parts = []
    if view.get("input") or view.get("output"):
        parts.append(f"{view.get('input') or '?'} → {view.get('output') or '?'}")
    if view.get("target"):
        parts.append(f"target {view.get('target')}")
    if view.get("created"):
        parts.append(f"{view.get('created')}")
    if view.get("onnxopt_version"):
        parts.append(f"onnxopt {view.get('onnxopt_version')}")
    return " · ".join(parts)


def _cards(view: OptimizeView) -> str:
    items = []
    rows = {row.label: row for row in view.summary_rows()}
    for label in ("file size", "weight bytes"):
        row = rows[label]
        value = ratio(row.after, row.before)
        items.append((label, f"{human_bytes(row.before)} → {human_bytes(row.after)}",
                      f"{format_ratio(value)} of the input" if value is not None else ""))
    nodes = rows["nodes"]
    items.append(("nodes", f"{format_count(nodes.before)} → {format_count(nodes.after)}", ""))
    verification = view.get("verification") or {}
    if verification:
        items.append(("max abs error (all outputs)", format_error(verification.get("max_abs_error")),
                      f"min cosine {format_cosine(verification.get('min_cosine'))}"))
    failed = [p for p in view.passes if p.status in ("rolled back", "error")]
    changed = [p for p in view.passes if p.status == "ok"]
    items.append(("passes", f"{len(changed)} changed", f"{len(failed)} rolled back or failed, "
                  f"{format_seconds(as_number(view.get('seconds')))} in all"))
    return kit.cards(items)


def _before_after(view: OptimizeView) -> str:
    rows = []
    for row in view.summary_rows():
        fmt = human_bytes if row.unit == "bytes" else format_count
        value = ratio(row.after, row.before)
        rows.append((row.label, fmt(row.before), fmt(row.after), f"{value:.3f}" if value is not None else "-"))
    rows.append(("IR version", str(view.get("input_ir_version", "")), str(view.get("ir_version", "")), ""))
    table = kit.simple_table(["", "before", "after", "ratio"], rows, numeric=(1, 2, 3))
    boxes = []
    for name, title, formatter in (("weights_by_dtype", "weight bytes by dtype", human_bytes),
                                   ("weights_by_op", "weight bytes by the op reading them", human_bytes),
                                   ("ops", "nodes by op", format_number)):
        keys, before, after = view.breakdown(name)
        if keys:
            svg = bar_chart(keys, [Series("before", before), Series("after", after)], title=title,
                            formatter=formatter, max_bars=MAX_OPS_CHARTED, binary=formatter is human_bytes)
            boxes.append(kit.chart_box(title, svg))
    return kit.section("Before / after", table, kit.charts(*boxes), anchor="summary")


def _pass_table(view: OptimizeView) -> str:
    rows = []
    for p in view.passes:
        rows.append({
            "#": p.index + 1, "pass": p.name, "iter": p.iteration, "contract": p.contract,
            "status": p.status + (f": {p.reason}" if p.reason else ""),
            "nodes": f"{p.before.get('nodes', '?')}→{p.after.get('nodes', '?')}",
            "weight bytes saved": (as_number(p.before.get("weight_bytes")) or 0) - (
                as_number(p.after.get("weight_bytes")) or 0),
            "seconds": p.seconds, "check seconds": p.check_seconds,
            "max abs error": p.max_abs_error, "min cosine": p.min_cosine,
            "decisions": ", ".join(f"{n} {d}" for d, n in p.decisions.counts().items()) if p.decisions else "",
        })
    columns = ["#", "pass", "iter", "contract", "status", "nodes", "weight bytes saved", "seconds",
               "check seconds", "max abs error", "min cosine", "decisions"]
    hidden = any(not p.changed for p in view.passes)
    table = kit.data_table(
        columns, rows, numeric=["#", "iter", "weight bytes saved", "seconds", "check seconds", "max abs error",
                                "min cosine"],
        formatters={"weight bytes saved": lambda v: human_bytes(v) if v else "0",
                    "seconds": lambda v: f"{v:.3f}", "check seconds": lambda v: f"{v:.3f}",
                    "max abs error": format_error, "min cosine": format_cosine},
        facet="pass", table_id="passes-table",
        row_class=lambda row: "unchanged" if str(row["status"]) == "unchanged" else "")
    toggle = ("<label class='controls'><input type='checkbox' class='toggle-unchanged' data-table='passes-table'"
              " checked> show passes that changed nothing</label>") if hidden else ""
    spans = [TimelineSpan(s.label, s.start, s.end, s.check_end, s.status) for s in view.timeline()]
    timeline = kit.chart_box("timeline (pass, then its checks and verification)",
                             timeline_chart(spans, title="pass timeline", tail_name="checks / verification"))
    return kit.section("Passes", timeline, toggle, table, anchor="passes",
                       intro="Every pass run in order; cleanup passes repeat until nothing changes.")


def _outputs(view: OptimizeView) -> str:
    if not view.outputs:
        return ""
    rows = [{"output": o.get("name"), "max abs error": o.get("max_abs_error"), "max rel error": o.get("max_rel_error"),
             "cosine": o.get("cosine"), "identical": "yes" if o.get("identical") else "no",
             "new NaN/Inf": o.get("nonfinite_values")} for o in view.outputs]
    table = kit.data_table(["output", "max abs error", "max rel error", "cosine", "identical", "new NaN/Inf"], rows,
                           numeric=["max abs error", "max rel error", "cosine", "new NaN/Inf"],
                           formatters={"max abs error": format_error, "max rel error": format_error,
                                       "cosine": format_cosine})
    labels = [str(o.get("name")) for o in view.outputs]
    series = [Series("max abs error", [as_number(o.get("max_abs_error")) for o in view.outputs]),
              Series("max rel error", [as_number(o.get("max_rel_error")) for o in view.outputs])]
    positive = all((v or 0) > 0 for s in series for v in s.values)
    svg = bar_chart(labels, series, title="error per output", formatter=format_error, log_scale=positive)
    return kit.section("Error per output", kit.charts(kit.chart_box("error per output vs the original", svg)),
                       table, anchor="errors", intro="The optimized model against the original on the same inputs, "
                       "worst case over the verification batches.")


def column_formatter(name: str):
    """How a numeric decision column reads: bytes humanised, errors in e-notation, the rest as numbers."""
    if is_bytes_key(name):
        return human_bytes
    return format_error if "error" in name else format_number


def _column_order(table: DecisionTable) -> list[str]:
    numeric = table.numeric_columns()
    known = [name for name in KNOWN_FIELDS if name in numeric]
    return known + [name for name in numeric if name not in known]


def decision_charts(table: DecisionTable, pass_name: str = "") -> str:
    """Charts of one decision table: rows per decision, then each numeric column (known fields first)."""
    counts = table.counts()
    boxes = [kit.chart_box("nodes per decision", bar_chart(
        list(counts), [Series("nodes", list(counts.values()))], title=f"{pass_name} decisions",
        bar_colors=[color_for(name, i) for i, name in enumerate(counts)]))]
    decisions = list(counts)
    for column in _column_order(table)[:MAX_CHARTED_COLUMNS]:
        info = KNOWN_FIELDS.get(column)
        pairs = [(row, value) for row, value in zip(table.rows, table.values(column), strict=True)
                 if value is not None]
        if not pairs:
            continue
        pairs.sort(key=lambda item: -item[1] if math.isfinite(item[1]) else -math.inf)
        labels = [table.label(row) for row, _ in pairs]
        colors = [color_for(str(row.get("decision", "")), decisions.index(str(row.get("decision", "-")))
                            if str(row.get("decision", "-")) in decisions else 0) for row, _ in pairs]
        values = [value for _, value in pairs]
        log = bool(info and info.log_scale and all(v > 0 for v in values if math.isfinite(v)))
        title = info.label if info else column
        svg = bar_chart(labels, [Series(column, values)], title=f"{pass_name}: {title}", bar_colors=colors,
                        reference=info.reference if info else None, log_scale=log,
                        formatter=format_error if log else column_formatter(column), binary=is_bytes_key(column))
        boxes.append(kit.chart_box(f"{title} per node, coloured by decision", svg))
    return kit.charts(*boxes)


def decision_table(table: DecisionTable, table_id: str = "") -> str:
    """The sortable, filterable per-node table of any pass's decisions."""
    numeric = table.numeric_columns()
    formatters = {name: column_formatter(name) for name in numeric}
    return kit.data_table(table.names, table.rows, numeric=numeric, formatters=formatters, facet="decision",
                          table_id=table_id)


def _pass_detail(p: PassView) -> str:
    status = p.status + (f": {p.reason}" if p.reason else "")
    klass = "status-" + p.status.replace(" ", "-")
    parts = [f"<div class='pass' id='pass-{p.index + 1}'><h3>{kit.esc(p.label)} "
             f"<span class='{klass}'>({kit.esc(status)})</span></h3>"]
    counters = [(key, format_stat(key, value)) for key, value in p.counters.items()]
    if counters:
        parts.append(kit.key_value_table(counters, ("counter", "value")))
    for key, value in p.collections.items():
        if not value:
            continue
        if isinstance(value, Mapping):
            items = [(str(k), format_stat(key, v) if not isinstance(v, Mapping | list) else str(v))
                     for k, v in value.items()]
            parts.append(f"<h4>{kit.esc(key)}</h4>" + kit.key_value_table(items))
        else:
            shown = ", ".join(str(item) for item in value)
            parts.append(f"<details><summary>{kit.esc(key)}: {len(value)} item(s)</summary>"
                         f"<p>{kit.esc(shown)}</p></details>")
    if p.decisions is not None and p.decisions.rows:
        parts.append(f"<h4>per-node decisions ({len(p.decisions.rows)})</h4>")
        parts.append(decision_charts(p.decisions, p.name))
        parts.append(decision_table(p.decisions, table_id=f"decisions-{p.index + 1}"))
    parts.append(kit.notes_list(p.notes))
    parts.append("</div>")
    return "".join(parts)


def optimize_page(view: OptimizeView) -> str:
    details = [_pass_detail(p) for p in view.passes if p.changed or p.decisions or p.notes]
    pipeline = ", ".join(str(name) for name in view.get("pipeline") or [])
    sections = [
        _cards(view),
        f"<p>pipeline: <code>{kit.esc(pipeline)}</code></p>" if pipeline else "",
        _before_after(view),
        _passes_section(view),
        _outputs(view),
        kit.section("What each pass did", *details, anchor="details",
                    intro="Counters, per-node decisions (sort by a header, filter by text or decision) and notes "
                          "of every pass that changed, refused or noted something.") if details else "",
    ]
    return kit.page("onnxopt optimize report", sections, _subtitle(view))


def _passes_section(view: OptimizeView) -> str:
    return _pass_table(view)


# --- bench ------------------------------------------------------------------------------


def bench_page(view: BenchView) -> str:
    config = view.config
    machine = view.doc.get("machine") or {}
    subtitle = " · ".join(str(part) for part in (
        f"provider {config.get('provider', '?')}", f"batch {config.get('batch_size', '?')}",
        f"{config.get('timed_runs', '?')} timed runs after {config.get('warmup_runs', '?')} warm-up",
        f"inputs {config.get('inputs', '?')}", machine.get("cpu") or machine.get("processor", ""),
        f"onnxruntime {machine.get('onnxruntime', '?')}") if part)
    names = [row.name for row in view.rows]
    boxes = [
        kit.chart_box("latency (ms, lower is faster)", bar_chart(
            names, [Series("p50", [r.p50_ms for r in view.rows]), Series("p90", [r.p90_ms for r in view.rows])],
            title="latency ms", formatter=lambda v: f"{v:.3g}")),
        kit.chart_box("file size", bar_chart(names, [Series("size", [r.file_bytes for r in view.rows])],
                                             title="file size", formatter=human_bytes, binary=True)),
        kit.chart_box("throughput (samples/s)", bar_chart(
            names, [Series("throughput", [r.throughput for r in view.rows])], title="throughput")),
    ]
    if any(r.peak_rss_bytes is not None for r in view.rows):
        boxes.append(kit.chart_box("peak memory", bar_chart(
            names, [Series("peak RSS", [r.peak_rss_bytes for r in view.rows])], title="peak memory",
            formatter=human_bytes, binary=True)))
    rows = [{"model": r.name, "size": r.file_bytes, "p50 ms": r.p50_ms, "p90 ms": r.p90_ms, "mean ms": r.mean_ms,
             "samples/s": r.throughput, "peak memory": r.peak_rss_bytes,
             "p50 vs first": r.ratios.get("latency_p50"), "size vs first": r.ratios.get("file_bytes"),
             "memory vs first": r.ratios.get("peak_rss"), "path": r.path} for r in view.rows]
    numeric = ["size", "p50 ms", "p90 ms", "mean ms", "samples/s", "peak memory", "p50 vs first", "size vs first",
               "memory vs first"]
    formatters = {"size": human_bytes, "peak memory": human_bytes, "p50 vs first": format_ratio,
                  "size vs first": format_ratio, "memory vs first": format_ratio}
    table = kit.data_table(["model", *numeric, "path"], rows, numeric=numeric, formatters=formatters,
                           table_id="bench-table")
    first = view.rows[0] if view.rows else None
    cards = [(r.name, f"{format_number(r.p50_ms)} ms", f"{format_ratio(r.ratios.get('latency_p50'))} of "
              f"{first.name}" if first else "") for r in view.rows[:6]]
    return kit.page("onnxopt bench report", [
        kit.cards(cards),
        kit.section("Latency, size and memory", kit.charts(*boxes), anchor="charts",
                    intro="Runs interleaved round-robin, so machine noise hits every model alike; ratios are to "
                          "the first model."),
        kit.section("Models", table, anchor="models"),
    ], subtitle)


# --- tune -------------------------------------------------------------------------------


def _axis_format(name: str):
    if name.endswith("bytes"):
        return human_bytes
    if "error" in name:
        return format_error
    return format_number


def tune_page(view: TuneView) -> str:
    trials = view.trials
    on_front = set(view.front)
    boxes = []
    objectives = view.objectives
    pairs = [(objectives[0], objectives[i]) for i in range(1, len(objectives))] if len(objectives) > 1 else []
    for x_name, y_name in pairs:
        usable = [i for i, t in enumerate(trials)
                  if as_number(t.get(x_name)) is not None and as_number(t.get(y_name)) is not None]
        points = [Point(as_number(trials[i][x_name]) or 0.0, as_number(trials[i][y_name]) or 0.0,
                        str(trials[i].get("id", i)), str(trials[i].get("status", "ok"))) for i in usable]
        front = [k for k, i in enumerate(usable) if i in on_front]
        line = [usable_index for usable_index in pareto_front([[p.x, p.y] for p in points])
                if points[usable_index].group == "ok"]
        log_y = "error" in y_name and all(p.y > 0 for p in points)
        svg = scatter_chart(points, x_label=x_name, y_label=y_name, title=f"{y_name} vs {x_name}",
                            x_formatter=_axis_format(x_name), y_formatter=_axis_format(y_name), log_y=log_y,
                            front=front, front_line=line)
        boxes.append(kit.chart_box(f"{y_name} vs {x_name} (ringed: Pareto front)", svg))
    columns: list[str] = []
    # Scalar fields only (docs/reports.md): nested ones (a trial's host, its config) stay in the JSON.
    for trial in trials:
        columns.extend(key for key, value in trial.items()
                       if key not in columns and (value is None or isinstance(value, str | int | float | bool)))
    rows = [{**t, "pareto": "yes" if i in on_front else ""} for i, t in enumerate(trials)]
    if "pareto" not in columns:
        columns.append("pareto")
    numeric = [c for c in columns if c != "pareto" and any(as_number(r.get(c)) is not None for r in rows)
               and all(as_number(r.get(c)) is not None for r in rows if r.get(c) is not None)]
    formatters = {c: _axis_format(c) for c in numeric}
    table = kit.data_table(columns, rows, numeric=numeric, formatters=formatters, facet="status",
                           table_id="trials-table")
    cards = [("trials", str(len(trials)), ""), ("on the Pareto front", str(len(on_front)),
                                                "no other trial is better in every objective")]
    best = view.doc.get("best")
    if isinstance(best, Mapping) and best.get("key"):  # onnxopt tune names its choice
        cards.append(("best within budget", str(best["key"]), f"trial {best.get('index', '')}"))
    cards = kit.cards(cards)
    model = view.doc.get("model") or view.doc.get("input") or ""
    return kit.page("onnxopt tune report", [
        cards,
        kit.section("Trade-offs", kit.charts(*boxes), anchor="pareto",
                    intro=f"objectives (all minimised): {', '.join(objectives)}"),
        kit.section("Trials", table, anchor="trials"),
    ], str(model))
