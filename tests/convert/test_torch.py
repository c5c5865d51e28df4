"""PyTorch ``.pt2`` programs → ONNX through torch.onnx (dynamo); runs where the torch extra is installed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from tests.cli.test_cli import assert_one_line_error, invoke
from tests.convert.conftest import files_in

torch = pytest.importorskip("torch", reason="the torch extra (PyTorch) is not installed")
pytest.importorskip("onnxscript", reason="the torch extra (onnxscript, PyTorch's ONNX exporter) is not installed")


class SmallNet(torch.nn.Module):
    """Conv + BatchNorm + ReLU + pooling + Linear: the shapes of a real vision model's head and stem."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 8, 3, padding=1)
        self.norm = torch.nn.BatchNorm2d(8)
        self.head = torch.nn.Linear(8, 10)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.norm(self.conv(image))).mean(dim=(2, 3)))


def saved_program(path: Path) -> tuple[torch.nn.Module, Path]:
    torch.manual_seed(0)
    model = SmallNet().eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics, as after training
        model.norm.running_mean.uniform_(-0.5, 0.5)
        model.norm.running_var.uniform_(0.5, 2.0)
    batch = torch.export.Dim("batch", min=1, max=64)
    program = torch.export.export(model, (torch.rand(4, 1, 8, 8),), dynamic_shapes={"image": {0: batch}})
    torch.export.save(program, str(path))
    return model, path


def test_pt2_converts_with_its_own_signature_and_agrees(tmp_path: Path) -> None:
    model, source = saved_program(tmp_path / "net.pt2")
    result = invoke("convert", source, "-o", tmp_path / "net.onnx", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["framework"] == "pytorch" and summary["inputs"][0].startswith("image:float32:")
    assert "example input" in summary["agreement"]["inputs"]
    assert summary["agreement"]["max_rel_error"] < 1e-5
    proto = onnx.load(str(tmp_path / "net.onnx"))
    assert not proto.graph.input[0].type.tensor_type.shape.dim[0].HasField("dim_value"), "batch stays dynamic"
    images = np.random.default_rng(1).random((9, 1, 8, 8), dtype=np.float32)
    session = ort.InferenceSession(str(tmp_path / "net.onnx"), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {"image": images})
    with torch.no_grad():
        expected = model(torch.from_numpy(images)).numpy()
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)


def test_pt2_through_int8_and_ort_in_one_command(tmp_path: Path) -> None:
    model, source = saved_program(tmp_path / "net.pt2")
    calib = np.random.default_rng(2).random((32, 1, 8, 8), dtype=np.float32)
    np.savez(tmp_path / "calib.npz", image=calib)
    target = tmp_path / "net.ort"
    result = invoke("optimize", source, "--preset", "int8", "--calib", tmp_path / "calib.npz",
                    "--export", "ort", "-o", target)
    assert result.exit_code == 0, result.output
    assert "pytorch vs ONNX" in result.stdout and "bit-identical" in result.stdout
    assert (tmp_path / "net.required_operators_and_types.config").is_file()
    session = ort.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {"image": calib[:8]})
    with torch.no_grad():
        expected = model(torch.from_numpy(calib[:8])).numpy()
    scale = float(np.abs(expected).max())
    assert float(np.abs(logits - expected).max()) < 0.05 * scale, "int8 stays close to PyTorch"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == [], "no temporaries left"


def test_pt2_that_fails_to_load_is_bad_input(tmp_path: Path) -> None:
    source = tmp_path / "broken.pt2"
    source.write_bytes(b"PK\x03\x04 this is not a torch.export archive")
    for command in ("convert", "optimize"):
        assert_one_line_error(invoke(command, source, "-o", tmp_path / "out.onnx"), 2, "torch.export.load cannot load")
    assert files_in(tmp_path) == ["broken.pt2"]


def test_opset_below_the_exporters_minimum_is_refused(tmp_path: Path) -> None:
    _, source = saved_program(tmp_path / "net.pt2")
    assert_one_line_error(invoke("convert", source, "--opset", "13", "-o", tmp_path / "n.onnx"), 2,
                          "onnxopt export --opset 13")
    assert files_in(tmp_path) == ["net.pt2"]
