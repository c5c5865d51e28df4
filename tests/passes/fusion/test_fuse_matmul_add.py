"""fuse-matmul-add: MatMul + Add -> Gemm only where Gemm computes the same thing."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.numpy_helper
import onnx.parser
import pytest

from onnxopt.model_io import Model, from_proto
from onnxopt.passes.fusion.fuse_matmul_add import FuseMatMulAdd, bias_fits_gemm
from tests.util import model_from_text, op_types, outputs, run_pass

TOLERANCE = FuseMatMulAdd.tolerance_rel


def _with_weights(text: str, weights: dict[str, np.ndarray]) -> Model:
    proto = onnx.parser.parse_model(text)
    proto.graph.initializer.extend(onnx.numpy_helper.from_array(value, name) for name, value in weights.items())
    return from_proto(proto)


def _assert_close(before: Model, after: Model, feeds: list[dict[str, np.ndarray]]) -> None:
    for feed in feeds:
        expected, actual = outputs(before, feed), outputs(after, feed)
        assert list(expected) == list(actual)
        for name in expected:
            assert expected[name].shape == actual[name].shape and expected[name].dtype == actual[name].dtype
            error = np.max(np.abs(expected[name].astype(np.float64) - actual[name]))
            assert error <= TOLERANCE * np.max(np.abs(expected[name])), (name, error)


def _feeds(**shapes) -> list[dict[str, np.ndarray]]:
    return [{name: np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
             for name, shape in shapes.items()} for seed in range(2)]


@pytest.mark.parametrize("bias_shape", [(16,), (1, 16), (5, 1), (5, 16), (1,), ()])
@pytest.mark.parametrize("bias_first", [False, True])
def test_matmul_add_becomes_gemm(bias_shape, bias_first):
    rng = np.random.default_rng(len(bias_shape))
    weights = {"w": rng.standard_normal((32, 16)).astype(np.float32),
               "b": rng.standard_normal(bias_shape).astype(np.float32)}
    add = "Add(b, m)" if bias_first else "Add(m, b)"
    model = _with_weights(f"""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[5,32] x) => (float[5,16] y)
        {{
            m = MatMul(x, w)
            y = {add}
        }}
    """, weights)
    new, result = run_pass(FuseMatMulAdd, model)
    assert op_types(new) == ["Gemm"]
    gemm = new.graph.nodes[0]
    assert [t.name for t in gemm.inputs] == ["x", "w", "b"] and gemm.outputs[0] is new.graph.outputs[0]
    assert gemm.attrs.get("transA", 0) == 0 and gemm.attrs.get("transB", 0) == 0
    assert result.stats["nodes_fused"] == 1
    _assert_close(model, new, _feeds(x=(5, 32)))
    assert not run_pass(FuseMatMulAdd, new)[1].modified


def test_symbolic_rows_and_a_variable_b():
    model = model_from_text("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N,8] x, float[8,4] v, float[4] b) => (float[N,4] y)
        {
            m = MatMul(x, v)
            y = Add(m, b)
        }
    """)
    new, result = run_pass(FuseMatMulAdd, model)
    assert op_types(new) == ["Gemm"] and result.stats["nodes_fused"] == 1
    _assert_close(model, new, _feeds(x=(3, 8), v=(8, 4), b=(4,)))


def test_negative_cases_are_refused_with_reasons():
    model = model_from_text("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[2,5,8] x3, float[5,8] x, float[N,8] xn, float[8,4] v, float[3,5,4] b3, float[5,4] b, float[7,4] b7,
           int32[5,8] xi, int32[8,4] vi, int32[4] bi, float[8,4] v2)
          => (float[2,5,4] y1, float[3,5,4] y2, float[5,4] y3, float[5,4] m4, float[N,4] y5, int32[5,4] y6)
        {
            m1 = MatMul(x3, v)
            y1 = Add(m1, b)
            m2 = MatMul(x, v)
            y2 = Add(m2, b3)
            m3 = MatMul(x, v2)
            y3 = Add(m3, b)
            m4 = MatMul(x, v)
            y4 = Add(m4, b)
            m5 = MatMul(xn, v)
            y5 = Add(m5, b7)
            m6 = MatMul(xi, vi)
            y6 = Add(m6, bi)
            y3b = Add(m3, b)
        }
    """)
    new, result = run_pass(FuseMatMulAdd, model)
    assert not result.modified
    assert "Gemm" not in op_types(new)
    assert result.stats["refused"] == {
        "MatMul operands are not both rank 2": 1,
        "bias does not broadcast one way to [M, N]": 2,
        "MatMul output has other readers": 3,
        "element type is not float32/float64": 1,
    }


def test_inside_a_subgraph():
    weights = {"w": np.random.default_rng(0).standard_normal((8, 4)).astype(np.float32),
               "b": np.random.default_rng(1).standard_normal(4).astype(np.float32)}
    model = _with_weights("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[3,8] x, bool c) => (float[3,4] y)
        {
            y = If (c) <
                then_branch = then_g () => (float[3,4] t) {
                    m = MatMul(x, w)
                    t = Add(m, b)
                },
                else_branch = else_g () => (float[3,4] e) { e = MatMul(x, w) }
            >
        }
    """, weights)
    new, result = run_pass(FuseMatMulAdd, model)
    then_g = new.graph.nodes[0].attrs["then_branch"]
    assert [n.op for n in then_g.nodes] == ["Gemm"] and then_g.nodes[0].outputs[0].name == "t"
    assert result.stats["nodes_fused"] == 1
    feeds = [dict(feed, c=np.array(flag)) for feed in _feeds(x=(3, 8)) for flag in (True, False)]
    _assert_close(model, new, feeds)
    assert not run_pass(FuseMatMulAdd, new)[1].modified


def test_local_function_without_shapes_is_refused_safely():
    model = model_from_text("""
        <ir_version: 8, opset_import: ["" : 17, "local" : 1]>
        g (float[3,8] x) => (float[3,2] y)
        {
            y = local.dense(x)
        }
        <domain: "local", opset_import: ["" : 17]>
        dense (a) => (b) {
            w = Constant<value = float[8,2] {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}>()
            bias = Constant<value = float[2] {0.5, -0.5}>()
            m = MatMul(a, w)
            b = Add(m, bias)
        }
    """)
    new, result = run_pass(FuseMatMulAdd, model)
    assert not result.modified and [n.op for n in new.graph.functions[0].nodes][-2:] == ["MatMul", "Add"]
    assert result.stats["refused"] == {"MatMul operand rank unknown": 1}


def test_bias_rule():
    assert bias_fits_gemm(("N",), "M", "N")
    assert bias_fits_gemm((1, "N"), "M", "N")
    assert bias_fits_gemm(("M", 1), "M", "N")
    assert not bias_fits_gemm((7, 4), "M", 4)  # M may be 7 or not
    assert not bias_fits_gemm((None,), 5, 4)
    assert not bias_fits_gemm((1, 1, 4), 5, 4)
    assert not bias_fits_gemm((5, 4), 1, 4)  # a [5, 4] bias would grow a [1, 4] product
