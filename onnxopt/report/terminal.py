"""The terminal rendering: rich tables that fit the console width, long lists cut short.

A terminal is for the gist; the report file is for everything. So each pass row shows its
non-zero counters one per line (values humanised, each line cut with an ellipsis rather
than folded mid-number), per-node decisions show their most telling rows only, and a
line says where the rest is (``--report``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rich import box
from rich.console import RenderableType
from rich.table import Table
from rich.text import Text

from onnxopt.report.format import (
    format_count,
    format_error,
    format_number,
    format_ratio,
    format_seconds,
    format_stat,
    human_bytes,
    ratio,
)
from onnxopt.report.model import KNOWN_FIELDS, BenchView, DecisionTable, OptimizeView, PassView, TuneView, view_of

MAX_STAT_LINES = 10
DEFAULT_MAX_ROWS = 8


def _stat_lines(p: PassView, where: str) -> list[str]:
    lines = []
    if p.decisions is not None and p.decisions.rows:
        lines.append("decisions: " + ", ".join(f"{n} {d}" for d, n in p.decisions.counts().items()))
    for key, value in p.counters.items():
        if value in (0, None, "", False):
            continue
        lines.append(f"{key}={format_stat(key, value)}")
    for key, value in p.collections.items():
        if not value:
            continue
        if isinstance(value, Mapping) and len(value) == 1:
            (item, count), = value.items()
            lines.append(f"{key}: {item} ({format_stat(key, count)})")
        else:
            lines.append(f"{key}: {len(value)} {'kinds' if isinstance(value, Mapping) else 'items'}")
    if len(lines) > MAX_STAT_LINES:
        hidden = len(lines) - MAX_STAT_LINES + 1
        lines = [*lines[: MAX_STAT_LINES - 1], f"+{hidden} more ({where})"]
    return lines


def passes_table(view: OptimizeView, where: str = "see --report") -> Table:
    """Passes that did something (or failed): status, nodes, time, error and their counters."""
    table = Table(title="passes", box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    table.add_column("pass", no_wrap=True, max_width=22, overflow="ellipsis")
    table.add_column("status", overflow="fold", max_width=24)
    table.add_column("nodes", no_wrap=True, justify="right")
    table.add_column("time", no_wrap=True, justify="right")
    table.add_column("max err", no_wrap=True, justify="right")
    # Wrappable, so rich narrows this column first; its lines are cut with an ellipsis, never folded.
    table.add_column("what it did", overflow="ellipsis", min_width=16)
    quiet = 0
    for p in view.passes:
        if not p.changed and not (p.decisions and p.decisions.rows):
            quiet += 1
            continue
        status = p.status + (f": {p.reason}" if p.reason else "")
        table.add_row(p.label, status, f"{p.before.get('nodes', '?')}→{p.after.get('nodes', '?')}",
                      format_seconds(p.seconds), format_error(p.max_abs_error),
                      Text("\n".join(_stat_lines(p, where)) or "-", no_wrap=True, overflow="ellipsis"))
    if quiet:
        table.caption = f"{quiet} pass run(s) changed nothing"
    return table


def summary_table(view: OptimizeView) -> Table:
    """Whole-model figures before and after, with the ratio."""
    table = Table(title="before / after", box=box.SIMPLE_HEAD, show_edge=False)
    for column in ("", "before", "after", "ratio"):
        table.add_column(column, justify="right" if column else "left")
    for row in view.summary_rows():
        fmt = human_bytes if row.unit == "bytes" else format_count
        value = ratio(row.after, row.before)
        table.add_row(row.label, fmt(row.before), fmt(row.after), f"{value:.3f}" if value is not None else "-")
    table.add_row("IR version", str(view.get("input_ir_version", "")), str(view.get("ir_version", "")), "")
    return table


def _interesting_first(table: DecisionTable) -> list[dict[str, Any]]:
    """Rarer decisions first (the exceptions a reader looks for), then by the first known numeric field."""
    counts = table.counts()
    numeric = [name for name in KNOWN_FIELDS if name in table.numeric_columns()] or table.numeric_columns()
    key_column = numeric[0] if numeric else None

    values = table.values(key_column) if key_column else [None] * len(table.rows)

    def key(index: int) -> tuple[int, float]:
        value = values[index]
        return counts.get(str(table.rows[index].get("decision", "-")), 0), -(value if value is not None else
                                                                              float("-inf"))

    return [table.rows[index] for index in sorted(range(len(table.rows)), key=key)]


def decisions_table(p: PassView, max_rows: int, where: str) -> list[RenderableType]:
    """The first ``max_rows`` decisions of a pass, and a line saying where the rest are."""
    assert p.decisions is not None
    decisions = p.decisions
    numeric = ([name for name in KNOWN_FIELDS if name in decisions.numeric_columns()]
               + [name for name in decisions.numeric_columns() if name not in KNOWN_FIELDS])[:2]
    columns = [name for name in ("node", "op", "decision", "reason") if name in decisions.names] + numeric
    summary = ", ".join(f"{n} {d}" for d, n in decisions.counts().items())
    table = Table(title=f"{p.label}: per-node decisions ({summary})", box=box.SIMPLE_HEAD, pad_edge=False,
                  show_edge=False)
    for name in columns:
        if name == "node":
            table.add_column(name, no_wrap=True, overflow="ellipsis", max_width=28)
        elif name == "op":
            table.add_column(name, no_wrap=True, overflow="ellipsis", max_width=12)
        elif name == "reason":
            table.add_column(name, overflow="fold", min_width=20, ratio=1)
        else:
            table.add_column(name, no_wrap=True, justify="right" if name in numeric else "left")
    rows = _interesting_first(decisions)
    for row in rows[:max_rows]:
        table.add_row(*[(format_error(row.get(n)) if "error" in n else format_number(row.get(n))) if n in numeric
                        else str(row.get(n, "")) for n in columns])
    out: list[RenderableType] = [table]
    if len(rows) > max_rows:
        out.append(Text(f"… {len(rows) - max_rows} more of {len(rows)} rows: {where}", style="dim"))
    return out


def optimize_renderables(doc: Mapping[str, Any], report_path: str | None = None,
                         max_rows: int = DEFAULT_MAX_ROWS) -> list[RenderableType]:
    """Everything the terminal shows for an optimize report."""
    view = view_of(doc)
    assert isinstance(view, OptimizeView)
    where = f"see {report_path}" if report_path else "see --report"
    out: list[RenderableType] = [passes_table(view, where), summary_table(view)]
    for p in view.with_decisions():
        out += decisions_table(p, max_rows, where)
    return out


def bench_table(view: BenchView) -> Table:
    """The side-by-side bench table: one row per model, ratios to the first model."""
    config = view.config
    title = (f"{config.get('provider')} · batch {config.get('batch_size')} · {config.get('timed_runs')} runs after "
             f"{config.get('warmup_runs')} warm-up · inputs: {config.get('inputs')}")
    cpu = (view.doc.get("machine") or {}).get("cpu")
    if cpu:
        title += f" · {cpu}"
    table = Table(title=title, title_justify="left")
    table.add_column("model", no_wrap=True)
    for name in ("size", "p50 ms", "p90 ms", "mean ms", "samples/s", "peak mem", "p50 vs 1st", "thrpt vs 1st",
                 "mem vs 1st"):
        table.add_column(name, justify="right")
    for row in view.rows:
        table.add_row(
            row.name, human_bytes(row.file_bytes),
            *(f"{value:.3f}" if value is not None else "—" for value in (row.p50_ms, row.p90_ms, row.mean_ms)),
            f"{row.throughput:.1f}" if row.throughput is not None else "—",
            human_bytes(row.peak_rss_bytes) if row.peak_rss_bytes is not None else "—",
            *(format_ratio(row.ratios.get(key)) if row.ratios.get(key) is not None else "—"
              for key in ("latency_p50", "throughput", "peak_rss")),
        )
    return table


def tune_table(view: TuneView, max_rows: int = 20) -> list[RenderableType]:
    """The Pareto-front trials first, then the rest, cut at ``max_rows``."""
    table = Table(title=f"tune: {len(view.trials)} trials, {len(view.front)} on the Pareto front", box=box.SIMPLE_HEAD)
    columns = ["id", "status", *view.objectives, "pareto"]
    for name in columns:
        table.add_column(name, justify="right" if name in view.objectives else "left", overflow="fold")
    order = list(view.front) + [i for i in range(len(view.trials)) if i not in set(view.front)]
    for index in order[:max_rows]:
        trial = view.trials[index]
        cells = [str(trial.get("id", index)), str(trial.get("status", "ok"))]
        for name in view.objectives:
            value = trial.get(name)
            cells.append(human_bytes(value) if name.endswith("bytes") else format_error(value) if "error" in name
                         else format_number(value))
        cells.append("yes" if index in set(view.front) else "")
        table.add_row(*cells)
    out: list[RenderableType] = [table]
    if len(order) > max_rows:
        out.append(Text(f"… {len(order) - max_rows} more trials: render the report to HTML", style="dim"))
    return out


def renderables(doc: Mapping[str, Any], report_path: str | None = None,
                max_rows: int = DEFAULT_MAX_ROWS) -> Sequence[RenderableType]:
    """The terminal rendering of any report document."""
    view = view_of(doc)
    if isinstance(view, OptimizeView):
        return optimize_renderables(doc, report_path, max_rows)
    if isinstance(view, BenchView):
        return [bench_table(view)]
    return tune_table(view, max(max_rows, 20))
