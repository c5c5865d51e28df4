"""Output-error metrics shared by the passes' error budgets and by ``onnxopt tune``.

A metric compares the outputs of a reference model with those of a candidate on the same
feeds and returns one float, lower is better. Both sides are lists (one entry per batch)
of ``{output name: array}``. They live in the framework, not in a pass family, because
the quantization family's sensitivity fallback and the tuner must agree on what a budget
of "0.005 cosine" means: the tuner hands its budget to a pass's ``max_error`` option.

* ``rel_l2``: the worst output's mean (over batches) of ||candidate - reference|| / ||reference||;
* ``cosine``: the worst output's mean over samples of 1 - cosine(candidate row, reference row);
* ``max_abs``: the largest absolute difference over all outputs and batches;
* a user's ``module:function`` with the same signature.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

import numpy as np

from onnxopt.errors import BadInputError

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


def row_cosines(references: Outputs, candidates: Outputs, name: str) -> np.ndarray:
    """Cosine of every sample (row) of output ``name``, candidate against reference, over all batches."""
    cosines: list[float] = []
    for ref, cand in zip(references, candidates, strict=True):
        r, c = _rows(ref[name]), _rows(cand[name])
        dot = np.sum(r * c, axis=1)
        norms = np.linalg.norm(r, axis=1) * np.linalg.norm(c, axis=1)
        cosines.extend(np.where(norms > 0, dot / np.maximum(norms, 1e-30), 1.0).tolist())
    return np.asarray(cosines, dtype=np.float64)


def cosine_distance(references: Outputs, candidates: Outputs) -> float:
    """Worst output's mean over samples of 1 - cosine(candidate row, reference row)."""
    worst = 0.0
    for name in references[0]:
        worst = max(worst, float(np.mean(1.0 - row_cosines(references, candidates, name))))
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


def load_user_function(spec: str, what: str = "metric") -> Callable:
    """Import ``module:function``; a one-line BadInputError when it cannot be used."""
    module_name, sep, function_name = spec.partition(":")
    if not sep or not module_name or not function_name:
        raise BadInputError(f"{what} {spec!r} must look like module:function")
    try:
        function = getattr(importlib.import_module(module_name), function_name)
    except (ImportError, AttributeError) as error:
        raise BadInputError(f"{what} {spec!r} cannot be loaded: {error}") from None
    if not callable(function):
        raise BadInputError(f"{what} {spec!r} is not callable")
    return function


def error_function(metric: str, user_metric: str = "") -> ErrorFunction:
    """A built-in metric by name, or a user's ``module:function`` (lower is better).

    The user function receives the reference outputs and the candidate outputs, each a
    list (one entry per batch) of {output name: array}, and returns one float.
    """
    if user_metric:
        return load_user_function(user_metric)
    if metric not in _BUILTIN:
        raise BadInputError(f"unknown error metric {metric!r} (choose from {', '.join(ERROR_METRICS)})")
    return _BUILTIN[metric]
