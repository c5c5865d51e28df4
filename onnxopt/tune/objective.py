"""What the search optimizes and what it must not break: fidelity metric, objective, budgets.

Fidelity is measured against the original model on the user's DATA, each trial:

* ``cosine``  — error = mean over samples of 1 − cosine(candidate, original), worst output
  (the same definition the ``qdq`` pass's ``max_error`` uses, so the budget can be handed
  down); the metric shown is the mean cosine, and the worst sample's cosine is recorded;
* ``rel_l2``, ``max_abs`` — errors as in ``onnxopt.error_metrics``;
* ``accuracy`` — top-1 of the first output against ``labels`` in DATA; error = the
  original's accuracy minus the candidate's (0.005 = half a point);
* ``python:module:function`` — the user's ``f(references, candidates) -> error``.

Feasible = the trial ran, its error is within ``--max-error`` (or its metric reaches
``--min-metric``) and it meets the hard budgets (``--max-latency-ms``, ``--max-size-mb``).

Choosing under noise: latency and memory are noisy, size is not. Among feasible trials
the best is picked from the *band* of those within ``margin`` (default 5%) of the lowest
objective value, by deterministic tie-breaks (lower error, smaller file, fewer passes and
options — the simpler configuration — then the configuration key). Ratios inside the band
are treated as equal, so timing noise smaller than the margin cannot change which
configuration wins unless two candidates sit right at the band's edge; ``rank`` repeats
the rule to order all feasible trials.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from onnxopt.error_metrics import ERROR_METRICS, error_function, load_user_function, row_cosines
from onnxopt.errors import BadInputError

OBJECTIVES = ("latency", "size", "memory")
METRICS = (*ERROR_METRICS, "accuracy")
# Noise margin of objectives measured by timing or by RSS; size is exact.
DEFAULT_MARGIN = 0.05
LABEL_NAMES = ("labels", "label")


@dataclass(frozen=True)
class Budget:
    """The user's fidelity metric and budget, the objective, and the hard budgets."""

    metric: str = "cosine"
    max_error: float | None = None
    min_metric: float | None = None
    objective: str = "latency"
    max_latency_ms: float | None = None
    max_size_mb: float | None = None
    margin: float = DEFAULT_MARGIN

    def validate(self) -> None:
        if self.metric not in METRICS and not self.metric.startswith("python:"):
            raise BadInputError(f"unknown metric {self.metric!r} (choose from {', '.join(METRICS)}, "
                                "or python:module:function)")
        if self.metric.startswith("python:"):
            load_user_function(self.metric.removeprefix("python:"))
        if self.objective not in OBJECTIVES:
            raise BadInputError(f"unknown objective {self.objective!r} (choose from {', '.join(OBJECTIVES)})")
        if self.max_error is None and self.min_metric is None:
            raise BadInputError("give a fidelity budget: --max-error or --min-metric")
        if self.max_error is not None and self.min_metric is not None:
            raise BadInputError("give --max-error or --min-metric, not both")
        if self.min_metric is not None and self.metric not in ("cosine", "accuracy"):
            raise BadInputError(f"--min-metric applies to cosine and accuracy; {self.metric} is an error "
                                "(lower is better): use --max-error")
        if self.max_error is not None and (self.max_error < 0 or not math.isfinite(self.max_error)):
            raise BadInputError("--max-error must be a finite number >= 0")
        for name, value in (("--max-latency-ms", self.max_latency_ms), ("--max-size-mb", self.max_size_mb)):
            if value is not None and value <= 0:
                raise BadInputError(f"{name} must be positive")
        if not 0 <= self.margin < 1:
            raise BadInputError("the noise margin must be in [0, 1)")

    def error_budget(self) -> float | None:
        """The budget in the metric's error units, for passes that take one (None for accuracy floors)."""
        if self.max_error is not None:
            return self.max_error
        if self.metric == "cosine" and self.min_metric is not None:
            return 1.0 - self.min_metric
        return None

    def violations(self, record: dict[str, Any]) -> list[str]:
        """Why a finished trial is not acceptable (empty when it is)."""
        if record.get("status") != "ok":
            return [f"status {record.get('status')}"]
        found = []
        error, metric = record.get("error"), record.get("metric_value")
        if self.max_error is not None and (error is None or not error <= self.max_error + 1e-12):
            found.append(f"error {_fmt(error)} > {self.max_error:g}")
        if self.min_metric is not None and (metric is None or not metric >= self.min_metric - 1e-12):
            found.append(f"{self.metric} {_fmt(metric)} < {self.min_metric:g}")
        latency = record.get("latency_ms")
        if self.max_latency_ms is not None and (latency is None or latency > self.max_latency_ms):
            found.append(f"latency {_fmt(latency)} ms > {self.max_latency_ms:g} ms")
        size = record.get("size_bytes")
        if self.max_size_mb is not None and (size is None or size > self.max_size_mb * 1e6):
            found.append(f"size {_fmt(size / 1e6 if size else None)} MB > {self.max_size_mb:g} MB")
        return found

    def objective_value(self, record: dict[str, Any]) -> float | None:
        """Lower is better: latency ratio to the original, file bytes, or the session's peak RSS."""
        if self.objective == "latency":
            return record.get("latency_ratio")
        if self.objective == "size":
            return record.get("size_bytes")
        return record.get("session_peak_rss_bytes")

    def noisy(self) -> bool:
        return self.objective in ("latency", "memory")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.4g}"


def complexity(record: dict[str, Any]) -> int:
    """Passes plus non-default options of a trial's configuration: among equals, the simpler wins."""
    return sum(1 + len(step.get("options") or {}) for step in record.get("config") or [])


def _tiebreak(record: dict[str, Any], budget: Budget) -> tuple:
    error = record.get("error")
    size = record.get("size_bytes")
    return (error if error is not None else math.inf, size if size is not None else math.inf, complexity(record),
            record["key"])


def feasible(records: Sequence[dict[str, Any]], budget: Budget) -> list[dict[str, Any]]:
    return [r for r in records if not budget.violations(r) and budget.objective_value(r) is not None]


def rank(records: Sequence[dict[str, Any]], budget: Budget) -> list[dict[str, Any]]:
    """Feasible trials best first: repeatedly the tie-break winner of the band near the lowest value."""
    remaining = sorted(feasible(records, budget), key=lambda r: _tiebreak(r, budget))
    margin = budget.margin if budget.noisy() else 0.0
    ordered = []
    while remaining:
        lowest = min(budget.objective_value(r) for r in remaining)
        band = [r for r in remaining if budget.objective_value(r) <= lowest * (1 + margin) + 1e-15]
        pick = band[0]  # remaining is sorted by the tie-break key
        ordered.append(pick)
        remaining.remove(pick)
    return ordered


def best(records: Sequence[dict[str, Any]], budget: Budget) -> dict[str, Any] | None:
    ordered = rank(records, budget)
    return ordered[0] if ordered else None


def pareto_front(records: Sequence[dict[str, Any]], budget: Budget) -> list[dict[str, Any]]:
    """Trials no other trial beats on both the objective and the error (hard budgets honoured)."""
    points = []
    for record in records:
        if record.get("status") != "ok" or record.get("error") is None:
            continue
        value = budget.objective_value(record)
        hard = [v for v in budget.violations(record) if v.startswith(("latency", "size"))]
        if value is None or hard:
            continue
        points.append((value, record["error"], record))
    front = []
    for value, error, record in points:
        dominated = any(v <= value and e <= error and (v < value or e < error) for v, e, _ in points)
        if not dominated:
            front.append(record)
    return sorted(front, key=lambda r: (budget.objective_value(r), r["error"], r["key"]))


# --- measuring fidelity (runs in the trial) ---------------------------------------------


def labels_for(arrays: dict[str, np.ndarray]) -> np.ndarray | None:
    for name in LABEL_NAMES:
        if name in arrays:
            return np.asarray(arrays[name]).reshape(-1)
    return None


def _accuracy(outputs: list[dict[str, np.ndarray]], labels: np.ndarray) -> float:
    first = next(iter(outputs[0]))
    predictions = np.concatenate([np.argmax(np.asarray(batch[first]).reshape(len(batch[first]), -1), axis=1)
                                  for batch in outputs])
    if len(predictions) != len(labels):
        raise BadInputError(f"accuracy: {len(predictions)} predictions but {len(labels)} labels in DATA")
    return float(np.mean(predictions == labels))


def measure_fidelity(metric: str, references: list[dict[str, np.ndarray]], candidates: list[dict[str, np.ndarray]],
                     labels: np.ndarray | None) -> dict[str, float]:
    """``error`` (lower is better), ``metric_value`` (what the user reads), and metric-specific extras."""
    if metric == "accuracy":
        if labels is None:
            raise BadInputError("--metric accuracy needs an array 'labels' in DATA")
        reference, candidate = _accuracy(references, labels), _accuracy(candidates, labels)
        return {"error": reference - candidate, "metric_value": candidate, "reference_metric": reference}
    if metric.startswith("python:"):
        function = load_user_function(metric.removeprefix("python:"))
        error = float(function(references, candidates))
        return {"error": error, "metric_value": error}
    error = float(error_function(metric)(references, candidates))
    if metric == "cosine":
        worst = min(float(row_cosines(references, candidates, name).min()) for name in references[0])
        return {"error": error, "metric_value": 1.0 - error, "min_cosine": worst}
    return {"error": error, "metric_value": error}
