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

import importlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from onnxopt.errors import BadInputError
from onnxopt.model_io import Model
from onnxopt.runtime import create_session, run_session

logger = logging.getLogger(__name__)

Outputs = list[dict[str, np.ndarray]]
ErrorFunction = Callable[[Outputs, Outputs], float]
ERROR_METRICS = ("rel_l2", "cosine", "max_abs")


def _rows(values: np.ndarray) -> np.ndarray:
    flat = np.asarray(values, dtype=np.float64)
    return flat.reshape(flat.shape[0], -1) if flat.ndim >= 2 else flat.reshape(1, -1)


def relative_l2(references: Outputs, candidates: Outputs) -> float:
    """Worst output's mean (over batches) of ||candidate - reference|| / ||reference||."""
    worst = 0.0
    for name in references[0]:
        values = []
        for ref, cand in zip(references, candidates, strict=True):
            r, c = np.asarray(ref[name], np.float64), np.asarray(cand[name], np.float64)
            values.append(float(np.linalg.norm(c - r) / max(np.linalg.norm(r), 1e-12)))
        worst = max(worst, float(np.mean(values)))
    return worst


def cosine_distance(references: Outputs, candidates: Outputs) -> float:
    """Worst output's mean over samples of 1 - cosine(candidate row, reference row)."""
    worst = 0.0
    for name in references[0]:
        distances = []
        for ref, cand in zip(references, candidates, strict=True):
            r, c = _rows(ref[name]), _rows(cand[name])
            dot = np.sum(r * c, axis=1)
            norms = np.linalg.norm(r, axis=1) * np.linalg.norm(c, axis=1)
            distances.extend((1.0 - np.where(norms > 0, dot / np.maximum(norms, 1e-30), 1.0)).tolist())
        worst = max(worst, float(np.mean(distances)))
    return worst


def max_abs(references: Outputs, candidates: Outputs) -> float:
    """The largest absolute difference over all outputs and batches."""
    worst = 0.0
    for ref, cand in zip(references, candidates, strict=True):
        for name in ref:
            diff = np.abs(np.asarray(cand[name], np.float64) - np.asarray(ref[name], np.float64))
            worst = max(worst, float(diff.max(initial=0.0)))
    return worst


_BUILTIN: dict[str, ErrorFunction] = {"rel_l2": relative_l2, "cosine": cosine_distance, "max_abs": max_abs}


def error_function(metric: str, user_metric: str = "") -> ErrorFunction:
    """A built-in metric by name, or a user's ``module:function`` (lower is better).

    The user function receives the reference outputs and the candidate outputs, each a
    list (one entry per batch) of {output name: array}, and returns one float.
    """
    if user_metric:
        module_name, sep, function_name = user_metric.partition(":")
        if not sep or not module_name or not function_name:
            raise BadInputError(f"metric {user_metric!r} must look like module:function")
        try:
            function = getattr(importlib.import_module(module_name), function_name)
        except (ImportError, AttributeError) as error:
            raise BadInputError(f"metric {user_metric!r} cannot be loaded: {error}") from None
        if not callable(function):
            raise BadInputError(f"metric {user_metric!r} is not callable")
        return function
    if metric not in _BUILTIN:
        raise BadInputError(f"unknown error metric {metric!r} (choose from {', '.join(ERROR_METRICS)})")
    return _BUILTIN[metric]


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
