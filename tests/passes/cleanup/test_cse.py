"""cse: identical nodes merged, graph output names kept, subgraphs and functions."""

from __future__ import annotations

import numpy as np

from onnxopt.passes.cleanup.cse import CommonSubexpressionElimination as CSE
from tests.util import assert_bit_exact, model_from_text, op_types, outputs, random_feed_for, run_pass


def _check_equivalent(before, after, feeds=None) -> None:
    for feed in feeds or [random_feed_for(before, seed) for seed in range(2)]:
        assert_bit_exact(outputs(before, feed), outputs(after, feed))


def _reads(graph) -> dict[str, list[str]]:
    return {node.outputs[0].name: [t.name for t in node.inputs] for node in graph.nodes}


def test_duplicate_chains_merge_in_one_run():
    model = model_from_text("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N,4] x) => (float[N,4] y)
        <int64[1] zero = {0}>
        {
            s1 = Shape(x)
            s2 = Shape(x)
            n1 = Gather<axis = 0>(s1, zero)
            n2 = Gather<axis = 0>(s2, zero)
            t1 = Transpose<perm = [1, 0]>(x)
            t2 = Transpose<perm = [1, 0]>(x)
            a = Add(t1, t2)
            c1 = Cast<to = 1>(n1)
            c2 = Cast<to = 1>(n2)
            m = Mul(c1, c2)
            at = Transpose<perm = [1, 0]>(a)
            y = Mul(at, m)
        }
    """)
    new, result = run_pass(CSE, model)
    assert sorted(op_types(new)) == ["Add", "Cast", "Gather", "Mul", "Mul", "Shape", "Transpose", "Transpose"]
    reads = _reads(new.graph)
    assert reads["a"] == ["t1", "t1"] and reads["m"] == ["c1", "c1"]
    assert result.stats["nodes_merged"] == 4
    _check_equivalent(model, new)
    assert not run_pass(CSE, new)[1].modified


def test_negative_differences_keep_both():
    model = model_from_text("""
        <ir_version: 8, opset_import: ["" : 17, "com.vendor" : 1]>
        g (float[4] x, float[4] z) => (float[4] y)
        {
            l1 = LeakyRelu<alpha = 0.0>(x)
            l2 = LeakyRelu<alpha = -0.0>(x)
            s1 = Sub(x, z)
            s2 = Sub(z, x)
            r1 = RandomUniformLike(x)
            r2 = RandomUniformLike(x)
            v1 = com.vendor.Op(x)
            v2 = com.vendor.Op(x)
            q1 = Add(l1, l2)
            q2 = Add(s1, s2)
            q3 = Add(q1, q2)
            y = Add(q3, x)
        }
    """)
    new, result = run_pass(CSE, model)
    assert not result.modified
    assert sorted(op_types(new)).count("LeakyRelu") == 2  # -0.0 and 0.0 alphas differ in bits
    assert op_types(new).count("RandomUniformLike") == 2
    assert op_types(new).count("Op") == 2


def test_duplicate_writing_a_graph_output_hands_its_name_to_the_keeper():
    model = model_from_text("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[4] x) => (float[4] y, float[4] z)
        {
            a = Relu(x)
            y = Neg(a)
            z = Relu(x)
        }
    """)
    new, result = run_pass(CSE, model)
    assert sorted(op_types(new)) == ["Neg", "Relu"]
    assert [t.name for t in new.graph.outputs] == ["y", "z"]
    assert _reads(new.graph) == {"z": ["x"], "y": ["z"]}
    assert result.stats["nodes_merged"] == 1
    _check_equivalent(model, new)
    assert not run_pass(CSE, new)[1].modified


def test_two_graph_outputs_are_not_merged():
    model = model_from_text("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[4] x) => (float[4] y, float[4] z)
        {
            y = Relu(x)
            z = Relu(x)
        }
    """)
    new, result = run_pass(CSE, model)
    assert not result.modified and op_types(new) == ["Relu", "Relu"]
    assert result.stats["skipped_graph_outputs"] == 1


def test_subgraph_bodies():
    # (Subgraphs and functions in one model trip a graph-surgeon toposort recursion on import.)
    model = model_from_text("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[4] x, bool c) => (float[4] y)
        {
            y = If (c) <
                then_branch = then_g () => (float[4] t) {
                    e1 = Exp(x)
                    e2 = Exp(x)
                    t = Add(e1, e2)
                },
                else_branch = else_g () => (float[4] e) { e = Neg(x) }
            >
        }
    """)
    new, result = run_pass(CSE, model)
    then_g = new.graph.nodes[0].attrs["then_branch"]
    assert [n.op for n in then_g.nodes] == ["Exp", "Add"]
    assert result.stats["nodes_merged"] == 1
    feeds = [{"x": np.array([1, -2, 3, 0.5], np.float32), "c": np.array(flag)} for flag in (True, False)]
    _check_equivalent(model, new, feeds)
    assert not run_pass(CSE, new)[1].modified


def test_function_bodies():
    model = model_from_text("""
        <ir_version: 8, opset_import: ["" : 17, "local" : 1]>
        g (float[4] x) => (float[4] w)
        {
            w = local.f(x)
        }
        <domain: "local", opset_import: ["" : 17]>
        f (a) => (b) {
            n1 = Neg(a)
            n2 = Neg(a)
            b = Mul(n1, n2)
        }
    """)
    new, result = run_pass(CSE, model)
    assert [n.op for n in new.graph.functions[0].nodes] == ["Neg", "Mul"]
    assert result.stats["nodes_merged"] == 1
    _check_equivalent(model, new)
    assert not run_pass(CSE, new)[1].modified


def test_tensor_attributes_compared_by_bytes():
    model = model_from_text("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[3] x) => (float[3] y)
        {
            k1 = Constant<value = float[3] {1, 2, 3}>()
            k2 = Constant<value = float[3] {1, 2, 3}>()
            k3 = Constant<value = float[3] {1, 2, 4}>()
            a = Add(x, k1)
            b = Add(a, k2)
            y = Add(b, k3)
        }
    """)
    new, result = run_pass(CSE, model)
    assert sorted(op_types(new)) == ["Add", "Add", "Add", "Constant", "Constant"]
    assert _reads(new.graph)["b"] == ["a", "k1"] and _reads(new.graph)["y"] == ["b", "k3"]
    assert result.stats["nodes_merged"] == 1
    _check_equivalent(model, new)
