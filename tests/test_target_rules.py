"""TensorRT placement of the qdq pass, and the Q/DQ lint behind ``onnxopt check --target``."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from onnxopt.cli.check import check
from onnxopt.errors import BadInputError
from onnxopt.model_io import save
from onnxopt.target_rules import check_model
from tests.passes.quantization.test_qdq import nodes_of, producer_op, relative_error, run_qdq, tensor_text, weights
from tests.util import model_from_text, outputs

RESIDUAL_TEXT = """
<ir_version: 8, opset_import: ["" : 17]>
residual (float[N, 4, 6, 6] image) => (float[N, 4, 6, 6] out)
<{w1}, {b1}, {w2}, {b2}, {w3}>
{{
    [conv1] c1 = Conv <pads = [1, 1, 1, 1]> (image, w1, b1)
    r1 = Relu(c1)
    [conv2] c2 = Conv <pads = [1, 1, 1, 1]> (r1, w2, b2)
    [add] s = Add(c2, r1)
    r2 = Relu(s)
    [conv3] out = Conv (r2, w3)
}}
""".format(w1=tensor_text("w1", weights(4, 4, 3, 3)), b1=tensor_text("b1", weights(4, scale=0.1)),
           w2=tensor_text("w2", weights(4, 4, 3, 3)), b2=tensor_text("b2", weights(4, scale=0.1)),
           w3=tensor_text("w3", weights(4, 4, 1, 1)))


def residual_feeds(count: int = 6) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(21)
    return [{"image": rng.standard_normal((1, 4, 6, 6)).astype(np.float32)} for _ in range(count)]


def test_tensorrt_placement_is_symmetric_and_quantizes_the_residual():
    model = model_from_text(RESIDUAL_TEXT)
    quantized, result = run_qdq(model, residual_feeds(), target="tensorrt")
    assert result.stats["activation_type"] == "int8" and result.stats["quantized_by_op"] == {"Conv": 3}
    for node in nodes_of(quantized, "QuantizeLinear") + nodes_of(quantized, "DequantizeLinear"):
        zero = node.inputs[2].values
        assert zero.dtype == np.int8 and not np.any(zero)
    add = next(node for node in quantized.graph.nodes if node.name == "add")
    # Conv2 output stays float (TensorRT fuses Conv + Add); the residual input comes through Q/DQ.
    assert producer_op(add.inputs[0]) == "Conv"
    assert producer_op(add.inputs[1]) == "DequantizeLinear"
    for conv in nodes_of(quantized, "Conv"):
        assert producer_op(conv.inputs[1]) == "DequantizeLinear"
        assert conv.inputs[1].inputs[0].attrs["axis"] == 0
        if len(conv.inputs) > 2:
            assert producer_op(conv.inputs[2]) is None  # float bias: TensorRT quantizes it itself
    assert producer_op(quantized.graph.outputs[0]) == "Conv"
    assert check_model(quantized, "tensorrt") == []
    feed = residual_feeds(1)[0]
    assert relative_error(outputs(model, feed)["out"], outputs(quantized, feed)["out"]) < 0.05


def test_check_flags_asymmetric_uint8_activations():
    model = model_from_text(RESIDUAL_TEXT)
    asymmetric, _ = run_qdq(model, residual_feeds(), target="tensorrt", activation_type="uint8")
    violations = check_model(asymmetric, "tensorrt")
    assert violations
    assert all(v.rule == "int8-only" for v in violations)
    assert any("asymmetric uint8" in str(v) for v in violations)
    # onnxruntime's defaults (uint8 activations, int32 biases) are fine for onnxruntime itself.
    ort_model, _ = run_qdq(model, residual_feeds())
    assert check_model(ort_model, "ort-cpu") == []
    rules = {v.rule for v in check_model(ort_model, "tensorrt")}
    assert rules == {"int8-only"}


def qdq_text(body: str, inits: str, inputs: str = "float[1, 4] x", outputs_: str = "float[1, 3] y",
             opset: int = 17) -> str:
    return f"""
<ir_version: 8, opset_import: ["" : {opset}]>
lint ({inputs}) => ({outputs_})
<{inits}>
{{
{body}
}}
"""


GOOD_INITS = ", ".join([
    "float s = {0.05}", "int8 z = {0}", "int8[4, 3] wq = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}",
    "float[3] ws = {0.1, 0.2, 0.3}", "int8[3] wz = {0, 0, 0}",
])
GOOD_BODY = """
    [q] xq = QuantizeLinear(x, s, z)
    [dq] xd = DequantizeLinear(xq, s, z)
    [wdq] wd = DequantizeLinear <axis = 1> (wq, ws, wz)
    [mm] y = MatMul(xd, wd)
"""


def test_clean_qdq_model_passes():
    assert check_model(model_from_text(qdq_text(GOOD_BODY, GOOD_INITS)), "tensorrt") == []


@pytest.mark.parametrize(("body", "inits", "rule", "words"), [
    (GOOD_BODY.replace("x, s, z", "x, s, uz").replace("xq, s, z", "xq, s, uz"), GOOD_INITS + ", uint8 uz = {128}",
     "int8-only", "asymmetric uint8"),
    (GOOD_BODY.replace("x, s, z", "x, s, nz").replace("xq, s, z", "xq, s, nz"), GOOD_INITS + ", int8 nz = {3}",
     "zero-point", "non-zero zero point"),
    (GOOD_BODY.replace("[wdq] wd = DequantizeLinear <axis = 1>", "[wdq] wd = DequantizeLinear <axis = 0>")
     .replace("ws, wz", "ws4, wz4"), GOOD_INITS + ", float[4] ws4 = {0.1, 0.1, 0.1, 0.1}, int8[4] wz4 = {0, 0, 0, 0}",
     "weight-axis", "axis 0"),
    (GOOD_BODY.replace("[dq] xd = DequantizeLinear(xq, s, z)", "[dq] xd = DequantizeLinear(xq, s2, z)"),
     GOOD_INITS + ", float s2 = {0.07}", "qdq-pair", "different scale"),
    (GOOD_BODY.replace("[q] xq = QuantizeLinear(x, s, z)", "sx = Identity(s)\n    [q] xq = QuantizeLinear(x, sx, z)"),
     GOOD_INITS, "constant-scale", "constants"),
    (GOOD_BODY.replace("float s", "float s"), GOOD_INITS.replace("float s = {0.05}", "float s = {-0.05}"),
     "scale-value", "positive"),
])
def test_each_rule_flags_its_violation(body, inits, rule, words):
    violations = check_model(model_from_text(qdq_text(body, inits)), "tensorrt")
    assert any(v.rule == rule and words in str(v) for v in violations), [str(v) for v in violations]


def test_outputs_per_channel_activations_and_operator_form_ops_are_flagged():
    body = """
    [q] xq = QuantizeLinear <axis = 1> (x, s4, z4)
    [dq] y = DequantizeLinear <axis = 1> (xq, s4, z4)
"""
    inits = "float[4] s4 = {0.1, 0.1, 0.1, 0.1}, int8[4] z4 = {0, 0, 0, 0}"
    violations = check_model(model_from_text(qdq_text(body, inits, outputs_="float[1, 4] y")), "tensorrt")
    assert {v.rule for v in violations} == {"activation-per-tensor", "output-qdq"}
    integer = """
    [mmi] y = MatMulInteger(xq, wq)
"""
    model = model_from_text(qdq_text(integer, "int8[4, 3] wq = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}",
                                     inputs="uint8[1, 4] xq", outputs_="int32[1, 3] y"))
    assert [v.rule for v in check_model(model, "tensorrt")] == ["quantized-op"]
    assert check_model(model, "ort-cpu") == []


def test_check_reads_paths_and_rejects_unknown_targets(tmp_path):
    path = tmp_path / "good.onnx"
    onnx.save(onnx.parser.parse_model(qdq_text(GOOD_BODY, GOOD_INITS)), str(path))
    assert check_model(str(path), "tensorrt") == []
    with pytest.raises(BadInputError, match="unknown target"):
        check_model(str(path), "tpu")
    with pytest.raises(BadInputError, match="no such file"):
        check_model(str(tmp_path / "missing.onnx"), "tensorrt")


def test_check_command_exit_codes(tmp_path):
    model = model_from_text(RESIDUAL_TEXT)
    good, _ = run_qdq(model, residual_feeds(), target="tensorrt")
    bad, _ = run_qdq(model, residual_feeds(), target="tensorrt", activation_type="uint8")
    save(good, tmp_path / "good.onnx")
    save(bad, tmp_path / "bad.onnx")
    runner = CliRunner()
    passed = runner.invoke(check, ["--target", "tensorrt", str(tmp_path / "good.onnx")])
    assert passed.exit_code == 0 and "no violation" in passed.output
    failed = runner.invoke(check, ["--target", "tensorrt", str(tmp_path / "bad.onnx")])
    assert failed.exit_code == 1
    lines = [line for line in failed.stdout.splitlines() if line]
    assert lines and all("[int8-only]" in line for line in lines)
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    broken = runner.invoke(check, ["--target", "tensorrt", str(tmp_path / "junk.onnx")])
    assert broken.exit_code == 2 and "error:" in broken.stderr
