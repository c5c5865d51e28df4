"""The real models onnx ships with inputs and reference outputs (onnx/backend/test/data)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnx.numpy_helper

from tests.util import BACKEND_DATA

LIGHT_RTOL, LIGHT_ATOL = 1e-3, 1e-7  # the defaults of onnx's own backend test runner


@dataclass
class BackendCase:
    name: str
    model: Path
    inputs: list[dict[str, np.ndarray]]
    references: list[list[np.ndarray]]
    rtol: float = LIGHT_RTOL
    atol: float = LIGHT_ATOL


def _read_tensor(path: Path) -> np.ndarray:
    tensor = onnx.TensorProto()
    tensor.ParseFromString(path.read_bytes())
    return onnx.numpy_helper.to_array(tensor)


def _real_input_names(model_path: Path) -> list[str]:
    proto = onnx.load(str(model_path), load_external_data=False)
    initializers = {init.name for init in proto.graph.initializer}
    return [value.name for value in proto.graph.input if value.name not in initializers]


def _light_input(model_path: Path) -> dict[str, np.ndarray]:
    # onnx's runner feeds light models arange(n)/n in the declared shape (see generate_dummy_data).
    proto = onnx.load(str(model_path), load_external_data=False)
    initializers = {init.name for init in proto.graph.initializer}
    feed = {}
    for value in proto.graph.input:
        if value.name in initializers:
            continue
        shape = tuple(d.dim_value if d.HasField("dim_value") else 1 for d in value.type.tensor_type.shape.dim)
        count = int(np.prod(shape))
        feed[value.name] = (np.arange(count).reshape(shape) / count).astype(np.float32)
    return feed


def light_cases() -> list[BackendCase]:
    cases = []
    for model in sorted((BACKEND_DATA / "light").glob("*.onnx")):
        reference = model.with_name(model.stem + "_output_0.pb")
        cases.append(BackendCase(model.stem, model, [_light_input(model)], [[_read_tensor(reference)]]))
    return cases


def folder_cases(kind: str) -> list[BackendCase]:
    cases = []
    for folder in sorted((BACKEND_DATA / kind).iterdir()):
        model = folder / "model.onnx"
        if not model.exists():
            continue
        names = _real_input_names(model)
        inputs, references = [], []
        for data_set in sorted(folder.glob("test_data_set_*")):
            values = [
                _read_tensor(p) for p in sorted(data_set.glob("input_*.pb"), key=lambda p: int(p.stem.split("_")[1]))
            ]
            outputs = [
                _read_tensor(p) for p in sorted(data_set.glob("output_*.pb"), key=lambda p: int(p.stem.split("_")[1]))
            ]
            inputs.append(dict(zip(names, values, strict=True)))
            references.append(outputs)
        cases.append(BackendCase(f"{kind}/{folder.name}", model, inputs, references))
    return cases


def all_cases() -> list[BackendCase]:
    return light_cases() + folder_cases("pytorch-converted") + folder_cases("pytorch-operator")
