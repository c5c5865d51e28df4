"""prune-neurons: exact removal of zero units, recovery from the teacher, counts, budgets, real models."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from onnx_graphsurgeon.ir.tensor import LazyValues

from models.digits import CALIBRATION_PATH, model_path, top1_accuracy
from onnxopt.data import make_feeds
from onnxopt.model_io import load, save, to_proto
from onnxopt.pass_api import PassContext
from onnxopt.passes.pruning.prune_neurons import PruneNeurons
from onnxopt.passes.pruning.sliced_values import SlicedLazyValues
from tests.passes.pruning.graphs import (
    check_full,
    decisions,
    initializers,
    mlp,
    random_mlp,
    relative_error,
    run,
    token_feeds,
)
from tests.util import assert_bit_exact, model_from_text, outputs


def weight_shapes(model) -> dict[str, tuple[int, ...]]:
    return {node.name: tuple(node.inputs[1].shape) for node in model.graph.nodes if node.op == "MatMul"}


@pytest.mark.parametrize("options", [{"only_zero": True}, {"ratio": 3 / 16, "importance": "magnitude"}])
def test_units_whose_weights_are_zero_are_removed_bit_identically(options):
    model = random_mlp(zero_units=(2, 7, 11))
    pruned, result = run(PruneNeurons, model, None, **options)
    assert result.modified
    assert weight_shapes(pruned) == {"up": (8, 13), "down": (13, 8)}
    check_full(pruned)
    for feed in token_feeds(model, 3, seed=4):
        assert_bit_exact(outputs(model, feed), outputs(pruned, feed))
    (record,) = decisions(result, "pruned")
    assert record["removed_neurons"] == [2, 7, 11] and "bit-identical" in record["reason"]


def test_only_zero_leaves_a_model_without_zero_units_alone():
    pruned, result = run(PruneNeurons, random_mlp(), None, only_zero=True)
    assert not result.modified and weight_shapes(pruned) == {"up": (8, 16), "down": (16, 8)}


def test_without_data_weight_norms_rank_units_and_a_warning_says_so(caplog):
    with caplog.at_level(logging.WARNING):
        pruned, result = run(PruneNeurons, random_mlp(), None, ratio=0.5)
    assert result.stats["importance"] == "magnitude"
    assert any("no calibration DATA" in note for note in result.notes)
    assert any("no calibration DATA" in message for message in caplog.messages)
    assert weight_shapes(pruned) == {"up": (8, 8), "down": (8, 8)}
    assert decisions(result, "pruned")[0].get("recovered") is False


def test_recovery_from_the_teacher_beats_plain_removal_on_unseen_data():
    model = random_mlp(seed=3, k=8, hidden=32, n=8)
    calibration = token_feeds(model, 24, seed=1, batch=4)
    unseen = token_feeds(model, 8, seed=99, batch=4)
    recovered, result = run(PruneNeurons, model, calibration, ratio=0.5)
    plain, plain_result = run(PruneNeurons, model, calibration, ratio=0.5, reconstruct=False)
    (record,) = decisions(result, "pruned")
    assert record["recovered"] and record["error_after_recovery"] < record["error_before_recovery"]
    assert decisions(plain_result, "pruned")[0]["recovered"] is False
    # The same units go either way (importance does not depend on the refit); only the refit differs.
    assert record["removed_neurons"] == decisions(plain_result, "pruned")[0]["removed_neurons"]
    error_recovered, error_plain = relative_error(model, recovered, unseen), relative_error(model, plain, unseen)
    assert error_recovered < 0.8 * error_plain, (error_recovered, error_plain)


@pytest.mark.parametrize(("ratio", "round_to", "kept"), [(0.3, 1, 12), (0.3, 4, 12), (0.4, 4, 12), (0.5, 8, 8),
                                                          (0.95, 1, 1)])
def test_ratio_and_round_to_decide_how_many_units_stay(ratio, round_to, kept):
    _, result = run(PruneNeurons, random_mlp(), None, ratio=ratio, round_to=round_to)
    (record,) = decisions(result, "pruned")
    assert record["kept_units"] == kept and record["kept_units"] + record["removed_units"] == 16


def test_decisions_are_flat_json_records_with_skips_and_reasons():
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    two (float[N, 6, 8] x) => (float[N, 6, 8] y)
    <{weights}>
    {{
        [up] h = MatMul(x, w1)
        a = Relu(h)
        [down] y = MatMul(a, w2)
    }}
    """
    rng = np.random.default_rng(2)
    model = model_from_text(text.format(weights=initializers(w1=rng.standard_normal((8, 16)).astype(np.float32),
                                                             w2=rng.standard_normal((16, 8)).astype(np.float32))))
    _, result = run(PruneNeurons, model, None, ratio=0.25)
    records = result.stats["decisions"]
    json.dumps(records)
    assert all(not isinstance(value, (dict, list)) or key.startswith("removed_") for record in records
               for key, value in record.items())
    skipped = decisions(result, "skipped")
    assert [entry["node"] for entry in skipped] == ["down"]
    assert "graph output" in skipped[0]["reason"]


def two_mlps(seed: int = 0):
    rng = np.random.default_rng(seed)
    weights = {name: (rng.standard_normal(shape) * 0.4).astype(np.float32) for name, shape in
               (("w1", (8, 16)), ("w2", (16, 8)), ("w3", (8, 16)), ("w4", (16, 8)))}
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    two (float[N, 6, 8] x) => (float[N, 6, 8] y)
    <{weights}>
    {{
        [a_up] h1 = MatMul(x, w1)
        r1 = Relu(h1)
        [a_down] o1 = MatMul(r1, w2)
        [b_up] h2 = MatMul(o1, w3)
        r2 = Tanh(h2)
        [b_down] y = MatMul(r2, w4)
    }}
    """
    return model_from_text(text.format(weights=initializers(**weights)))


def test_an_error_budget_gives_back_the_groups_that_cost_most():
    model = two_mlps()
    calibration = token_feeds(model, 12, seed=3)
    _, unconstrained = run(PruneNeurons, model, calibration, ratio=0.75, refit_scope="consumers")
    assert len(decisions(unconstrained, "pruned")) == 3  # both hidden layers and the 8 features between them
    pruned, result = run(PruneNeurons, model, calibration, ratio=0.75, max_error=1e-9, refit_scope="consumers")
    assert result.stats["output_error_all_pruned"] > 1e-9
    assert not result.modified and len(decisions(result, "kept")) == 3
    assert all("error budget" in entry["reason"] for entry in decisions(result, "kept"))
    assert weight_shapes(pruned) == weight_shapes(model)
    scores = sorted(entry["budget_score"] for entry in decisions(result, "kept"))
    budget = scores[1]  # the cheapest group alone fits, not all three
    _, some = run(PruneNeurons, model, calibration, ratio=0.75, max_error=budget, refit_scope="consumers")
    assert 0 < len(decisions(some, "pruned")) < 3 and some.stats["output_error"] <= budget


def test_later_layers_are_distilled_from_the_teacher_after_a_pruned_one():
    model = two_mlps(seed=4)
    calibration = token_feeds(model, 16, seed=5, batch=4)
    _, result = run(PruneNeurons, model, calibration, ratio=0.5, exclude=("b_.*",), refit_scope="all")
    records = {entry["node"]: entry for entry in result.stats["decisions"]}
    assert records["a_down"]["decision"] == "pruned"
    assert records["b_up"]["decision"] in ("refitted", "kept")
    assert "distilled from the teacher" in records["b_up"]["reason"]
    assert "heldout_error_after_recovery" in records["b_up"]


def test_the_digits_cnn_keeps_its_accuracy_with_half_of_its_channels():
    model = load(model_path())
    feeds = make_feeds(to_proto(model), CALIBRATION_PATH, 32)
    pruned = model.copy()
    result = PruneNeurons(PruneNeurons.make_options({"ratio": 0.5, "measure_latency": False})).run(
        pruned, PassContext(data=feeds, original=model))
    kept = {entry["node"]: entry["kept_units"] for entry in decisions(result, "pruned")}
    assert kept == {"/3/Conv": 12, "/7/Conv": 24, "/10/Gemm": 24, "/12/Gemm": 48}
    check_full(pruned)
    before, after = top1_accuracy(model), top1_accuracy(pruned)
    assert before - after <= 0.01, (before, after)


@pytest.mark.parametrize("name", ["bert"])
def test_tiny_transformers_prune_with_consistent_shapes(name):
    from models.cache import cached_model
    from models.evaluate import sample_feeds

    model = load(cached_model(name, "tiny"))
    feeds = sample_feeds(name, "tiny", batch_size=2, count=4)
    pruned = model.copy()
    result = PruneNeurons(PruneNeurons.make_options({"ratio": 0.5, "round_to": 8, "measure_latency": False,
                                                     "refit_scope": "residual"})).run(
        pruned, PassContext(data=feeds, original=model))
    assert len(decisions(result, "pruned")) == 2
    check_full(pruned)
    for feed in feeds[:2]:
        assert {k: v.shape for k, v in outputs(pruned, feed).items()} == {
            k: v.shape for k, v in outputs(model, feed).items()}
    assert relative_error(model, pruned, feeds) < 0.2


def test_weights_of_an_external_data_model_are_cut_lazily(tmp_path):
    model = random_mlp(hidden=64)
    source = tmp_path / "mlp.onnx"
    save(model, source, external_data=True)
    loaded = load(source)
    assert isinstance(loaded.graph.nodes[0].inputs[1]._values, LazyValues)
    pruned = loaded.copy()
    PruneNeurons(PruneNeurons.make_options({"ratio": 0.5, "measure_latency": False})).run(pruned, PassContext())
    up = next(node for node in pruned.graph.nodes if node.name == "up")
    assert isinstance(up.inputs[1]._values, SlicedLazyValues) and tuple(up.inputs[1].shape) == (8, 32)
    target = tmp_path / "pruned.onnx"
    save(pruned, target, external_data=True)
    feed = token_feeds(model, 1)[0]
    np.testing.assert_array_equal(outputs(target, feed)["y"], outputs(pruned, feed)["y"])


def test_global_scope_spreads_the_ratio_over_groups_by_measured_cost():
    model = two_mlps(seed=1)
    calibration = token_feeds(model, 8, seed=2)
    _, result = run(PruneNeurons, model, calibration, ratio=0.5, scope="global", refit_scope="consumers")
    allocation = result.stats["allocation"]
    assert sum(entry["removed"] for entry in allocation.values()) == 20  # half of 16 + 8 + 16 units
    for entry in allocation.values():
        errors = [error for _, error in entry["cost_curve"]]
        assert errors == sorted(errors) and entry["removed"] <= 0.9 * entry["units"]
    removed = {entry["node"]: entry["removed_units"] for entry in decisions(result, "pruned")}
    assert sorted(removed.values()) == sorted(entry["removed"] for entry in allocation.values() if entry["removed"])


def test_obs_importance_removes_units_the_full_refit_can_do_without():
    # Units 4 and 9 duplicate units 1 and 2 (same input weights) and carry the largest output weights: weight
    # norms keep them, but with one of each pair gone the least-squares refit hands its output weights to the
    # twin, so the outputs stay (all but) exact. importance=obs sees that cost ahead; per-unit scales cannot.
    rng = np.random.default_rng(5)
    w1 = (rng.standard_normal((8, 16)) * 0.5).astype(np.float32)
    b1 = (rng.standard_normal(16) * 0.1).astype(np.float32)
    w2 = (rng.standard_normal((16, 8)) * 0.3).astype(np.float32)
    w1[:, 4], w1[:, 9], b1[4], b1[9] = w1[:, 1], w1[:, 2], b1[1], b1[2]
    w2[[1, 2, 4, 9]] *= 4.0
    model = mlp(w1, b1, w2, (rng.standard_normal(8) * 0.1).astype(np.float32))
    calibration = token_feeds(model, 24, seed=1, batch=4)
    unseen = token_feeds(model, 8, seed=99, batch=4)
    pruned, result = run(PruneNeurons, model, calibration, ratio=2 / 16, importance="obs")
    (record,) = decisions(result, "pruned")
    assert result.stats["importance"] == "obs"
    assert sorted(record["removed_neurons"]) in ([1, 2], [1, 9], [2, 4], [4, 9])
    assert record["recovery"].startswith("full")
    assert relative_error(model, pruned, unseen) < 0.01
    for importance in ("error", "magnitude"):
        other, _ = run(PruneNeurons, model, calibration, ratio=2 / 16, importance=importance)
        assert relative_error(model, other, unseen) > 10 * relative_error(model, pruned, unseen), importance
    check_full(pruned)
