"""The report model: one structured view of a report document, read by every renderer.

A report document is plain JSON-able data (``OptimizeResult.as_dict()``, a bench or tune
result). The renderers (terminal, Markdown, HTML) should not each re-parse it: this module
turns it into typed views once — per-pass records with their scalar counters apart from
their per-node decisions, before/after breakdowns, per-output errors, bench rows, tune
trials — so all renderings show the same numbers.

Per-node decisions follow one convention for every pass, present and future:
``stats["decisions"]`` is a list of flat dicts ``{"node", "op", "decision", "reason",
<numeric fields>…}``. Nothing here knows a pass by name; a few *fields* have known meaning
(``KNOWN_FIELDS``: e.g. ``time_ratio`` is a ratio to float time where 1.0 is break-even),
and every other numeric field is still charted and sortable.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from onnxopt.report.schema import as_number, validate

DECISIONS_KEY = "decisions"
FIRST_COLUMNS = ("node", "op", "decision", "reason")


@dataclass(frozen=True)
class FieldInfo:
    """What a known decision field means, for chart titles and reference lines."""

    label: str
    reference: float | None = None  # a value drawn as a line (break-even)
    lower_is_better: bool = True
    log_scale: bool = False


KNOWN_FIELDS: dict[str, FieldInfo] = {
    "time_ratio": FieldInfo("time ratio to float (one-node model; < 1 is faster)", reference=1.0),
    "error": FieldInfo("error", log_scale=True),
    "sensitivity": FieldInfo("output error caused by this node alone (sensitivity)", log_scale=True),
    "relative_error": FieldInfo("relative error", log_scale=True),
    "output_error": FieldInfo("relative output error", log_scale=True),
}


@dataclass(frozen=True)
class Column:
    name: str
    numeric: bool


@dataclass
class DecisionTable:
    """A pass's per-node decisions: the rows as emitted, and the columns found in them."""

    rows: list[dict[str, Any]]
    columns: list[Column]

    @classmethod
    def from_rows(cls, rows: Sequence[Any]) -> DecisionTable:
        flat = [dict(row) for row in rows if isinstance(row, Mapping)]
        order: list[str] = [name for name in FIRST_COLUMNS if any(name in row for row in flat)]
        for row in flat:
            order.extend(key for key in row if key not in order)
        columns = []
        for name in order:
            values = [row.get(name) for row in flat if row.get(name) is not None]
            numeric = bool(values) and all(as_number(value) is not None for value in values)
            columns.append(Column(name, numeric and name not in FIRST_COLUMNS))
        return cls(flat, columns)

    @property
    def names(self) -> list[str]:
        return [column.name for column in self.columns]

    def numeric_columns(self) -> list[str]:
        return [column.name for column in self.columns if column.numeric]

    def counts(self) -> dict[str, int]:
        """Rows per decision value, most common first."""
        return dict(Counter(str(row.get("decision", "-")) for row in self.rows).most_common())

    def values(self, column: str) -> list[float | None]:
        return [as_number(row.get(column)) for row in self.rows]

    def label(self, row: Mapping[str, Any]) -> str:
        return str(row.get("node") or row.get("weight") or row.get("tensor") or "?")


@dataclass
class PassView:
    """One run of one pass: status, sizes, errors, scalar counters, other collections, decisions."""

    index: int
    name: str
    contract: str
    iteration: int
    status: str
    reason: str
    seconds: float
    started_s: float | None
    check_seconds: float
    before: dict[str, Any]
    after: dict[str, Any]
    max_abs_error: float | None
    max_rel_error: float | None
    min_cosine: float | None
    counters: dict[str, Any]
    collections: dict[str, Any]
    decisions: DecisionTable | None
    notes: list[str]

    @property
    def changed(self) -> bool:
        return self.status != "unchanged"

    @property
    def label(self) -> str:
        return self.name if self.iteration <= 1 else f"{self.name} #{self.iteration}"

    @classmethod
    def from_record(cls, index: int, record: Mapping[str, Any]) -> PassView:
        stats = record.get("stats") or {}
        counters: dict[str, Any] = {}
        collections: dict[str, Any] = {}
        decisions = None
        for key, value in stats.items():
            if key == DECISIONS_KEY and isinstance(value, list):
                decisions = DecisionTable.from_rows(value)
            elif isinstance(value, Mapping | list | tuple):
                collections[key] = value
            else:
                counters[key] = value
        return cls(
            index=index,
            name=str(record.get("name", "?")),
            contract=str(record.get("contract", "")),
            iteration=int(record.get("iteration") or 1),
            status=str(record.get("status", "")),
            reason=str(record.get("reason") or ""),
            seconds=as_number(record.get("seconds")) or 0.0,
            started_s=as_number(record.get("started_s")),
            check_seconds=as_number(record.get("check_seconds")) or 0.0,
            before=dict(record.get("before") or {}),
            after=dict(record.get("after") or {}),
            max_abs_error=as_number(record.get("max_abs_error")),
            max_rel_error=as_number(record.get("max_rel_error")),
            min_cosine=as_number(record.get("min_cosine")),
            counters=counters,
            collections=collections,
            decisions=decisions,
            notes=[str(note) for note in record.get("notes") or []],
        )


@dataclass(frozen=True)
class Span:
    """A pass on the timeline: it ran from ``start`` to ``end``, then was checked until ``check_end``."""

    label: str
    start: float
    end: float
    check_end: float
    status: str


@dataclass
class SummaryRow:
    label: str
    before: float | None
    after: float | None
    unit: str  # "count" or "bytes"


@dataclass
class OptimizeView:
    """An ``optimize`` report: whole-model figures, per-pass records, per-output errors."""

    doc: dict[str, Any]
    passes: list[PassView]
    outputs: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> OptimizeView:
        verification = doc.get("verification") or {}
        outputs = [dict(output) for output in verification.get("outputs") or [] if isinstance(output, Mapping)]
        passes = [PassView.from_record(index, record) for index, record in enumerate(doc.get("passes") or [])]
        return cls(dict(doc), passes, outputs)

    def get(self, key: str, default: Any = None) -> Any:
        return self.doc.get(key, default)

    @property
    def title(self) -> str:
        source = self.doc.get("input") or "model"
        return f"onnxopt optimize: {source}"

    def summary_rows(self) -> list[SummaryRow]:
        before, after = self.doc.get("before") or {}, self.doc.get("after") or {}
        rows = [SummaryRow(label, as_number(before.get(key)), as_number(after.get(key)), "count")
                for key, label in (("nodes", "nodes"), ("initializers", "initializers"), ("parameters", "parameters"))]
        rows.append(SummaryRow("weight bytes", as_number(before.get("weight_bytes")),
                               as_number(after.get("weight_bytes")), "bytes"))
        rows.append(SummaryRow("file size", as_number(self.doc.get("input_bytes")),
                               as_number(self.doc.get("output_bytes")), "bytes"))
        return rows

    def breakdown(self, name: str) -> tuple[list[str], list[float | None], list[float | None]]:
        """Keys and before/after values of ``<name>_before``/``<name>_after`` mappings (e.g. ``ops``)."""
        before = self.doc.get(f"{name}_before") or {}
        after = self.doc.get(f"{name}_after") or {}
        keys = sorted(set(before) | set(after), key=lambda k: -max(as_number(before.get(k)) or 0,
                                                                    as_number(after.get(k)) or 0))
        return keys, [as_number(before.get(k)) for k in keys], [as_number(after.get(k)) for k in keys]

    def timeline(self) -> list[Span]:
        """Spans of every pass run; records without start offsets are laid end to end."""
        spans = []
        clock = 0.0
        for view in self.passes:
            start = view.started_s if view.started_s is not None else clock
            end = start + view.seconds
            check_end = end + view.check_seconds
            spans.append(Span(view.label, start, end, check_end, view.status))
            clock = check_end
        return spans

    def with_decisions(self) -> list[PassView]:
        return [view for view in self.passes if view.decisions is not None and view.decisions.rows]


@dataclass
class BenchRow:
    name: str
    path: str
    file_bytes: float | None
    p50_ms: float | None
    p90_ms: float | None
    mean_ms: float | None
    throughput: float | None
    peak_rss_bytes: float | None
    ratios: dict[str, float | None]


@dataclass
class BenchView:
    """A ``bench`` result: one row per model, ratios to the first."""

    doc: dict[str, Any]
    rows: list[BenchRow]

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> BenchView:
        rows = []
        for model in doc.get("models") or []:
            latency = model.get("latency") or {}
            memory = model.get("memory") or {}
            rows.append(BenchRow(
                name=str(model.get("name", "?")),
                path=str(model.get("path", "")),
                file_bytes=as_number(model.get("file_bytes")),
                p50_ms=as_number(latency.get("p50_ms")),
                p90_ms=as_number(latency.get("p90_ms")),
                mean_ms=as_number(latency.get("mean_ms")),
                throughput=as_number(model.get("throughput_samples_per_s")),
                peak_rss_bytes=as_number(memory.get("peak_rss_bytes")),
                ratios={key: as_number(value) for key, value in (model.get("ratio_to_first") or {}).items()},
            ))
        return cls(dict(doc), rows)

    @property
    def config(self) -> dict[str, Any]:
        return dict(self.doc.get("config") or {})


DEFAULT_OBJECTIVES = ("latency_ms", "size_bytes", "error")


@dataclass
class TuneView:
    """A ``tune`` result: trials with size/latency/error, and which of them form the Pareto front."""

    doc: dict[str, Any]
    trials: list[dict[str, Any]]
    objectives: list[str]
    front: list[int]  # indices into trials

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> TuneView:
        trials = [dict(trial) for trial in doc.get("trials") or [] if isinstance(trial, Mapping)]
        objectives = [str(name) for name in doc.get("objectives") or DEFAULT_OBJECTIVES]
        flagged = [index for index, trial in enumerate(trials) if trial.get("pareto") is True]
        if not flagged and not any("pareto" in trial for trial in trials):
            usable = [index for index, trial in enumerate(trials)
                      if trial.get("status", "ok") == "ok"
                      and all(as_number(trial.get(name)) is not None for name in objectives)]
            points = [[as_number(trials[index][name]) or 0.0 for name in objectives] for index in usable]
            flagged = [usable[index] for index in pareto_front(points)]
        return cls(dict(doc), trials, objectives, flagged)


def pareto_front(points: Sequence[Sequence[float]]) -> list[int]:
    """Indices of the points no other point beats: as low or lower everywhere, strictly lower somewhere.

    Every objective is minimised (negate one to maximise it). NaN never dominates and is
    never on the front. Quadratic, which is fine for the hundreds of trials a tune writes.
    """
    clean = [all(isinstance(v, int | float) and not math.isnan(v) for v in point) for point in points]
    front = []
    for index, point in enumerate(points):
        if not clean[index]:
            continue
        dominated = any(
            clean[other] and other != index
            and all(a <= b for a, b in zip(points[other], point, strict=True))
            and any(a < b for a, b in zip(points[other], point, strict=True))
            for other in range(len(points))
        )
        if not dominated:
            front.append(index)
    return front


def view_of(doc: Mapping[str, Any]) -> OptimizeView | BenchView | TuneView:
    """The typed view of a validated document, chosen by its kind."""
    kind = validate(doc)
    if kind == "optimize":
        return OptimizeView.from_doc(doc)
    if kind == "bench":
        return BenchView.from_doc(doc)
    return TuneView.from_doc(doc)
