"""eliminate-identity: no-op nodes removed, graph output names kept, subgraphs and functions."""

from __future__ import annotations

import numpy as np
import pytest

from onnxopt.passes.cleanup.eliminate_identity import EliminateIdentity, reshape_is_noop
from tests.util import assert_bit_exact, model_from_text, op_types, outputs, random_feed_for, run_pass


def _check_equivalent(before, after, feeds=None) -> None:
    for feed in feeds or [random_feed_for(before, seed) for seed in range(2)]:
        assert_bit_exact(outputs(before, feed), outputs(after, feed))


def _reads(graph) -> dict[str, list[str]]:
    return {node.outputs[0].name: [t.name for t in node.inputs] for node in graph.nodes}


def test_every_noop_kind_is_removed():
    model = model_from_text("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N,3,4] x) => (float[N,3,4] y)
        <int64[3] same = {0, 3, -1}, int64[6] zeros = {0, 0, 0, 0, 0, 0}, bool no = {0}>
        {
            a = Identity(x)
            b = Reshape(a, same)
            c = Transpose<perm = [0, 1, 2]>(b)
            d = Cast<to = 1>(c)
            e = Dropout(d)
            f = Pad(e, zeros)
            g1 = Dropout(f, , no)
            y = Relu(g1)
        }
    """)
    new, result = run_pass(EliminateIdentity, model)
    assert op_types(new) == ["Relu"]
    assert _reads(new.graph) == {"y": ["x"]}
    assert result.stats["nodes_removed"] == 7
    assert result.stats["dropout_removed"] == 2 and result.stats["reshape_removed"] == 1
    _check_equivalent(model, new, [{"x": np.random.default_rng(s).standard_normal((2, 3, 4), np.float32)}
                                   for s in range(2)])
    again, second = run_pass(EliminateIdentity, new)
    assert not second.modified and op_types(again) == ["Relu"]


def test_negative_real_work_is_kept():
    model = model_from_text("""
        <ir_version: 8, opset_import: ["" : 17, "com.vendor" : 1]>
        g (float[2,3,4] x, float[M,K] u) => (float[2,3,4] y, double[2,3,4] z, float[2,12] r,
                                             bool[2,3,4] mask, float[2,3,4] dt, float[M,K,1] ru, float[2,12] rv)
        <int64[2] flat = {2, 12}, int64[6] pads = {0, 0, 1, 0, 0, 0}, int64[3] more = {0, -1, 1}>
        {
            t = Transpose<perm = [0, 2, 1]>(x)
            back = Transpose<perm = [0, 2, 1]>(t)
            p = Pad(back, pads)
            y = Slice(p, starts, ends, axes)
            starts = Constant<value = int64[1] {1}>()
            ends = Constant<value = int64[1] {3}>()
            axes = Constant<value = int64[1] {0}>()
            z = Cast<to = 11>(x)
            r = Reshape(x, flat)
            dt, mask = Dropout(x)
            ru = Reshape(u, more)
            v = com.vendor.Opaque(x)
            rv = Reshape(v, flat)
        }
    """)
    new, result = run_pass(EliminateIdentity, model)
    assert not result.modified
    assert sorted(op_types(new)) == sorted(["Transpose", "Transpose", "Pad", "Slice", "Constant", "Constant",
                                            "Constant", "Cast", "Reshape", "Dropout", "Reshape", "Opaque",
                                            "Reshape"])
    assert result.stats["refused"] == {"Dropout: mask output is used": 1, "Reshape: input shape unknown": 1}


def test_dropout_training_mode_only_when_provably_off():
    model = model_from_text("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[8] x, bool train) => (float[8] y, float[8] z)
        <bool yes = {1}>
        {
            y = Dropout(x, , train)
            z = Dropout(x, , yes)
        }
    """)
    new, result = run_pass(EliminateIdentity, model)
    assert not result.modified and op_types(new) == ["Dropout", "Dropout"]
    assert result.stats["refused"] == {"Dropout: training_mode is not a constant": 1,
                                       "Dropout: training_mode is true": 1}


def test_old_opset_forms():
    model = model_from_text("""
        <ir_version: 4, opset_import: ["" : 9]>
        g (float[2,3] x) => (float[2,3] y)
        {
            a = Dropout<ratio = 0.5>(x)
            b = Pad<pads = [0, 0, 0, 0]>(a)
            c = Cast<to = 1>(b)
            y = Relu(c)
        }
    """)
    new, result = run_pass(EliminateIdentity, model)
    assert op_types(new) == ["Relu"]
    assert result.stats["nodes_removed"] == 3
    _check_equivalent(model, new)


def test_graph_output_name_moves_to_the_producer():
    model = model_from_text("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[3] x) => (float[3] y)
        {
            a = Relu(x)
            y = Identity(a)
        }
    """)
    new, result = run_pass(EliminateIdentity, model)
    assert op_types(new) == ["Relu"] and result.stats["identity_removed"] == 1
    assert [t.name for t in new.graph.outputs] == ["y"]
    assert new.graph.nodes[0].outputs[0] is new.graph.outputs[0]
    _check_equivalent(model, new)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("y = Identity(x)", "graph output fed by an input, constant or outer-scope tensor"),
        ("a = Relu(x)\n y = Identity(a)\n z = Neg(a)", "graph output fed by a tensor that is read elsewhere"),
        ("z = Relu(x)\n y = Identity(z)", "graph output fed by another graph output"),
        ("y = Identity(w)", "graph output fed by an input, constant or outer-scope tensor"),
    ],
)
def test_graph_output_cases_that_must_keep_the_identity(body, reason):
    model = model_from_text(f"""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[3] x) => (float[3] y, float[3] z)
        <float[3] w = {{1, 2, 3}}>
        {{
            {body}
            {"" if "z =" in body else "z = Neg(x)"}
        }}
    """)
    new, result = run_pass(EliminateIdentity, model)
    assert not result.modified
    assert "Identity" in op_types(new)
    assert result.stats["refused"] == {f"Identity: {reason}": 1}
    assert [t.name for t in new.graph.outputs] == ["y", "z"]


def test_subgraphs():
    model = model_from_text("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[3] x, bool c) => (float[3] y)
        {
            xi = Identity(x)
            y = If (c) <
                then_branch = then_g () => (float[3] t) {
                    t1 = Neg(xi)
                    t2 = Identity(t1)
                    t = Identity(t2)
                },
                else_branch = else_g () => (float[3] e) { e = Identity(x) }
            >
        }
    """)
    new, result = run_pass(EliminateIdentity, model)
    if_node = new.graph.nodes[0]
    assert op_types(new) == ["If"]
    then_g, else_g = if_node.attrs["then_branch"], if_node.attrs["else_branch"]
    assert [(n.op, [t.name for t in n.inputs], [t.name for t in n.outputs]) for n in then_g.nodes] == [
        ("Neg", ["x"], ["t"])
    ]
    # A branch output must be produced inside its branch: this Identity stays.
    assert [n.op for n in else_g.nodes] == ["Identity"]
    assert result.stats["nodes_removed"] == 3
    feeds = [{"x": np.array([1, -2, 3], np.float32), "c": np.array(flag)} for flag in (True, False)]
    _check_equivalent(model, new, feeds)
    assert not run_pass(EliminateIdentity, new)[1].modified


def test_local_functions():
    model = model_from_text("""
        <ir_version: 8, opset_import: ["" : 17, "local" : 1]>
        g (float[2,3] x) => (float[3,2] y)
        {
            y = local.f(x)
        }
        <domain: "local", opset_import: ["" : 17]>
        f (a) => (b) {
            a1 = Identity(a)
            a2 = Transpose<perm = [0, 1]>(a1)
            a3 = Cast<to = 1>(a2)
            b = Transpose<perm = [1, 0]>(a3)
        }
    """)
    new, result = run_pass(EliminateIdentity, model)
    function = new.graph.functions[0]
    # The Cast stays: function bodies carry no types, so "same type" cannot be proven there.
    assert [(n.op, [t.name for t in n.inputs]) for n in function.nodes] == [("Cast", ["a"]), ("Transpose", ["a3"])]
    assert result.stats["nodes_removed"] == 2
    _check_equivalent(model, new)
    assert not run_pass(EliminateIdentity, new)[1].modified


def test_reshape_noop_rule():
    assert reshape_is_noop(("N", 3, 4), [0, 3, -1], allowzero=False)
    assert reshape_is_noop((2, 3), [2, 3], allowzero=False)
    assert reshape_is_noop(("N", 3), [-1, 3], allowzero=False)
    assert not reshape_is_noop(("N", 3), [-1, 3, 1], allowzero=False)
    assert not reshape_is_noop(("N", "M"), [-1, 0], allowzero=True)  # with allowzero, 0 means a zero dim
    assert reshape_is_noop(("N", 0), [-1, 0], allowzero=True)
    assert not reshape_is_noop(("N", 3), [2, 3], allowzero=False)  # N may not be 2
    assert not reshape_is_noop(("N", "M"), [-1, -1], allowzero=False)
    assert not reshape_is_noop(None, [2, 3], allowzero=False)
