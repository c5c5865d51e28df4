"""The qdq pass, static mode: placement, weights/bias encoding, sentinels, exclusions, errors."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.parser
import onnx_graphsurgeon as gs
import pytest

from onnxopt.data import Feeds, InputSpec
from onnxopt.errors import BadInputError
from onnxopt.model_io import Model, from_proto, read_constant
from onnxopt.pass_api import PassContext
from onnxopt.passes.quantization.qdq import QdqPass
from tests.util import model_from_text, op_types, outputs

RNG = np.random.default_rng(0)


def tensor_text(name: str, values: np.ndarray) -> str:
    """An initializer in ONNX text syntax: ``float[2,3] name = {...}``."""
    dims = ",".join(str(d) for d in values.shape)
    numbers = ", ".join(f"{v:.6g}" for v in values.reshape(-1).tolist())
    return f"float[{dims}] {name} = {{{numbers}}}"


def weights(*shape: int, scale: float = 0.3) -> np.ndarray:
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


CNN_TEXT = """
<ir_version: 8, opset_import: ["" : 17]>
cnn (float[N, 2, 6, 6] image) => (float[N, 3] logits)
<{w1}, {b1}, {w2}, {b2}, {fc}, {fcb}>
{{
    c1 = Conv <pads = [1, 1, 1, 1]> (image, w1, b1)
    r1 = Relu(c1)
    p1 = MaxPool <kernel_shape = [2, 2], strides = [2, 2]> (r1)
    c2 = Conv <pads = [1, 1, 1, 1]> (p1, w2, b2)
    r2 = Relu(c2)
    g = GlobalAveragePool(r2)
    f = Flatten(g)
    logits = Gemm <transB = 1> (f, fc, fcb)
}}
""".format(
    w1=tensor_text("w1", weights(4, 2, 3, 3)), b1=tensor_text("b1", weights(4, scale=0.1)),
    w2=tensor_text("w2", weights(5, 4, 3, 3)), b2=tensor_text("b2", weights(5, scale=0.1)),
    fc=tensor_text("fc", weights(3, 5)), fcb=tensor_text("fcb", weights(3, scale=0.1)),
)


def cnn_feeds(count: int = 8, seed: int = 1) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"image": rng.random((2, 2, 6, 6)).astype(np.float32)} for _ in range(count)]


def run_qdq(model: Model, feeds, **options) -> tuple[Model, object]:
    work = model.copy()
    options.setdefault("only_if_faster", False)  # structure tests must not depend on timing
    result = QdqPass(QdqPass.make_options(options)).run(work, PassContext(data=feeds))
    return work, result


def nodes_of(model: Model, op: str) -> list[gs.Node]:
    return [node for node in model.graph.nodes if node.op == op]


def producer_op(tensor: gs.Tensor) -> str | None:
    return tensor.inputs[0].op if tensor.inputs else None


def relative_error(expected: np.ndarray, actual: np.ndarray) -> float:
    return float(np.linalg.norm(actual - expected) / np.linalg.norm(expected))


def test_static_cnn_structure_and_accuracy():
    model = model_from_text(CNN_TEXT)
    quantized, result = run_qdq(model, cnn_feeds(), method="minmax")
    assert result.modified
    assert result.stats["quantized_by_op"] == {"Conv": 2, "Gemm": 1}
    by_op = {node.op: node for node in quantized.graph.nodes if node.op in ("Conv", "Gemm")}
    convs = nodes_of(quantized, "Conv")
    for conv in convs:
        # Activation and weight and bias all come through DequantizeLinear.
        assert [producer_op(t) for t in conv.inputs] == ["DequantizeLinear"] * 3
        weight_dq = conv.inputs[1].inputs[0]
        assert weight_dq.attrs["axis"] == 0
        assert read_constant(weight_dq.inputs[0]).dtype == np.int8
        assert weight_dq.inputs[1].values.shape == (conv.inputs[1].shape[0],)
        bias_dq = conv.inputs[2].inputs[0]
        assert read_constant(bias_dq.inputs[0]).dtype == np.int32
        # Bias scale = input scale x weight scale, per output channel.
        input_scale = conv.inputs[0].inputs[0].inputs[1].values
        np.testing.assert_allclose(bias_dq.inputs[1].values, input_scale * weight_dq.inputs[1].values, rtol=1e-6)
    gemm_weight_dq = by_op["Gemm"].inputs[1].inputs[0]
    assert gemm_weight_dq.attrs["axis"] == 0  # transB = 1: output channels on axis 0
    # Shared scale through MaxPool: the Q before it and the Q after it use the same scale.
    pool = nodes_of(quantized, "MaxPool")[0]
    before_scale = pool.inputs[0].inputs[0].inputs[1].values
    after_q = next(n for n in pool.outputs[0].outputs if n.op == "QuantizeLinear")
    assert float(before_scale) == float(after_q.inputs[1].values)
    # The first Conv's Relu output is quantized right after the Relu (onnxruntime folds the Relu).
    assert producer_op(pool.inputs[0]) == "DequantizeLinear"
    assert nodes_of(quantized, "Relu")[0].outputs[0].outputs[0].op == "QuantizeLinear"
    # Never on graph outputs.
    assert producer_op(quantized.graph.outputs[0]) == "Gemm"
    # Asymmetric uint8 activations by default on ort-cpu.
    for q in nodes_of(quantized, "QuantizeLinear"):
        assert q.inputs[2].values.dtype == np.uint8
    feed = cnn_feeds(1, seed=9)[0]
    expected = outputs(model, feed)["logits"]
    actual = outputs(quantized, feed)["logits"]
    error = relative_error(expected, actual)
    assert 0 < error < 0.05


def test_static_is_skipped_on_an_already_quantized_model():
    model = model_from_text(CNN_TEXT)
    quantized, _ = run_qdq(model, cnn_feeds())
    again, result = run_qdq(quantized, cnn_feeds())
    assert not result.modified
    assert "already" in result.notes[0]
    assert op_types(again) == op_types(quantized)


MATMUL_TEXT = """
<ir_version: 8, opset_import: ["" : 17]>
mlp (float[N, 6] x) => (float[N, 4] y)
<{w1}, {w2}, {wt}>
{{
    [first] h = MatMul(x, w1)
    a = Relu(h)
    t = Transpose <perm = [1, 0]> (a)
    u = Transpose <perm = [1, 0]> (t)
    [second] y0 = MatMul(u, w2)
    [last] y = Gemm <transB = 0> (y0, wt)
}}
""".format(w1=tensor_text("w1", weights(6, 8)), w2=tensor_text("w2", weights(8, 4)),
           wt=tensor_text("wt", weights(4, 4)))


def mlp_feeds(count: int = 6, seed: int = 2) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal((3, 6)).astype(np.float32)} for _ in range(count)]


def test_matmul_weight_axis_and_shared_scale_through_data_movement():
    model = model_from_text(MATMUL_TEXT)
    quantized, result = run_qdq(model, mlp_feeds(), smooth_alpha=0.0)
    assert result.stats["quantized_by_op"] == {"MatMul": 2, "Gemm": 1}
    matmuls = nodes_of(quantized, "MatMul")
    for matmul in matmuls:
        assert matmul.inputs[1].inputs[0].attrs["axis"] == 1  # B is [K, N]: columns are the output channels
    gemm = nodes_of(quantized, "Gemm")[0]
    assert gemm.inputs[1].inputs[0].attrs["axis"] == 1  # transB = 0
    # The second MatMul's input comes through two Transposes: all three tensors share one scale.
    scales = set()
    for transpose in nodes_of(quantized, "Transpose"):
        dq = transpose.inputs[0].inputs[0]
        assert dq.op == "DequantizeLinear"
        scales.add(float(dq.inputs[1].values))
    scales.add(float(matmuls[1].inputs[0].inputs[0].inputs[1].values))
    assert len(scales) == 1
    feed = mlp_feeds(1, seed=7)[0]
    assert 0 < relative_error(outputs(model, feed)["y"], outputs(quantized, feed)["y"]) < 0.05


def test_exclusions_by_name_op_type_and_regex():
    model = model_from_text(MATMUL_TEXT)
    excluded, by_name = run_qdq(model, mlp_feeds(), exclude_nodes=("first",), smooth_alpha=0.0)
    assert by_name.stats["quantized_nodes"] == 2
    assert producer_op(next(n for n in excluded.graph.nodes if n.name == "first").inputs[0]) is None
    _, by_type = run_qdq(model, mlp_feeds(), exclude_op_types=("Gemm",), smooth_alpha=0.0)
    assert by_type.stats["quantized_by_op"] == {"MatMul": 2}
    _, by_regex = run_qdq(model, mlp_feeds(), exclude_regex="^(first|sec)", smooth_alpha=0.0)
    assert by_regex.stats["quantized_by_op"] == {"Gemm": 1}
    _, only_gemm = run_qdq(model, mlp_feeds(), op_types=("Gemm",))
    assert only_gemm.stats["quantized_by_op"] == {"Gemm": 1}
    with pytest.raises(BadInputError, match="regex"):
        run_qdq(model, mlp_feeds(), exclude_regex="(")


MASKED_ATTENTION_TEXT = """
<ir_version: 8, opset_import: ["" : 17]>
attention (float[N, 4, 8] q, float[N, 8, 4] k, float[N, 4, 4] mask_bias, float[N, 4, 8] v) => (float[N, 4, 8] out)
<{wo}>
{{
    scores = MatMul(q, k)
    masked = Add(scores, mask_bias)
    probs = Softmax <axis = -1> (masked)
    context = MatMul(probs, v)
    out = MatMul(context, wo)
}}
""".format(wo=tensor_text("wo", weights(8, 8)))


def attention_feeds(count: int = 4) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(3)
    feeds = []
    for _ in range(count):
        mask = np.zeros((2, 4, 4), np.float32)
        mask[:, :, 3] = -np.finfo(np.float32).max  # the last key is padding
        feeds.append({"q": rng.standard_normal((2, 4, 8)).astype(np.float32),
                      "k": rng.standard_normal((2, 8, 4)).astype(np.float32),
                      "mask_bias": mask, "v": rng.standard_normal((2, 4, 8)).astype(np.float32)})
    return feeds


def test_mask_sentinels_keep_their_consumer_float():
    model = model_from_text(MASKED_ATTENTION_TEXT)
    quantized, result = run_qdq(model, attention_feeds(), op_types=("MatMul", "Add"), method="minmax")
    # The mask and the masked scores carry -float-max: neither is quantized, so the Add stays float.
    assert result.stats["mask_sentinel_tensors"] == ["mask_bias", "masked"]
    assert result.stats["quantized_by_op"] == {"MatMul": 3}
    add = nodes_of(quantized, "Add")[0]
    assert producer_op(add.inputs[1]) is None  # the mask is read as is, not through Q/DQ
    for q in nodes_of(quantized, "QuantizeLinear"):
        assert np.all(np.isfinite(q.inputs[1].values)) and np.all(q.inputs[1].values < 1e3)
    feed = attention_feeds(1)[0]
    expected = outputs(model, feed)["out"]
    actual = outputs(quantized, feed)["out"]
    assert np.all(np.isfinite(actual))
    assert relative_error(expected, actual) < 0.05


def test_static_needs_data_and_tensorrt_has_no_dynamic_mode():
    model = model_from_text(CNN_TEXT)
    with pytest.raises(BadInputError, match="calibration data"):
        QdqPass(QdqPass.make_options({"mode": "static"})).run(model.copy(), PassContext())
    with pytest.raises(BadInputError, match="calibration data"):
        QdqPass(QdqPass.make_options({"target": "tensorrt"})).run(model.copy(), PassContext())
    with pytest.raises(BadInputError, match="dynamic int8 runs on onnxruntime CPU only"):
        QdqPass(QdqPass.make_options({"mode": "dynamic"})).run(model.copy(), PassContext(target="tensorrt"))
    with pytest.raises(BadInputError, match="unknown method"):
        QdqPass(QdqPass.make_options({"method": "kl"})).run(model.copy(), PassContext(data=cnn_feeds()))


def test_bad_data_is_reported_as_bad_input(tmp_path):
    model = model_from_text(CNN_TEXT)
    with pytest.raises(BadInputError, match="missing input"):
        run_qdq(model, [{"picture": np.zeros((1, 2, 6, 6), np.float32)}])
    specs = [InputSpec("image", np.dtype(np.float32), ("N", 2, 6, 6))]
    with pytest.raises(BadInputError, match="holds no .npz"):
        run_qdq(model, Feeds(specs=specs, path=tmp_path))
    np.savez(tmp_path / "wrong_rank.npz", image=np.zeros((2, 6, 6), np.float32))
    with pytest.raises(BadInputError, match="rank"):
        run_qdq(model, Feeds(specs=specs, path=tmp_path))
    (tmp_path / "wrong_rank.npz").unlink()
    np.savez(tmp_path / "wrong_dtype.npz", image=np.zeros((1, 2, 6, 6), np.int32))
    with pytest.raises(BadInputError, match="int32"):
        run_qdq(model, Feeds(specs=specs, path=tmp_path))
    with pytest.raises(BadInputError, match="does not fit"):
        run_qdq(model, [{"image": np.zeros((1, 2, 5, 5, 1), np.float32)}])


def test_models_below_opset_13_are_left_unchanged_with_a_reason():
    proto = onnx.parser.parse_model(
        '<ir_version: 7, opset_import: ["" : 12]> g (float[4, 64] x) => (float[4, 64] y) { y = MatMul(x, w) }'
    )
    proto.graph.initializer.append(
        onnx.numpy_helper.from_array(np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32), "w")
    )
    model = from_proto(proto)
    result = QdqPass().run(model, PassContext())
    assert not result.modified
    assert any("opset 12 is below 13" in note for note in result.notes)
    assert [node.op for node in model.graph.nodes] == ["MatMul"]
