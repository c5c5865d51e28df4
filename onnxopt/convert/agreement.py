"""Does the ONNX model compute what the framework model computes? Measured before anything is written.

Converters are where silent errors enter a deployment pipeline (a dropped op attribute,
a float64 pipeline run in float32, a wrong layout), and nothing later can detect them:
the optimizer verifies against the converted model, not the original. So every
conversion runs the framework model and the ONNX model (onnxruntime, CPU, graph
optimizations off) on the same feeds — the source's example inputs, the user's DATA, or
random inputs — and judges: integer, boolean and string outputs (class labels) must be
equal element for element; float outputs must stay within ``rtol`` of the largest
reference magnitude (onnxopt's ``tolerance`` contract). The report shows the errors.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx

from onnxopt.convert.source import LoadedSource, Outputs
from onnxopt.errors import BadInputError
from onnxopt.runtime import create_session, run_session
from onnxopt.verify import Comparison, compare_runs

logger = logging.getLogger(__name__)

DEFAULT_RTOL = 1e-4


@dataclass
class Agreement:
    """Framework-vs-ONNX errors over the compared feeds, and the verdict."""

    comparison: Comparison
    feeds: int
    feed_source: str
    rtol: float
    mismatched: dict[str, int] = field(default_factory=dict)  # exact outputs: elements that differ
    reason: str = ""

    @property
    def passed(self) -> bool:
        return not self.reason

    def as_dict(self) -> dict[str, Any]:
        return {
            "feeds": self.feeds,
            "inputs": self.feed_source,
            "rtol": self.rtol,
            "passed": self.passed,
            "reason": self.reason,
            "mismatched_elements": self.mismatched,
            **self.comparison.as_dict(),
        }


def _named(outputs: Outputs, names: list[str]) -> dict[str, np.ndarray]:
    """Framework outputs keyed by the ONNX output names (by name where they match, else by position)."""
    if isinstance(outputs, dict):
        if set(names) <= set(outputs):
            return {name: np.asarray(outputs[name]) for name in names}
        outputs = list(outputs.values())
    if len(outputs) != len(names):
        raise BadInputError(f"the framework model returned {len(outputs)} output(s), the ONNX model {len(names)}")
    return {name: np.asarray(value) for name, value in zip(names, outputs, strict=True)}


def _exact_kind(array: np.ndarray) -> bool:
    return not np.issubdtype(array.dtype, np.floating) and not np.issubdtype(array.dtype, np.complexfloating)


def check_agreement(
    source: LoadedSource,
    proto: onnx.ModelProto,
    feeds: Iterable[dict[str, np.ndarray]],
    feed_source: str,
    rtol: float = DEFAULT_RTOL,
) -> Agreement:
    """Run both models on every feed; worst-case errors per output and whether they are acceptable."""
    session = create_session(proto)
    names = [output.name for output in session.get_outputs()]
    input_names = {value.name for value in session.get_inputs()}
    references: list[dict[str, np.ndarray]] = []
    candidates: list[dict[str, np.ndarray]] = []
    mismatched: dict[str, int] = {}
    for feed in feeds:
        missing = input_names - set(feed)
        if missing:
            raise BadInputError(f"feed lacks input(s) {', '.join(sorted(missing))} of the converted model")
        candidate = run_session(session, {name: feed[name] for name in input_names})
        reference = _named(source.reference(feed), names)
        for name in names:
            ref, cand = reference[name], candidate[name]
            if _exact_kind(ref) and ref.shape == cand.shape:
                equal = np.asarray(ref == cand)
                mismatched[name] = mismatched.get(name, 0) + int(equal.size - np.count_nonzero(equal))
        references.append(reference)
        candidates.append(candidate)
    if not references:
        raise BadInputError("no feeds to check the conversion on")
    comparison = compare_runs(references, candidates)
    agreement = Agreement(comparison, len(references), feed_source, rtol, mismatched)
    agreement.reason = _verdict(comparison, mismatched, rtol)
    logger.info("framework vs ONNX on %d feed(s): max abs %.3g, max rel %.3g",
                agreement.feeds, comparison.max_abs, comparison.max_rel)
    return agreement


def _verdict(comparison: Comparison, mismatched: dict[str, int], rtol: float) -> str:
    for output in comparison.outputs:
        if not output.shape_match:
            return f"output {output.name!r}: shapes differ between the framework and ONNX"
        if output.nonfinite:
            return f"output {output.name!r}: ONNX gives NaN/Inf where the framework does not"
        if output.name in mismatched:
            if mismatched[output.name]:
                return f"output {output.name!r}: {mismatched[output.name]} element(s) differ (exact output)"
        elif output.max_rel > rtol:
            return f"output {output.name!r}: relative error {output.max_rel:.3g} exceeds {rtol:g}"
    return ""
