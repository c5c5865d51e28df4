"""fold-constants: chains fold bit-exactly, expansions are refused, subgraphs and functions."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from onnxopt.model_io import read_constant, save
from onnxopt.passes.cleanup import fold_constants
from onnxopt.passes.cleanup.fold_constants import FoldConstants
from tests.util import assert_bit_exact, model_from_text, op_types, outputs, random_feed_for, run_pass

W12 = "{0.1, -0.2, 0.3, 0.4, 1.5, -2.6, 0.7, 3.8, 0.9, 1.0, -1.1, 1.2}"


def _check_equivalent(before, after, feeds=None) -> None:
    for feed in feeds or [random_feed_for(before, seed) for seed in range(2)]:
        assert_bit_exact(outputs(before, feed), outputs(after, feed))


def _node(graph: gs.Graph, output: str) -> gs.Node:
    return next(node for node in graph.nodes if node.outputs[0].name == output)


def test_shape_chain_and_float_math_fold_bit_exactly():
    model = model_from_text(f"""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[2,12] x) => (float[2,3,4] y)
        <float[3,4] w = {W12}, int64[1] zero = {{0}}, int64[1] one = {{1}}>
        {{
            s = Shape(w)
            d0 = Gather<axis = 0>(s, zero)
            d1 = Gather<axis = 0>(s, one)
            two = Constant<value = int64[1] {{2}}>()
            shp = Concat<axis = 0>(two, d0, d1)
            r = Reshape(x, shp)
            ew = Exp(w)
            sq = Sqrt(ew)
            y = Add(r, sq)
        }}
    """)
    new, result = run_pass(FoldConstants, model)
    assert sorted(op_types(new)) == ["Add", "Constant", "Reshape"]  # the Constant is dead now (eliminate-dead)
    reshape, add = _node(new.graph, "r"), _node(new.graph, "y")
    assert isinstance(reshape.inputs[1], gs.Constant)
    np.testing.assert_array_equal(read_constant(reshape.inputs[1]), [2, 3, 4])
    assert isinstance(add.inputs[1], gs.Constant) and add.inputs[1].name == "sq"
    assert result.stats["nodes_folded"] == 6
    assert "refused" not in result.stats
    _check_equivalent(model, new)  # Exp and Sqrt folded to exactly the bytes onnxruntime computes
    again, second = run_pass(FoldConstants, new)
    assert not second.modified and sorted(op_types(again)) == ["Add", "Constant", "Reshape"]


def test_constant_of_shape_expansion_is_refused_before_it_is_computed(tmp_path, monkeypatch):
    model = model_from_text("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[1024,1024] x, float[4] v) => (float[1024,1024] y, float[4] z)
        <int64[2] big = {1024, 1024}, int64[1] small = {4}>
        {
            c = ConstantOfShape<value = float[1] {0.5}>(big)
            y = Mul(x, c)
            k = ConstantOfShape<value = float[1] {0.5}>(small)
            z = Add(v, k)
        }
    """)
    evaluated = []
    real_evaluate = fold_constants.evaluate_node
    monkeypatch.setattr(fold_constants, "evaluate_node",
                        lambda node, *args: evaluated.append(node.output[0]) or real_evaluate(node, *args))
    new, result = run_pass(FoldConstants, model)
    assert sorted(op_types(new)) == ["Add", "ConstantOfShape", "Mul"]
    assert evaluated == ["k"]  # the 4 MiB tensor was never materialised
    assert result.stats["nodes_folded"] == 1  # 16 bytes out for 8 freed: within the cap
    assert result.stats["refused"] == {"would grow the model by more than max_growth_bytes": 1}
    assert result.notes == ["not folded: ConstantOfShape 'c': 4194304 bytes out, 16 freed (cap 128)"]
    save(model, tmp_path / "before.onnx")
    save(new, tmp_path / "after.onnx")
    assert (tmp_path / "after.onnx").stat().st_size <= (tmp_path / "before.onnx").stat().st_size + 16
    feed = {"x": np.ones((1024, 1024), np.float32), "v": np.arange(4, dtype=np.float32)}
    _check_equivalent(model, new, [feed])

    # A larger cap is an explicit choice to trade size for work.
    generous, generous_result = run_pass(FoldConstants, model, max_growth_bytes=8 * 1024 * 1024)
    assert sorted(op_types(generous)) == ["Add", "Mul"]
    assert generous_result.stats["nodes_folded"] == 2
    _check_equivalent(model, generous, [feed])


def test_negative_nothing_foldable_is_unchanged():
    model = model_from_text("""
        <ir_version: 8, opset_import: ["" : 17, "com.vendor" : 1]>
        g (float[3] x, bool c) => (float[3] y, float[3] out_const, float[3] r, float[3] v, float[3] b)
        <float[3] w = {1, 2, 3}, bool yes = {1}>
        {
            y = Add(x, w)
            out_const = Mul(w, w)
            r = RandomUniform<shape = [3]>()
            v = com.vendor.Scale(w)
            b = If (yes) <
                then_branch = then_g () => (float[3] t) { t = Neg(w) },
                else_branch = else_g () => (float[3] e) { e = Abs(w) }
            >
        }
    """)
    new, result = run_pass(FoldConstants, model)
    assert not result.modified
    assert sorted(op_types(new)) == ["Add", "If", "Mul", "RandomUniform", "Scale"]
    assert result.stats["refused"] == {
        "writes a graph output": 3,  # Mul in the main graph, Neg and Abs as branch outputs
        "non-deterministic op": 1,
        "custom domain": 1,
        "holds a subgraph": 1,
    }


def test_subgraph_constants_fold_inside_the_branch():
    model = model_from_text("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[3] x, bool c) => (float[3] y)
        <float[3] w = {1, 2, 3}>
        {
            y = If (c) <
                then_branch = then_g () => (float[3] t) {
                    w2 = Mul(w, w)
                    t = Add(x, w2)
                },
                else_branch = else_g () => (float[3] e) { e = Neg(x) }
            >
        }
    """)
    new, result = run_pass(FoldConstants, model)
    then_g = new.graph.nodes[0].attrs["then_branch"]
    assert [n.op for n in then_g.nodes] == ["Add"]
    np.testing.assert_array_equal(read_constant(then_g.nodes[0].inputs[1]), [1, 4, 9])
    assert result.stats["nodes_folded"] == 1
    feeds = [{"x": np.array([1, -2, 3], np.float32), "c": np.array(flag)} for flag in (True, False)]
    _check_equivalent(model, new, feeds)
    assert not run_pass(FoldConstants, new)[1].modified


def test_local_function_constants_fold():
    model = model_from_text("""
        <ir_version: 8, opset_import: ["" : 17, "local" : 1]>
        g (float[3] x) => (float[3] y)
        {
            y = local.f(x)
        }
        <domain: "local", opset_import: ["" : 17]>
        f (a) => (b) {
            k = Constant<value = float[3] {1.5, -2, 3}>()
            k2 = Mul(k, k)
            b = Add(a, k2)
        }
    """)
    new, result = run_pass(FoldConstants, model)
    function = new.graph.functions[0]
    assert [n.op for n in function.nodes] == ["Constant", "Add"]
    assert isinstance(function.nodes[1].inputs[1], gs.Constant)
    assert result.stats["nodes_folded"] == 1
    _check_equivalent(model, new)
    assert not run_pass(FoldConstants, new)[1].modified


def test_reference_evaluator_fallback_for_types_onnxruntime_cannot_feed():
    model = model_from_text(f"""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[3,4] x) => (float[3,4] y)
        <float[3,4] w = {W12}>
        {{
            wb = Cast<to = 16>(w)
            wf = Cast<to = 1>(wb)
            y = Add(x, wf)
        }}
    """)
    new, result = run_pass(FoldConstants, model)
    assert op_types(new) == ["Add"]
    assert result.stats["nodes_folded"] == 2
    assert result.stats["evaluated_by_reference"] >= 1
    _check_equivalent(model, new)
