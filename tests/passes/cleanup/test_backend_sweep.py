"""Every real model onnx ships (light/, pytorch-converted/, pytorch-operator/) through the
default pipeline: bit-identical to the original under onnxruntime (graph optimizations off),
within the fusions' declared tolerance where a fusion ran, and within the shipped reference
outputs' rtol/atol.

About a quarter of the pytorch cases use opset-1..6 forms (``Add`` with ``broadcast=1``,
``AveragePool-1``) that onnxruntime does not implement; for those both models run under
onnx's ReferenceEvaluator instead, with the same checks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from onnx.reference import ReferenceEvaluator

from onnxopt.api import optimize
from onnxopt.errors import BadInputError
from onnxopt.pass_api import Contract
from tests.backend_cases import BackendCase, all_cases
from tests.util import outputs

CASES = all_cases()


def run_model(path: Path, feed: dict[str, np.ndarray], use_reference: bool) -> list[np.ndarray]:
    if use_reference:
        return [np.asarray(v) for v in ReferenceEvaluator(str(path)).run(None, feed)]
    return list(outputs(path, feed).values())


def ort_can_run(case: BackendCase) -> bool:
    try:
        outputs(case.model, case.inputs[0])
    except BadInputError:
        return False
    return True


def test_the_sweep_covers_every_shipped_model() -> None:
    assert len([c for c in CASES if "/" not in c.name]) == 9
    assert len(CASES) >= 120


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_default_pipeline_is_exact_on_shipped_models(case: BackendCase, tmp_path: Path) -> None:
    target = tmp_path / "optimized.onnx"
    result = optimize(case.model, target)
    assert not result.report.failures, [r.reason for r in result.report.failures]
    fused = {r.name for r in result.report.records if r.status == "ok" and r.contract == Contract.TOLERANCE.value}
    use_reference = not ort_can_run(case)
    for feed, references in zip(case.inputs, case.references, strict=True):
        original = run_model(case.model, feed, use_reference)
        optimized = run_model(target, feed, use_reference)
        assert len(original) == len(optimized)
        for before, after, reference in zip(original, optimized, references, strict=True):
            assert after.dtype == before.dtype and after.shape == before.shape
            if fused:
                scale = max(float(np.max(np.abs(before))), 1e-30)
                assert float(np.max(np.abs(after.astype(np.float64) - before))) / scale <= 1e-5, fused
            else:
                np.testing.assert_array_equal(after, before)
            np.testing.assert_allclose(after, reference, rtol=case.rtol, atol=case.atol)
    assert result.output_bytes <= result.input_bytes * 1.01 + 4096, "cleanup must never bloat a model"
