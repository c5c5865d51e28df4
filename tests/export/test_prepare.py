"""Fixed shapes and opset/IR down-conversion for older or static-shape runtimes (``--format onnx``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx

from onnxopt.examples import EXAMPLE_INPUTS, EXAMPLE_MODEL
from onnxopt.export.prepare import default_opset
from tests.cli.test_cli import assert_one_line_error, invoke
from tests.util import assert_bit_exact, outputs


def dims(model: onnx.ModelProto) -> list[object]:
    return [d.dim_value or d.dim_param for d in model.graph.input[0].type.tensor_type.shape.dim]


def test_fix_shape_makes_the_input_static_and_propagates(tmp_path: Path) -> None:
    target = tmp_path / "fixed.onnx"
    before = EXAMPLE_MODEL.read_bytes()
    result = invoke("export", EXAMPLE_MODEL, "--format", "onnx", "--fix-shape", "input=4,1,8,8", "-o", target,
                    "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["check"]["identical"]
    model = onnx.load(str(target))
    assert dims(model) == [4, 1, 8, 8]
    assert [d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim] == [4, 10]
    feed = {"input": np.load(EXAMPLE_INPUTS)["input"][:4]}
    assert_bit_exact(outputs(EXAMPLE_MODEL, feed), outputs(target, feed))
    assert EXAMPLE_MODEL.read_bytes() == before, "the input is never modified"


def test_opset_down_conversion_keeps_outputs(tmp_path: Path) -> None:
    source_opset = default_opset(onnx.load(str(EXAMPLE_MODEL)))
    target = tmp_path / "old.onnx"
    result = invoke("export", EXAMPLE_MODEL, "--format", "onnx", "--opset", "14", "-o", target, "--json")
    assert result.exit_code == 0, result.output
    assert f"opset {source_opset} -> 14" in json.loads(result.stdout)["changes"]
    model = onnx.load(str(target))
    assert default_opset(model) == 14 and model.ir_version == 7, "the lowest IR that opset 14 allows"
    feed = {"input": np.load(EXAMPLE_INPUTS)["input"][:16]}
    assert_bit_exact(outputs(EXAMPLE_MODEL, feed), outputs(target, feed))


def test_impossible_requests_are_refused_in_one_line(tmp_path: Path) -> None:
    cases = [
        (["--fix-shape", "input=4,1,8"], "rank 3"),
        (["--fix-shape", "pixels=1,1,8,8"], "unknown input"),
        (["--fix-shape", "input=4,3,8,8"], "dim 1 is 1 in the model"),
        (["--ir-version", "3"], "need IR"),
        # onnx's version converter has no Relu-14 → 13 adapter: said in one line, not a traceback.
        (["--opset", "13"], "No Adapter From Version $14 for Relu"),
    ]
    for options, fragment in cases:
        result = invoke("export", EXAMPLE_MODEL, "--format", "onnx", *options, "-o", tmp_path / "x.onnx")
        assert_one_line_error(result, 2, fragment)
    assert list(tmp_path.iterdir()) == []
