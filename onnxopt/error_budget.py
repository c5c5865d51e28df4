"""Error budgets on model outputs: the metrics, and dropping the most sensitive items until one holds.

Lossy passes (int8 quantization, pruning) share one way to judge a candidate model: run it
and the reference on the same feeds, compare outputs with a metric (``rel_l2``, ``cosine``,
``max_abs``, or a user's ``module:function``), and hold the result against a budget.

``sensitivity_fallback`` is the budget search both use. Given the items a pass would
change (layers to quantize, layers to prune), it first measures the model with all of them
changed. If that is over budget, each item is scored by the output error of a model in
which only that item changes (its contribution, free of interactions), and the most
sensitive items are dropped — the top k for the smallest k found by doubling then
bisecting — until the budget holds. The scores and the dropped items go into the pass's
stats so the report can list them.

Errors are measured with onnxruntime on the CPU with its graph optimizations off, on the
first few calibration batches: the same way the pass manager verifies a lossy pass.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from onnxopt.error_metrics import (  # noqa: F401  (re-exported: the metrics moved to the framework)
    ERROR_METRICS,
    ErrorFunction,
    Outputs,
    cosine_distance,
    error_function,
    max_abs,
    relative_l2,
)
from onnxopt.model_io import Model
from onnxopt.runtime import create_session, run_session

logger = logging.getLogger(__name__)


def run_outputs(model: Model, feeds: Sequence[dict[str, np.ndarray]]) -> Outputs:
    session = create_session(model)
    return [run_session(session, feed) for feed in feeds]


@dataclass
class FallbackResult:
    """Which items keep their change, which were dropped (back to the original), and the errors measured."""

    kept: list[str]
    fallback: list[str]
    error: float
    full_error: float
    scores: dict[str, float] = field(default_factory=dict)
    evaluations: int = 0


def sensitivity_fallback(
    build: Callable[[list[str]], Model],
    selected: Sequence[str],
    feeds: Sequence[dict[str, np.ndarray]],
    references: Outputs,
    error_of: ErrorFunction,
    budget: float,
) -> FallbackResult:
    """Drop the most sensitive items from ``selected`` until the output error <= ``budget``.

    ``build(items)`` returns the model with exactly ``items`` changed.
    """
    evaluations = 0

    def error_with(nodes: list[str]) -> float:
        nonlocal evaluations
        evaluations += 1
        if not nodes:
            return 0.0
        return float(error_of(references, run_outputs(build(nodes), feeds)))

    selected = list(selected)
    full_error = error_with(selected)
    if full_error <= budget:
        return FallbackResult(selected, [], full_error, full_error, evaluations=evaluations)
    scores = {name: error_with([name]) for name in selected}
    order = sorted(selected, key=lambda name: scores[name], reverse=True)

    def keep_after_dropping(count: int) -> list[str]:
        dropped = set(order[:count])
        return [name for name in selected if name not in dropped]

    errors: dict[int, float] = {0: full_error}

    def error_dropping(count: int) -> float:
        if count not in errors:
            errors[count] = error_with(keep_after_dropping(count))
        return errors[count]

    high = 1
    while high < len(order) and error_dropping(high) > budget:
        high *= 2
    high = min(high, len(order))
    if error_dropping(high) > budget:
        high = len(order)
    low = high // 2  # error_dropping(low) > budget was observed (or low == 0)
    while high - low > 1:
        middle = (low + high) // 2
        if error_dropping(middle) <= budget:
            high = middle
        else:
            low = middle
    final = keep_after_dropping(high)
    logger.info("sensitivity fallback: %d of %d items dropped (error %.3g -> %.3g, budget %.3g)",
                high, len(order), full_error, error_dropping(high), budget)
    return FallbackResult(final, order[:high], error_dropping(high), full_error, scores, evaluations)
