"""fuse-conv-bn: BatchNormalization folded into Conv within 1e-5 relative; refusals; scopes."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.numpy_helper
import onnx.parser
import onnx_graphsurgeon as gs
import pytest

from onnxopt.model_io import Model, from_proto
from onnxopt.passes.fusion.fuse_conv_bn import FuseConvBatchNorm
from tests.util import model_from_text, op_types, outputs, run_pass

TOLERANCE = FuseConvBatchNorm.tolerance_rel


def _with_weights(text: str, weights: dict[str, np.ndarray]) -> Model:
    proto = onnx.parser.parse_model(text)
    proto.graph.initializer.extend(onnx.numpy_helper.from_array(value, name) for name, value in weights.items())
    return from_proto(proto)


def _bn_params(rng: np.random.Generator, prefix: str, channels: int, dtype=np.float32) -> dict[str, np.ndarray]:
    return {
        f"{prefix}scale": rng.uniform(0.5, 2.0, channels).astype(dtype),
        f"{prefix}shift": rng.standard_normal(channels).astype(dtype),
        f"{prefix}mean": rng.standard_normal(channels).astype(dtype),
        f"{prefix}var": rng.uniform(0.1, 3.0, channels).astype(dtype),
    }


def _assert_close(before: Model, after: Model, feeds: list[dict[str, np.ndarray]]) -> None:
    """Every output within the declared relative tolerance of the original (max-norm)."""
    for feed in feeds:
        expected, actual = outputs(before, feed), outputs(after, feed)
        assert list(expected) == list(actual)
        for name in expected:
            assert expected[name].shape == actual[name].shape
            error = np.max(np.abs(expected[name].astype(np.float64) - actual[name]))
            assert error <= TOLERANCE * np.max(np.abs(expected[name])), (name, error)


def _image_feeds(shape=(2, 3, 8, 8), count=2) -> list[dict[str, np.ndarray]]:
    return [{"x": np.random.default_rng(seed).standard_normal(shape).astype(np.float32)} for seed in range(count)]


CONV_BN = """
    <ir_version: 8, opset_import: ["" : {opset}]>
    g (float[2,3,8,8] x) => (float[2,4,8,8] y)
    {{
        c = Conv<pads = [1, 1, 1, 1]>(x, w{bias})
        y = BatchNormalization<epsilon = 0.001>(c, scale, shift, mean, var)
    }}
"""


@pytest.mark.parametrize(("opset", "with_bias"), [(15, False), (15, True), (9, True)])
def test_conv_bn_fuses_into_conv(opset, with_bias):
    rng = np.random.default_rng(opset + with_bias)
    weights = {"w": rng.standard_normal((4, 3, 3, 3)).astype(np.float32), **_bn_params(rng, "", 4)}
    if with_bias:
        weights["b"] = rng.standard_normal(4).astype(np.float32)
    model = _with_weights(CONV_BN.format(opset=opset, bias=", b" if with_bias else ""), weights)
    new, result = run_pass(FuseConvBatchNorm, model)
    assert op_types(new) == ["Conv"]
    conv = new.graph.nodes[0]
    assert [t.name for t in conv.outputs] == ["y"] and new.graph.outputs[0] is conv.outputs[0]
    assert len(conv.inputs) == 3 and all(isinstance(t, gs.Constant) for t in conv.inputs[1:])
    assert result.stats["nodes_fused"] == 1
    _assert_close(model, new, _image_feeds())
    assert not run_pass(FuseConvBatchNorm, new)[1].modified


def test_shared_weights_get_separate_fused_copies():
    rng = np.random.default_rng(7)
    weights = {"w": rng.standard_normal((4, 3, 1, 1)).astype(np.float32),
               **_bn_params(rng, "p_", 4), **_bn_params(rng, "q_", 4)}
    model = _with_weights("""
        <ir_version: 8, opset_import: ["" : 15]>
        g (float[2,3,8,8] x) => (float[2,4,8,8] y, float[2,4,8,8] z)
        {
            c1 = Conv(x, w)
            y = BatchNormalization(c1, p_scale, p_shift, p_mean, p_var)
            c2 = Conv(x, w)
            z = BatchNormalization(c2, q_scale, q_shift, q_mean, q_var)
        }
    """, weights)
    new, result = run_pass(FuseConvBatchNorm, model)
    assert op_types(new) == ["Conv", "Conv"]
    first, second = (node.inputs[1] for node in new.graph.nodes)
    assert first is not second and first.name != second.name
    assert result.stats["nodes_fused"] == 2
    _assert_close(model, new, _image_feeds())


def test_negative_cases_are_refused_with_reasons():
    rng = np.random.default_rng(3)
    weights = {"w": rng.standard_normal((4, 3, 1, 1)).astype(np.float32),
               "wh": rng.standard_normal((4, 3, 1, 1)).astype(np.float16),
               **_bn_params(rng, "", 4), **_bn_params(rng, "h_", 4, np.float16)}
    model = _with_weights("""
        <ir_version: 8, opset_import: ["" : 15]>
        g (float[2,3,8,8] x, float[4] live_scale, float16[2,3,8,8] xh)
          => (float[2,4,8,8] y, float[2,4,8,8] r, float[2,4,8,8] z, float16[2,4,8,8] h)
        {
            c1 = Conv(x, w)
            y = BatchNormalization(c1, scale, shift, mean, var)
            r = Relu(c1)
            c2 = Conv(x, w)
            z = BatchNormalization(c2, live_scale, shift, mean, var)
            c3 = Conv(xh, wh)
            h = BatchNormalization(c3, h_scale, h_shift, h_mean, h_var)
        }
    """, weights)
    new, result = run_pass(FuseConvBatchNorm, model)
    assert not result.modified
    assert op_types(new).count("BatchNormalization") == 3
    assert result.stats["refused"] == {
        "Conv output has other readers": 1,
        "BatchNormalization parameters are not constant": 1,
        "weights are float16, not float32/float64": 1,
    }


def test_training_mode_batchnorm_is_not_fused():
    rng = np.random.default_rng(4)
    weights = {"w": rng.standard_normal((4, 3, 1, 1)).astype(np.float32), **_bn_params(rng, "", 4)}
    model = _with_weights("""
        <ir_version: 8, opset_import: ["" : 15]>
        g (float[2,3,8,8] x) => (float[2,4,8,8] y, float[4] rm, float[4] rv)
        {
            c = Conv(x, w)
            y, rm, rv = BatchNormalization<training_mode = 1>(c, scale, shift, mean, var)
        }
    """, weights)
    new, result = run_pass(FuseConvBatchNorm, model)
    assert not result.modified and op_types(new) == ["Conv", "BatchNormalization"]
    assert list(result.stats["refused"]) == ["BatchNormalization is in training mode (statistics outputs present)"]


def test_inside_a_subgraph_with_outer_weights():
    rng = np.random.default_rng(5)
    weights = {"w": rng.standard_normal((4, 3, 3, 3)).astype(np.float32), **_bn_params(rng, "", 4)}
    model = _with_weights("""
        <ir_version: 8, opset_import: ["" : 15]>
        g (float[2,3,8,8] x, bool c) => (float[2,4,6,6] y)
        {
            y = If (c) <
                then_branch = then_g () => (float[2,4,6,6] t) {
                    cv = Conv(x, w)
                    t = BatchNormalization(cv, scale, shift, mean, var)
                },
                else_branch = else_g () => (float[2,4,6,6] e) { e = Conv(x, w) }
            >
        }
    """, weights)
    new, result = run_pass(FuseConvBatchNorm, model)
    then_g = new.graph.nodes[0].attrs["then_branch"]
    assert [n.op for n in then_g.nodes] == ["Conv"] and then_g.nodes[0].outputs[0].name == "t"
    assert result.stats["nodes_fused"] == 1
    feeds = [dict(feed, c=np.array(flag)) for feed in _image_feeds() for flag in (True, False)]
    _assert_close(model, new, feeds)
    assert not run_pass(FuseConvBatchNorm, new)[1].modified


def test_inside_a_local_function_with_constant_nodes():
    model = model_from_text("""
        <ir_version: 8, opset_import: ["" : 15, "local" : 1]>
        g (float[1,2,4,4] x) => (float[1,2,4,4] y)
        {
            y = local.block(x)
        }
        <domain: "local", opset_import: ["" : 15]>
        block (a) => (b) {
            w = Constant<value = float[2,2,1,1] {0.5, -1.0, 2.0, 0.25}>()
            s = Constant<value = float[2] {1.5, 0.75}>()
            sh = Constant<value = float[2] {0.1, -0.2}>()
            m = Constant<value = float[2] {0.3, 0.4}>()
            v = Constant<value = float[2] {2.0, 0.5}>()
            c = Conv(a, w)
            b = BatchNormalization(c, s, sh, m, v)
        }
    """)
    new, result = run_pass(FuseConvBatchNorm, model)
    function = new.graph.functions[0]
    assert [n.op for n in function.nodes if n.op != "Constant"] == ["Conv"]
    assert result.stats["nodes_fused"] == 1
    _assert_close(model, new, _image_feeds((1, 2, 4, 4)))
    assert not run_pass(FuseConvBatchNorm, new)[1].modified
