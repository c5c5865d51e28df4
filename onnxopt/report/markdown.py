"""The Markdown rendering: for pull requests, issues and notebooks, where HTML does not go.

Same content as the HTML page without charts: summary, passes, per-node decisions (each
table capped at ``max_rows`` with a line saying how many were left out), errors per
output. Cell text is escaped for Markdown tables (``|``, newlines, HTML brackets) because
node names can hold anything.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from onnxopt.report.format import (
    format_cosine,
    format_count,
    format_error,
    format_number,
    format_ratio,
    format_seconds,
    format_stat,
    human_bytes,
    ratio,
)
from onnxopt.report.model import BenchView, OptimizeView, TuneView, view_of

DEFAULT_MAX_ROWS = 200


def cell(value: Any) -> str:
    """Text safe inside a Markdown table cell."""
    text = "" if value is None else str(value)
    text = text.replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")
    return text.replace("<", "&lt;").replace(">", "&gt;")


def table(header: Sequence[str], rows: Sequence[Sequence[Any]], right: Sequence[int] = ()) -> list[str]:
    lines = ["| " + " | ".join(cell(h) for h in header) + " |",
             "|" + "|".join("---:" if i in right else "---" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return lines


def _optimize(view: OptimizeView, max_rows: int) -> list[str]:
    lines = ["# onnxopt optimize report", ""]
    if view.get("input"):
        lines += [f"`{cell(view.get('input'))}` → `{cell(view.get('output'))}`", ""]
    lines += [f"pipeline: {cell(', '.join(view.get('pipeline') or []))}", ""]
    rows = []
    for row in view.summary_rows():
        fmt = human_bytes if row.unit == "bytes" else format_count
        value = ratio(row.after, row.before)
        rows.append((row.label, fmt(row.before), fmt(row.after), f"{value:.3f}" if value is not None else "-"))
    lines += table(("", "before", "after", "ratio"), rows, right=(1, 2, 3))
    pass_rows = []
    for p in view.passes:
        if not p.changed and not p.decisions:
            continue
        counters = ", ".join(f"{k}={format_stat(k, v)}" for k, v in p.counters.items() if v not in (0, None, ""))
        decided = ", ".join(f"{n} {d}" for d, n in p.decisions.counts().items()) if p.decisions else ""
        pass_rows.append((p.name, p.iteration, p.status + (f": {p.reason}" if p.reason else ""),
                          f"{p.before.get('nodes')}→{p.after.get('nodes')}", format_seconds(p.seconds),
                          format_error(p.max_abs_error), decided, counters))
    lines += ["", "## Passes", ""]
    lines += table(("pass", "iter", "status", "nodes", "time", "max err", "decisions", "stats"), pass_rows,
                   right=(1, 4, 5))
    verification = view.get("verification")
    if verification:
        lines += ["", f"verification: max abs error {format_error(verification.get('max_abs_error'))}, "
                  f"min cosine {format_cosine(verification.get('min_cosine'))}, "
                  f"identical: {verification.get('identical')}", ""]
        lines += table(("output", "max abs error", "max rel error", "cosine"),
                       [(o.get("name"), format_error(o.get("max_abs_error")), format_error(o.get("max_rel_error")),
                         format_cosine(o.get("cosine"))) for o in view.outputs], right=(1, 2, 3))
    for p in view.with_decisions():
        assert p.decisions is not None
        names = p.decisions.names
        numeric = set(p.decisions.numeric_columns())
        lines += ["", f"## {p.label}: per-node decisions", ""]
        shown = p.decisions.rows[:max_rows]
        lines += table(names, [[(format_error(r.get(n)) if "error" in n else format_number(r.get(n)))
                                if n in numeric else r.get(n, "") for n in names] for r in shown],
                       right=[i for i, n in enumerate(names) if n in numeric])
        if len(p.decisions.rows) > max_rows:
            lines += ["", f"… {len(p.decisions.rows) - max_rows} more rows (the HTML or JSON report has them all)"]
    return lines


def _bench(view: BenchView) -> list[str]:
    lines = ["# onnxopt bench report", ""]
    machine = view.doc.get("machine") or {}
    if machine:
        lines += [f"Measured on {machine.get('cpu') or machine.get('processor', '?')}, "
                  f"{machine.get('cpu_count', '?')} cores, onnxruntime {machine.get('onnxruntime', '?')}.", ""]
    rows = [(r.name, human_bytes(r.file_bytes), format_number(r.p50_ms), format_number(r.p90_ms),
             format_number(r.throughput), human_bytes(r.peak_rss_bytes), format_ratio(r.ratios.get("latency_p50")))
            for r in view.rows]
    return lines + table(("model", "size", "p50 ms", "p90 ms", "samples/s", "peak memory", "p50 vs first"), rows,
                         right=(1, 2, 3, 4, 5, 6))


def _tune(view: TuneView, max_rows: int) -> list[str]:
    lines = ["# onnxopt tune report", "", f"{len(view.trials)} trials, {len(view.front)} on the Pareto front", ""]
    front = set(view.front)
    rows = [(t.get("id", i), t.get("status", "ok"), *(format_number(t.get(o)) for o in view.objectives),
             "yes" if i in front else "") for i, t in enumerate(view.trials[:max_rows])]
    return lines + table(("id", "status", *view.objectives, "pareto"), rows)


def to_markdown(doc: Mapping[str, Any], max_rows: int = DEFAULT_MAX_ROWS) -> str:
    """The Markdown rendering of any report document."""
    view = view_of(doc)
    if isinstance(view, OptimizeView):
        lines = _optimize(view, max_rows)
    elif isinstance(view, BenchView):
        lines = _bench(view)
    else:
        lines = _tune(view, max_rows)
    return "\n".join(lines) + "\n"
