"""Every lossy preset over the real models onnx ships: no pass fails or is rolled back, the
output loads in onnxruntime and its outputs are finite and keep their shapes and dtypes.

(The exact default pipeline is held to bit-identity in test_backend_sweep.py; fp16's
accuracy over these models is measured in bench/fp16_sweep.py and test_fp16_models.py.)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from onnxopt.api import optimize
from tests.backend_cases import BackendCase, folder_cases
from tests.passes.cleanup.test_backend_sweep import ort_can_run
from tests.util import outputs

CASES = [case for case in folder_cases("pytorch-converted") + folder_cases("pytorch-operator") if ort_can_run(case)]


@pytest.mark.parametrize("preset", ["int8", "int4", "fp16", "palettize"])
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_lossy_presets_never_break_a_shipped_model(case: BackendCase, preset: str, tmp_path: Path) -> None:
    target = tmp_path / "out.onnx"
    result = optimize(case.model, target, preset=preset, verify=True)
    assert not result.report.failures, [r.reason for r in result.report.failures]
    feed = case.inputs[0]
    before, after = outputs(case.model, feed), outputs(target, feed)
    for name, value in before.items():
        assert after[name].shape == value.shape and after[name].dtype == value.dtype, name
        if np.issubdtype(value.dtype, np.floating):
            assert np.all(np.isfinite(after[name]) | ~np.isfinite(value)), name
