"""prune-layers: residual blocks and transformer layers found, ranked by influence, bypassed consistently."""

from __future__ import annotations

import numpy as np
import pytest

from models.cache import cached_model
from models.digits import model_path
from models.evaluate import sample_feeds
from onnxopt.model_io import load
from onnxopt.pass_api import PassContext
from onnxopt.passes.pruning.blocks import find_blocks
from onnxopt.passes.pruning.prune_layers import PruneLayers
from onnxopt.shape_info import infer_tensor_infos
from tests.passes.pruning.graphs import check_full, decisions, initializers, relative_error, run
from tests.util import assert_bit_exact, model_from_text, outputs

RESIDUAL_STACK = """
<ir_version: 8, opset_import: ["" : 17]>
stack (float[N, 6, 8] x) => (float[N, 6, 8] y)
<{weights}>
{{
    x0 = MatMul(x, w0)
    h1 = MatMul(x0, a1)
    r1 = Relu(h1)
    f1 = MatMul(r1, b1)
    s1 = Add(x0, f1)
    h2 = MatMul(s1, a2)
    r2 = Relu(h2)
    f2 = MatMul(r2, b2)
    s2 = Add(s1, f2)
    h3 = MatMul(s2, a3)
    r3 = Relu(h3)
    f3 = MatMul(r3, b3)
    s3 = Add(s2, f3)
    y = MatMul(s3, w4)
}}
"""


def residual_stack(zero_block: int | None = None, scales=(1.0, 1.0, 1.0)):
    rng = np.random.default_rng(8)
    weights = {"w0": rng.standard_normal((8, 8)), "w4": rng.standard_normal((8, 8))}
    for index in (1, 2, 3):
        weights[f"a{index}"] = rng.standard_normal((8, 16)) * 0.5
        weights[f"b{index}"] = rng.standard_normal((16, 8)) * 0.5 * scales[index - 1]
    if zero_block is not None:
        weights[f"b{zero_block}"] = np.zeros((16, 8))
    return model_from_text(RESIDUAL_STACK.format(
        weights=initializers(**{k: v.astype(np.float32) for k, v in weights.items()})))


def feeds(count: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal((2, 6, 8)).astype(np.float32)} for _ in range(count)]


def test_residual_blocks_are_found_between_cuts():
    model = residual_stack()
    blocks = find_blocks(model.graph, infer_tensor_infos(model), "block")
    assert [(block.start.name, block.end.name) for block in blocks if not block.reason] == [
        ("x0", "s1"), ("s1", "s2"), ("s2", "s3")]


def test_a_block_that_adds_exactly_zero_goes_first_and_changes_no_bit():
    model = residual_stack(zero_block=2)
    pruned, result = run(PruneLayers, model, feeds(4), count=1, unit="block")
    removed = decisions(result, "removed")
    assert [(entry["start"], entry["end"]) for entry in removed] == [("s1", "s2")]
    assert removed[0]["block_influence"] == pytest.approx(0.0, abs=1e-7)
    check_full(pruned)
    assert sum(node.op == "MatMul" for node in pruned.graph.nodes) == 6
    for feed in feeds(2, seed=5):
        assert_bit_exact(outputs(model, feed), outputs(pruned, feed))


def test_the_least_influential_blocks_go_and_an_error_budget_stops_the_rest():
    model = residual_stack(scales=(1.0, 0.05, 0.5))
    pruned, result = run(PruneLayers, model, feeds(4), count=2, unit="block")
    removed = {entry["start"] for entry in decisions(result, "removed")}
    assert removed == {"s1", "s2"}  # the two smallest residual branches
    influences = {entry["start"]: entry["block_influence"] for entry in decisions(result)
                  if "block_influence" in entry}
    assert influences["s1"] < influences["s2"] < influences["x0"]
    _, loose = run(PruneLayers, model, feeds(4), count=0, unit="block", max_error=10.0)
    first, second = loose.stats["budget_errors"][:2]  # output error with the 1 and the 2 least influential gone
    assert first < second
    _, budgeted = run(PruneLayers, model, feeds(4), count=0, unit="block", max_error=(first + second) / 2)
    assert [entry["start"] for entry in decisions(budgeted, "removed")] == ["s1"]
    assert any("stopped at 1" in note for note in budgeted.notes)
    assert relative_error(model, pruned, feeds(2, seed=9)) > 0


def test_bert_loses_one_whole_layer_with_consistent_shapes():
    model = load(cached_model("bert", "tiny"))
    data = sample_feeds("bert", "tiny", batch_size=2, count=3)
    pruned = model.copy()
    result = PruneLayers(PruneLayers.make_options({"count": 1, "measure_latency": False})).run(
        pruned, PassContext(data=data))
    (removed,) = decisions(result, "removed")
    assert removed["op"] == "layer"
    check_full(pruned)
    assert sum(node.op == "Softmax" for node in pruned.graph.nodes) == 1
    assert outputs(pruned, data[0])["last_hidden_state"].shape == outputs(model, data[0])["last_hidden_state"].shape


def test_plain_convolutions_without_residual_are_not_bypassed():
    model = load(model_path())
    _, result = run(PruneLayers, model, None, count=1)
    assert not result.modified
    reasons = {entry["reason"] for entry in decisions(result, "skipped")}
    assert any("not a residual block" in reason for reason in reasons)
    assert any("changes the shape" in reason for reason in reasons)


def test_a_block_that_ends_at_a_graph_output_keeps_the_output_name():
    text = RESIDUAL_STACK.replace("    s3 = Add(s2, f3)\n    y = MatMul(s3, w4)\n", "    y = Add(s2, f3)\n")
    rng = np.random.default_rng(4)
    weights = {"w0": rng.standard_normal((8, 8))}
    for index in (1, 2, 3):
        weights[f"a{index}"] = rng.standard_normal((8, 16))
        weights[f"b{index}"] = rng.standard_normal((16, 8)) * (0.01 if index == 3 else 1.0)
    model = model_from_text(text.format(weights=initializers(**{k: v.astype(np.float32) for k, v in weights.items()})))
    pruned, result = run(PruneLayers, model, feeds(3), count=1, unit="block")
    assert [entry["end"] for entry in decisions(result, "removed")] == ["y"]
    check_full(pruned)
    assert [tensor.name for tensor in pruned.graph.outputs] == ["y"]
    probe = model.copy()
    s2 = next(tensor for tensor in probe.graph.tensors().values() if tensor.name == "s2")
    s2.dtype = np.float32
    probe.graph.outputs = [s2]
    feed = feeds(1, seed=3)[0]
    np.testing.assert_array_equal(outputs(pruned, feed)["y"], outputs(probe, feed)["s2"])
