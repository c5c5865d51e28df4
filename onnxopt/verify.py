"""Numerical comparison of two models' outputs, judged against a pass's contract.

``exact`` means bit-identical (NaN equal to NaN); ``tolerance`` means the largest absolute
difference stays within ``tolerance_rel`` times the largest reference magnitude of that
output; ``lossy`` passes are measured (max error, cosine) and judged by their own budget.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from onnxopt.pass_api import Contract


@dataclass
class OutputError:
    """Differences between a reference output and a candidate output."""

    name: str
    max_abs: float
    max_rel: float
    cosine: float
    identical: bool
    shape_match: bool
    nonfinite: int

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "max_abs_error": self.max_abs,
            "max_rel_error": self.max_rel,
            "cosine": self.cosine,
            "identical": self.identical,
            "nonfinite_values": self.nonfinite,
        }


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a64 = a.astype(np.float64).ravel()
    b64 = b.astype(np.float64).ravel()
    norm = np.linalg.norm(a64) * np.linalg.norm(b64)
    if norm == 0.0:
        return 1.0 if np.array_equal(a64, b64) else 0.0
    return float(np.dot(a64, b64) / norm)


def output_error(name: str, reference: np.ndarray, candidate: np.ndarray) -> OutputError:
    """Errors of one output; non-numeric outputs are only compared for equality."""
    reference = np.asarray(reference)
    candidate = np.asarray(candidate)
    if reference.shape != candidate.shape:
        return OutputError(name, float("inf"), float("inf"), 0.0, False, False, 0)
    numeric = np.issubdtype(reference.dtype, np.number) and np.issubdtype(candidate.dtype, np.number)
    if not numeric:
        same = bool(np.array_equal(reference, candidate))
        return OutputError(
            name,
            0.0 if same else float("inf"),
            0.0 if same else float("inf"),
            1.0 if same else 0.0,
            same and reference.dtype == candidate.dtype,
            True,
            0,
        )
    floating = np.issubdtype(reference.dtype, np.floating)
    identical = reference.dtype == candidate.dtype and bool(np.array_equal(reference, candidate, equal_nan=floating))
    if reference.size == 0:
        return OutputError(name, 0.0, 0.0, 1.0, identical, True, 0)
    ref64 = reference.astype(np.float64)
    cand64 = candidate.astype(np.float64)
    nonfinite = int(np.count_nonzero(~np.isfinite(cand64)) - np.count_nonzero(~np.isfinite(ref64)))
    both_finite = np.isfinite(ref64) & np.isfinite(cand64)
    same_nonfinite = (
        (~np.isfinite(ref64)) & (~np.isfinite(cand64)) & ((ref64 == cand64) | (np.isnan(ref64) & np.isnan(cand64)))
    )
    if not np.all(both_finite | same_nonfinite):
        return OutputError(name, float("inf"), float("inf"), 0.0, identical, True, max(nonfinite, 1))
    diff = np.abs(ref64[both_finite] - cand64[both_finite])
    scale = float(np.max(np.abs(ref64[both_finite]))) if diff.size else 0.0
    max_abs = float(diff.max()) if diff.size else 0.0
    max_rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else float("inf"))
    return OutputError(name, max_abs, max_rel, _cosine(ref64[both_finite], cand64[both_finite]), identical, True, 0)


@dataclass
class Comparison:
    """Errors of every output over every compared feed (worst case per output)."""

    outputs: list[OutputError]

    @property
    def max_abs(self) -> float:
        return max((o.max_abs for o in self.outputs), default=0.0)

    @property
    def max_rel(self) -> float:
        return max((o.max_rel for o in self.outputs), default=0.0)

    @property
    def min_cosine(self) -> float:
        return min((o.cosine for o in self.outputs), default=1.0)

    @property
    def identical(self) -> bool:
        return all(o.identical for o in self.outputs)

    def meets(self, contract: Contract, tolerance_rel: float) -> tuple[bool, str]:
        """Whether the comparison satisfies a contract, and why not."""
        if any(not o.shape_match for o in self.outputs):
            return False, "output shapes differ"
        if contract is Contract.EXACT:
            if self.identical:
                return True, ""
            worst = max(self.outputs, key=lambda o: o.max_abs)
            return False, f"output {worst.name!r} not bit-identical (max abs error {worst.max_abs:.3g})"
        if contract is Contract.TOLERANCE:
            worst = max(self.outputs, key=lambda o: o.max_rel)
            if worst.max_rel <= tolerance_rel:
                return True, ""
            return False, f"output {worst.name!r} relative error {worst.max_rel:.3g} > {tolerance_rel:g}"
        nonfinite = [o.name for o in self.outputs if o.nonfinite > 0]
        if nonfinite:
            return False, f"output(s) {', '.join(nonfinite)} contain NaN/Inf the original does not"
        return True, ""

    def as_dict(self) -> dict[str, object]:
        return {
            "max_abs_error": self.max_abs,
            "max_rel_error": self.max_rel,
            "min_cosine": self.min_cosine,
            "identical": self.identical,
            "outputs": [o.as_dict() for o in self.outputs],
        }


def compare_runs(
    references: Iterable[dict[str, np.ndarray]], candidates: Iterable[dict[str, np.ndarray]]
) -> Comparison:
    """Worst-case errors per output name over paired runs."""
    worst: dict[str, OutputError] = {}
    for reference, candidate in zip(references, candidates, strict=True):
        missing = set(reference) - set(candidate)
        if missing:
            for name in missing:
                worst[name] = OutputError(name, float("inf"), float("inf"), 0.0, False, False, 0)
        for name in reference:
            if name not in candidate:
                continue
            error = output_error(name, reference[name], candidate[name])
            previous = worst.get(name)
            if previous is None:
                worst[name] = error
            else:
                worst[name] = OutputError(
                    name,
                    max(previous.max_abs, error.max_abs),
                    max(previous.max_rel, error.max_rel),
                    min(previous.cosine, error.cosine),
                    previous.identical and error.identical,
                    previous.shape_match and error.shape_match,
                    max(previous.nonfinite, error.nonfinite),
                )
    return Comparison(list(worst.values()))
