"""dedup-initializers: golden graphs, large and external weights, subgraphs, functions."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.numpy_helper
import onnx.parser
import onnx_graphsurgeon as gs
import pytest

import onnxopt.external_data
from onnxopt.external_data import ExternalLazyValues
from onnxopt.model_io import from_proto, load, save
from onnxopt.passes.cleanup import dedup_initializers
from onnxopt.passes.cleanup.dedup_initializers import DedupInitializers
from tests.util import assert_bit_exact, model_from_text, outputs, random_feed_for, run_pass

SIX = "{1, 2, 3, 4, 5, 6}"


def _constant_inputs(graph: gs.Graph) -> list[str]:
    return [t.name for node in graph.nodes for t in node.inputs if isinstance(t, gs.Constant)]


def _reads(graph: gs.Graph) -> dict[str, list[str]]:
    """What each node reads, keyed by its first output (node order may change on import)."""
    return {node.outputs[0].name: [t.name for t in node.inputs] for node in graph.nodes}


def _check_equivalent(before, after, feeds=None) -> None:
    for feed in feeds or [random_feed_for(before, seed) for seed in range(2)]:
        assert_bit_exact(outputs(before, feed), outputs(after, feed))


def test_equal_initializers_merge_and_different_ones_stay():
    model = model_from_text(f"""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[2,3] x) => (float[2,3] y)
        <float[2,3] w1 = {SIX}, float[2,3] w2 = {SIX}, float[2,3] w3 = {{1, 2, 3, 4, 5, 7}},
         int64[2] s = {{2, 3}}, float[6] flat = {SIX}>
        {{
            a = Add(x, w1)
            b = Mul(a, w2)
            c = Sub(b, w3)
            r = Reshape(flat, s)
            y = Add(c, r)
        }}
    """)
    new, result = run_pass(DedupInitializers, model)
    assert result.modified
    # w2 equals w1; w3 differs in one element; flat has the same bytes as w1 but another shape.
    assert _reads(new.graph) == {"a": ["x", "w1"], "b": ["a", "w1"], "c": ["b", "w3"], "r": ["flat", "s"],
                                 "y": ["c", "r"]}
    assert result.stats["initializers_merged"] == 1
    assert result.stats["bytes_saved"] == 24
    _check_equivalent(model, new)


def test_idempotent():
    model = model_from_text(f"""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[2,3] x) => (float[2,3] y)
        <float[2,3] w1 = {SIX}, float[2,3] w2 = {SIX}, float[2,3] w3 = {SIX}>
        {{
            a = Add(x, w1)
            b = Mul(a, w2)
            y = Sub(b, w3)
        }}
    """)
    once, first = run_pass(DedupInitializers, model)
    twice, second = run_pass(DedupInitializers, once)
    assert first.stats["initializers_merged"] == 2
    assert not second.modified and second.stats["initializers_merged"] == 0
    assert _reads(twice.graph) == {"a": ["x", "w1"], "b": ["a", "w1"], "y": ["b", "w1"]}


def test_negative_nothing_equal_is_unchanged():
    model = model_from_text("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[3] x) => (float[3] y)
        <float[3] w1 = {1, 2, 3}, float[3] w2 = {1, 2, -3}, double[3] w3 = {1, 2, 3}, float[3] w4 = {-0.0, 0, 0},
         float[3] w5 = {0, 0, 0}>
        {
            a = Add(x, w1)
            b = Mul(a, w2)
            c = Cast<to = 11>(b)
            d = Add(c, w3)
            e = Cast<to = 1>(d)
            f = Add(e, w4)
            y = Add(f, w5)
        }
    """)
    new, result = run_pass(DedupInitializers, model)
    assert not result.modified
    assert sorted(_constant_inputs(new.graph)) == ["w1", "w2", "w3", "w4", "w5"]  # -0.0 and 0.0 differ in bits


def test_hash_collision_never_merges(monkeypatch):
    """Equal samples and hashes alone must not merge: the bytes are always compared."""
    monkeypatch.setattr(dedup_initializers, "content_sample", lambda constant: b"same")
    monkeypatch.setattr(dedup_initializers, "content_digest", lambda constant: "same")
    model = model_from_text("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[3] x) => (float[3] y)
        <float[3] w1 = {1, 2, 3}, float[3] w2 = {1, 2, 4}, float[3] w3 = {1, 2, 3}>
        {
            a = Add(x, w1)
            b = Add(a, w2)
            y = Add(b, w3)
        }
    """)
    new, result = run_pass(DedupInitializers, model)
    assert _reads(new.graph) == {"a": ["x", "w1"], "b": ["a", "w2"], "y": ["b", "w1"]}
    assert result.stats["hash_matches_with_different_bytes"] >= 1
    _check_equivalent(model, new)


def test_graph_output_initializer_keeps_its_name():
    model = model_from_text("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[3] x) => (float[3] y, float[3] w2)
        <float[3] w1 = {1, 2, 3}, float[3] w2 = {1, 2, 3}>
        {
            y = Add(x, w1)
        }
    """)
    new, result = run_pass(DedupInitializers, model)
    assert result.stats["initializers_merged"] == 1
    assert [t.name for t in new.graph.outputs] == ["y", "w2"]
    assert _constant_inputs(new.graph) == ["w2"]  # the output survived, the other one went
    _check_equivalent(model, new)


def test_initializer_that_is_also_a_graph_input_is_never_merged():
    """An initializer listed as a graph input is a default the caller may override: merging
    an equal constant into it (or it into one) would change what the model computes then."""
    model = model_from_text("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[3] x, float[3] w1) => (float[3] y)
        <float[3] w1 = {1, 2, 3}, float[3] w2 = {1, 2, 3}, float[3] w3 = {1, 2, 3}>
        {
            a = Add(x, w1)
            b = Mul(a, w2)
            y = Sub(b, w3)
        }
    """)
    assert model.initializer_inputs == ["w1"]
    new, result = run_pass(DedupInitializers, model)
    assert _reads(new.graph) == {"a": ["x", "w1"], "b": ["a", "w2"], "y": ["b", "w2"]}  # w3 into w2 only
    assert result.stats["initializers_merged"] == 1
    override = {"x": np.ones(3, np.float32), "w1": np.full(3, 5.0, np.float32)}
    assert_bit_exact(outputs(model, override), outputs(new, override))


def test_identical_constant_nodes_merge_and_output_name_survives():
    model = model_from_text("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[3] x) => (float[3] y, float[3] k3)
        {
            k1 = Constant<value = float[3] {1, 2, 3}>()
            k2 = Constant<value = float[3] {1, 2, 3}>()
            a = Add(x, k1)
            y = Mul(a, k2)
            k3 = Constant<value = float[3] {1, 2, 3}>()
            k4 = Constant<value_floats = [1.0, 2.0, 3.0]>()
            k5 = Constant<value_floats = [1.0, 2.0, 3.0]>()
            z = Add(k4, k5)
        }
    """)
    new, result = run_pass(DedupInitializers, model)
    constants = sorted(node.outputs[0].name for node in new.graph.nodes if node.op == "Constant")
    # k1, k2, k3 are one value: k3 is a graph output, so its node is the one kept.
    assert constants == ["k3", "k4"]
    reads = _reads(new.graph)
    assert (reads["a"], reads["y"], reads["z"]) == (["x", "k3"], ["a", "k3"], ["k4", "k4"])
    assert result.stats["constant_nodes_merged"] == 3
    _check_equivalent(model, new)
    assert not run_pass(DedupInitializers, new)[1].modified


def test_subgraph_constants_merge_into_visible_ones_only():
    model = model_from_text(f"""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[2,3] x, bool c) => (float[2,3] y, float[2,3] z)
        <float[2,3] w1 = {SIX}>
        {{
            z = Mul(x, w1)
            y = If (c) <
                then_branch = then_g () => (float[2,3] t) <float[2,3] wt = {SIX}> {{ t = Add(x, wt) }},
                else_branch = else_g () => (float[2,3] e) <float[2,3] we = {{6, 5, 4, 3, 2, 1}},
                                                           float[2,3] we2 = {{6, 5, 4, 3, 2, 1}}> {{
                    e1 = Sub(x, we)
                    e = Mul(e1, we2)
                }}
            >
        }}
    """)
    new, result = run_pass(DedupInitializers, model)
    if_node = new.graph.nodes[1]
    then_g, else_g = if_node.attrs["then_branch"], if_node.attrs["else_branch"]
    assert _constant_inputs(then_g) == ["w1"]  # the branch's copy of w1 reads the outer one
    assert _constant_inputs(else_g) == ["we", "we"]  # merged inside the branch, not across branches
    assert result.stats["initializers_merged"] == 2
    _check_equivalent(model, new, [{"x": np.arange(6, dtype=np.float32).reshape(2, 3), "c": np.array(flag)}
                                   for flag in (True, False)])
    assert not run_pass(DedupInitializers, new)[1].modified


def test_local_function_constants_merge():
    model = model_from_text("""
        <ir_version: 8, opset_import: ["" : 17, "local" : 1]>
        g (float[3] x) => (float[3] y)
        {
            y = local.f(x)
        }
        <domain: "local", opset_import: ["" : 17]>
        f (a) => (b) {
            k1 = Constant<value = float[1] {2.0}>()
            k2 = Constant<value = float[1] {2.0}>()
            m = Mul(a, k1)
            b = Add(m, k2)
        }
    """)
    new, result = run_pass(DedupInitializers, model)
    function = new.graph.functions[0]
    assert [node.op for node in function.nodes] == ["Constant", "Mul", "Add"]
    assert [t.name for t in function.nodes[2].inputs] == ["m", "k1"]
    assert result.stats["constant_nodes_merged"] == 1
    _check_equivalent(model, new)
    assert not run_pass(DedupInitializers, new)[1].modified


def _matmul_model(weights: dict[str, np.ndarray]) -> onnx.ModelProto:
    """x [2, 1024] times each [1024, N] weight, one output per weight."""
    lines = "\n".join(f"y{i} = MatMul(x, {name})" for i, name in enumerate(weights))
    outs = ", ".join(f"float[2,{value.shape[1]}] y{i}" for i, value in enumerate(weights.values()))
    proto = onnx.parser.parse_model(f"""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[2,1024] x) => ({outs}) {{
            {lines}
        }}
    """)
    proto.graph.initializer.extend(onnx.numpy_helper.from_array(value, name) for name, value in weights.items())
    return proto


def test_duplicated_large_weights_saved_file_shrinks_by_one_copy(tmp_path):
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((1024, 1024), dtype=np.float32)
    different = weight.copy()
    different[512, 7] = np.nextafter(different[512, 7], np.float32(np.inf))  # one element, one ulp
    model = from_proto(_matmul_model({"w_a": weight, "w_b": weight.copy(), "w_c": different}))
    save(model, tmp_path / "before.onnx")
    new, result = run_pass(DedupInitializers, model)
    save(new, tmp_path / "after.onnx")

    assert result.stats["initializers_merged"] == 1
    assert result.stats["bytes_saved"] == 4 * 1024 * 1024
    assert _reads(new.graph) == {"y0": ["x", "w_a"], "y1": ["x", "w_a"], "y2": ["x", "w_c"]}
    reloaded = load(tmp_path / "after.onnx")
    assert sorted(t.name for t in reloaded.graph.tensors().values() if isinstance(t, gs.Constant)) == ["w_a", "w_c"]
    drop = (tmp_path / "before.onnx").stat().st_size - (tmp_path / "after.onnx").stat().st_size
    assert 4 * 1024 * 1024 <= drop < 4 * 1024 * 1024 + 4096
    feed = {"x": rng.standard_normal((2, 1024), dtype=np.float32)}
    assert_bit_exact(outputs(tmp_path / "before.onnx", feed), outputs(tmp_path / "after.onnx", feed))


def test_same_shaped_weights_with_different_ends_are_never_read_in_full():
    rng = np.random.default_rng(2)
    weights = {f"w{i}": rng.standard_normal((1024, 64)).astype(np.float32) for i in range(3)}  # 256 KiB each
    _, result = run_pass(DedupInitializers, from_proto(_matmul_model(weights)))
    assert not result.modified
    assert result.stats["tensors_hashed"] == 0  # told apart by their first and last bytes


def test_external_data_is_streamed_and_compared(tmp_path, monkeypatch):
    # Tiny chunks force a multi-chunk comparison with chunk borders that do not line up.
    monkeypatch.setattr(onnxopt.external_data, "CHUNK_BYTES", 1000)
    rng = np.random.default_rng(1)
    weight = rng.standard_normal((1024, 8)).astype(np.float32)  # 32 KiB each: written as external data
    different = weight.copy()
    different[1023, 7] += 1
    source = from_proto(_matmul_model({"w_a": weight, "w_b": weight.copy(), "w_c": different}))
    save(source, tmp_path / "in.onnx", external_data=True)
    loaded = load(tmp_path / "in.onnx")
    assert loaded.had_external_data

    new, result = run_pass(DedupInitializers, loaded)
    assert result.stats["initializers_merged"] == 1
    # Nothing was loaded into the graph: the survivors are still lazy external tensors.
    survivors = [t for node in new.graph.nodes for t in node.inputs if isinstance(t, gs.Constant)]
    assert sorted(t.name for t in survivors) == ["w_a", "w_a", "w_c"]
    assert all(isinstance(t._values, ExternalLazyValues) for t in survivors)

    (tmp_path / "out").mkdir()
    save(new, tmp_path / "out" / "out.onnx")
    assert (tmp_path / "out" / "out.onnx.data").stat().st_size < (tmp_path / "in.onnx.data").stat().st_size
    feed = {"x": rng.standard_normal((2, 1024), dtype=np.float32)}
    assert_bit_exact(outputs(tmp_path / "in.onnx", feed), outputs(tmp_path / "out" / "out.onnx", feed))


@pytest.mark.parametrize("dtype", [np.float16, np.int8, np.bool_, np.int64])
def test_other_element_types(dtype):
    values = np.array([[1, 0, 1], [0, 1, 1]]).astype(dtype)
    proto = onnx.parser.parse_model("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[2,3] x) => (float[2,3] y, float[2,3] z) {
            cx = Cast<to = 9>(c1)
            y = Where(cx, x, x)
            cy = Cast<to = 9>(c2)
            z = Where(cy, x, x)
        }
    """)
    proto.graph.initializer.extend([onnx.numpy_helper.from_array(values, "c1"),
                                    onnx.numpy_helper.from_array(values.copy(), "c2")])
    model = from_proto(proto)
    new, result = run_pass(DedupInitializers, model)
    assert result.stats["initializers_merged"] == 1
    _check_equivalent(model, new)
