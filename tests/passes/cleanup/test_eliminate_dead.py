"""eliminate-dead: golden graphs, outer-scope uses, functions, opset imports, IR 3 inputs."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from onnxopt.model_io import to_proto
from onnxopt.passes.cleanup.eliminate_dead import EliminateDead
from tests.util import assert_bit_exact, model_from_text, op_types, outputs, random_feed_for, run_pass


def _check_equivalent(before, after, feeds=None) -> None:
    for feed in feeds or [random_feed_for(before, seed) for seed in range(2)]:
        assert_bit_exact(outputs(before, feed), outputs(after, feed))


def test_dead_chain_and_its_initializers_go():
    model = model_from_text("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[3] x, float[3] unused_input) => (float[3] y)
        <float[3] w = {1, 2, 3}, float[3] dead_w = {4, 5, 6}>
        {
            y = Add(x, w)
            d1 = Mul(x, dead_w)
            d2 = Relu(d1)
            d3, d4 = Split<axis = 0>(d2, two)
            two = Constant<value = int64[2] {1, 2}>()
        }
    """)
    new, result = run_pass(EliminateDead, model)
    assert op_types(new) == ["Add"]
    assert result.stats["nodes_removed"] == 4
    assert result.stats["initializers_removed"] == 1 and result.stats["bytes_removed"] == 12
    proto = to_proto(new)
    assert [t.name for t in proto.graph.initializer] == ["w"]
    # Real graph inputs stay, even unused ones: they are the model's interface.
    assert [t.name for t in proto.graph.input] == ["x", "unused_input"]
    _check_equivalent(model, new)
    assert not run_pass(EliminateDead, new)[1].modified


def test_negative_everything_used_is_unchanged():
    model = model_from_text("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[3] x) => (float[3] y, float[3] z)
        <float[3] w = {1, 2, 3}>
        {
            a = Add(x, w)
            y = Relu(a)
            z = Neg(a)
        }
    """)
    new, result = run_pass(EliminateDead, model)
    assert not result.modified
    assert sorted(op_types(new)) == ["Add", "Neg", "Relu"]


def test_ir3_initializers_listed_as_inputs_disappear_with_their_reader():
    model = model_from_text("""
        <ir_version: 3, opset_import: ["" : 9]>
        g (float[3] x, float[3] w1, float[3] w2) => (float[3] y)
        <float[3] w1 = {1, 2, 3}, float[3] w2 = {4, 5, 6}>
        {
            y = Add(x, w1)
            d = Mul(x, w2)
        }
    """)
    new, result = run_pass(EliminateDead, model)
    proto = to_proto(new)
    assert [t.name for t in proto.graph.initializer] == ["w1"]
    assert [t.name for t in proto.graph.input if t.name not in {"w1"}] == ["x"]
    assert "w2" not in {t.name for t in proto.graph.input}
    assert result.stats["initializers_removed"] == 1
    _check_equivalent(model, new)


def test_outer_names_read_only_by_subgraphs_are_uses():
    model = model_from_text("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[3] x, bool c) => (float[3] y)
        <float[3] w = {1, 2, 3}>
        {
            outer = Mul(x, w)
            dead_outer = Neg(x)
            y = If (c) <
                then_branch = then_g () => (float[3] t) {
                    t = Add(outer, x)
                    dead_inner = Sub(outer, x)
                },
                else_branch = else_g () => (float[3] e) { e = Neg(x) }
            >
        }
    """)
    new, result = run_pass(EliminateDead, model)
    assert sorted(op_types(new)) == ["If", "Mul"]  # Mul is read only inside the then branch
    then_g = next(n for n in new.graph.nodes if n.op == "If").attrs["then_branch"]
    assert [n.op for n in then_g.nodes] == ["Add"]
    assert result.stats["nodes_removed"] == 2
    feeds = [{"x": np.array([1, -2, 3], np.float32), "c": np.array(flag)} for flag in (True, False)]
    _check_equivalent(model, new, feeds)
    assert not run_pass(EliminateDead, new)[1].modified


def test_removing_a_dead_if_frees_what_only_its_bodies_read():
    model = model_from_text("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[3] x, bool c) => (float[3] y)
        {
            y = Relu(x)
            only_for_if = Mul(x, x)
            dead = If (c) <
                then_branch = then_g () => (float[3] t) { t = Add(only_for_if, x) },
                else_branch = else_g () => (float[3] e) { e = Neg(x) }
            >
        }
    """)
    new, result = run_pass(EliminateDead, model)
    assert op_types(new) == ["Relu"]
    assert result.stats["nodes_removed"] == 2


def test_functions_unused_removed_used_bodies_cleaned_and_imports_dropped():
    model = model_from_text("""
        <ir_version: 8, opset_import: ["" : 17, "local" : 1, "unused.domain" : 1]>
        g (float[3] x) => (float[3] y)
        {
            y = local.used(x)
        }
        <domain: "local", opset_import: ["" : 17]>
        used (a) => (b) {
            b = Neg(a)
            waste = Exp(a)
        }
        <domain: "local", opset_import: ["" : 17]>
        unused (a) => (b) {
            b = Relu(a)
        }
    """)
    new, result = run_pass(EliminateDead, model)
    assert [f.name for f in new.graph.functions] == ["used"]
    assert [n.op for n in new.graph.functions[0].nodes] == ["Neg"]
    assert result.stats["functions_removed"] == 1
    assert result.stats["opset_imports_removed"] == 1
    assert {entry.domain for entry in new.graph.import_domains} == {"", "local"}
    assert {entry.domain for entry in to_proto(new).opset_import} == {"", "local"}
    _check_equivalent(model, new)
    assert not run_pass(EliminateDead, new)[1].modified


def test_custom_domain_nodes_are_kept_even_when_unused():
    model = model_from_text("""
        <ir_version: 8, opset_import: ["" : 17, "com.vendor" : 1]>
        g (float[3] x) => (float[3] y)
        {
            y = Relu(x)
            side = com.vendor.Log(x)
        }
    """)
    new, result = run_pass(EliminateDead, model)
    assert not result.modified
    assert sorted(op_types(new)) == ["Log", "Relu"]


def test_partly_used_node_and_graph_outputs_stay():
    model = model_from_text("""
        <ir_version: 8, opset_import: ["" : 18]>
        g (float[4] x) => (float[2] y, float[4] x_out)
        {
            y, unused_half = Split<num_outputs = 2>(x)
            x_out = Identity(x)
        }
    """)
    new, result = run_pass(EliminateDead, model)
    assert not result.modified
    assert sorted(op_types(new)) == ["Identity", "Split"]
    assert [t.name for t in new.graph.outputs] == ["y", "x_out"]
    assert all(isinstance(t, gs.Variable) for t in new.graph.outputs)
