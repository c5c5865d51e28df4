"""Render an optimization run as a rich table, JSON, Markdown or HTML.

The library produces plain data (``OptimizeResult.as_dict()``); this module only formats
it, so the CLI, the report files and the tests all see the same numbers.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from rich.table import Table

from onnxopt.errors import BadInputError


def human_bytes(count: float | int | None) -> str:
    """1536 -> '1.5 KiB'."""
    if count is None:
        return "-"
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def _error_text(record: dict[str, Any]) -> str:
    if record.get("max_abs_error") is None:
        return "-"
    return f"{record['max_abs_error']:.2e}"


def summary_rows(result: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(metric, before, after, ratio) rows for the before/after table."""
    before, after = result["before"], result["after"]
    rows = []
    for key, label in (("nodes", "nodes"), ("initializers", "initializers"), ("parameters", "parameters")):
        ratio = f"{after[key] / before[key]:.3f}" if before[key] else "-"
        rows.append((label, f"{before[key]:,}", f"{after[key]:,}", ratio))
    ratio = f"{after['weight_bytes'] / before['weight_bytes']:.3f}" if before["weight_bytes"] else "-"
    rows.append(("weight bytes", human_bytes(before["weight_bytes"]), human_bytes(after["weight_bytes"]), ratio))
    ratio = f"{result['output_bytes'] / result['input_bytes']:.3f}" if result["input_bytes"] else "-"
    rows.append(("file size", human_bytes(result["input_bytes"]), human_bytes(result["output_bytes"]), ratio))
    rows.append(("IR version", str(result.get("input_ir_version", "")), str(result.get("ir_version", "")), ""))
    return rows


def pass_rows(result: dict[str, Any]) -> list[tuple[str, ...]]:
    """One row per pass run that did something (or failed)."""
    rows = []
    for record in result["passes"]:
        if record["status"] == "unchanged":
            continue
        # Per-tensor decisions (a list of dicts) are counted here, not spelled out in a table cell.
        stats = ", ".join(f"{k}={len(v) if k == 'decisions' else v}" for k, v in record["stats"].items()
                          if v not in (0, None, [], {}))
        rows.append(
            (
                record["name"],
                str(record["iteration"]),
                record["status"] + (f": {record['reason']}" if record["reason"] else ""),
                f"{record['before']['nodes']}→{record['after']['nodes']}",
                f"{record['seconds']:.2f}s",
                _error_text(record),
                stats,
            )
        )
    return rows


def rich_tables(result: dict[str, Any]) -> list[Table]:
    """The per-pass table and the before/after table."""
    passes = Table(title="passes", show_lines=False)
    for column in ("pass", "iter", "status", "nodes", "time", "max err", "stats"):
        passes.add_column(column, overflow="fold")
    for row in pass_rows(result):
        passes.add_row(*row)
    summary = Table(title="before / after")
    for column in ("", "before", "after", "ratio"):
        summary.add_column(column, justify="right" if column else "left")
    for row in summary_rows(result):
        summary.add_row(*row)
    return [passes, summary]


def to_markdown(result: dict[str, Any]) -> str:
    lines = ["# onnxopt report", "", f"pipeline: {', '.join(result['pipeline'])}", ""]
    lines += ["| | before | after | ratio |", "|---|---:|---:|---:|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in summary_rows(result)]
    lines += ["", "| pass | iter | status | nodes | time | max err | stats |", "|---|---:|---|---|---:|---:|---|"]
    lines += ["| " + " | ".join(row) + " |" for row in pass_rows(result)]
    verification = result.get("verification")
    if verification:
        lines += [
            "",
            f"verification: max abs error {verification['max_abs_error']:.3g}, "
            f"min cosine {verification['min_cosine']:.6f}, identical: {verification['identical']}",
        ]
    return "\n".join(lines) + "\n"


def to_html(result: dict[str, Any]) -> str:
    def table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>onnxopt report</title></head><body>"
        f"<h1>onnxopt report</h1><p>pipeline: {html.escape(', '.join(result['pipeline']))}</p>"
        + table(("", "before", "after", "ratio"), summary_rows(result))
        + table(("pass", "iter", "status", "nodes", "time", "max err", "stats"), pass_rows(result))
        + "</body></html>\n"
    )


def write_report(result: dict[str, Any], path: Path) -> None:
    """Write a report; the format follows the suffix (.json, .md, .html)."""
    suffix = path.suffix.lower()
    if suffix == ".json":
        text = json.dumps(result, indent=2, default=str)
    elif suffix in (".md", ".markdown"):
        text = to_markdown(result)
    elif suffix in (".html", ".htm"):
        text = to_html(result)
    else:
        raise BadInputError(f"--report {path}: use a .json, .md or .html file name")
    path.write_text(text)
