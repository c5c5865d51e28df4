"""sparsify: 2:4 along the reduction axis (reported by check --target tensorrt), SparseGPT, sparse storage."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from onnxopt.cli.check import check
from onnxopt.model_io import load, save
from onnxopt.passes.pruning.sparsify import Sparsify
from onnxopt.passes.pruning.sparsity import nm_mask, sparsegpt
from onnxopt.target_rules import nm_group_fraction, structured_sparsity
from tests.passes.pruning.graphs import decisions, initializers, random_mlp, relative_error, run, token_feeds
from tests.util import model_from_text, outputs


def test_two_four_masks_keep_two_of_every_four_rows_per_column():
    scores = np.arange(24, dtype=float).reshape(8, 3)[::-1]
    keep = nm_mask(scores, 2, 4)
    assert keep.sum(axis=0).tolist() == [4, 4, 4]
    assert nm_group_fraction(np.where(keep, 1.0, 0.0), 2, 4) == 1.0
    assert nm_group_fraction(np.ones((8, 3)), 2, 4) == 0.0


def test_mlp_weights_satisfy_two_four_along_the_reduction_axis_and_check_reports_them(tmp_path):
    model = random_mlp(k=16, hidden=32, n=16)
    sparse, result = run(Sparsify, model, None, pattern="2:4", min_weight_elements=16)
    assert result.modified and result.stats["sparsified"] == 2
    for record in decisions(result, "sparsified"):
        assert record["satisfies_pattern"] and record["sparsity"] == pytest.approx(0.5)
    entries = structured_sparsity(sparse)
    assert [entry.satisfies for entry in entries] == [True, True]
    assert not any(entry.satisfies for entry in structured_sparsity(model))
    path = tmp_path / "sparse.onnx"
    save(sparse, path)
    answer = CliRunner().invoke(check, ["--target", "tensorrt", str(path)])
    assert answer.exit_code == 0, answer.output
    assert "2 of 2 weights satisfy 2:4" in answer.output


CONV = """
<ir_version: 8, opset_import: ["" : 17]>
conv (float[N, 8, 6, 6] x) => (float[N, 4, 6, 6] y)
<{weights}>
{{
    y = Conv<pads = [1, 1, 1, 1]>(x, w)
}}
"""


def test_conv_kernels_are_two_four_over_input_channels_at_each_position():
    rng = np.random.default_rng(3)
    model = model_from_text(CONV.format(weights=initializers(w=rng.standard_normal((4, 8, 3, 3)).astype(np.float32))))
    sparse, _ = run(Sparsify, model, None, pattern="2:4", min_weight_elements=16)
    kernel = np.asarray(sparse.graph.nodes[0].inputs[1].values)
    assert (kernel != 0).reshape(4, 2, 4, 3, 3).sum(axis=2).max() == 2  # every 4 input channels, 2 non-zeros
    (entry,) = structured_sparsity(sparse)
    assert entry.satisfies and entry.reduction_axis == 1


def test_sparsegpt_beats_magnitude_and_wanda_on_unseen_data():
    model = random_mlp(seed=6, k=32, hidden=64, n=16)
    scale = np.geomspace(0.1, 4.0, 32).astype(np.float32)  # unequal feature scales, as real activations have

    def scaled(feeds):
        return [{"x": feed["x"] * scale} for feed in feeds]

    calibration = scaled(token_feeds(model, 16, seed=2, batch=4))
    unseen = scaled(token_feeds(model, 6, seed=77, batch=4))
    errors = {}
    for method in ("magnitude", "wanda", "sparsegpt"):
        sparse, result = run(Sparsify, model, calibration, pattern="2:4", method=method, min_weight_elements=16)
        errors[method] = relative_error(model, sparse, unseen)
    assert errors["sparsegpt"] < errors["wanda"] < errors["magnitude"], errors
    records = decisions(result, "sparsified")
    assert all(record["error_after_recovery"] < record["error_before_recovery"] for record in records)


def test_sparsegpt_updates_keep_the_pattern():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((256, 16)) @ rng.standard_normal((16, 16))
    weights = rng.standard_normal((16, 6))
    result = sparsegpt(weights, x.T @ x, (2, 4), 0.5)
    assert nm_group_fraction(result, 2, 4) == 1.0 and np.mean(result == 0) == pytest.approx(0.5)


def test_sparse_storage_is_used_only_where_it_is_smaller(tmp_path):
    model = random_mlp(k=16, hidden=64, n=16)
    dense, _ = run(Sparsify, model, None, pattern="unstructured", ratio=0.8, min_weight_elements=16)
    stored, result = run(Sparsify, model, None, pattern="unstructured", ratio=0.8, min_weight_elements=16,
                         storage="auto")
    assert result.stats["stored_weight_bytes"] < result.stats["dense_weight_bytes"]
    dense_path, sparse_path = tmp_path / "dense.onnx", tmp_path / "sparse.onnx"
    save(dense, dense_path)
    save(stored, sparse_path)
    assert len(onnx.load(str(sparse_path)).graph.sparse_initializer) == 2
    assert sparse_path.stat().st_size < dense_path.stat().st_size
    feed = token_feeds(model, 1)[0]
    np.testing.assert_array_equal(outputs(sparse_path, feed)["y"], outputs(dense_path, feed)["y"])
    _, half = run(Sparsify, model, None, pattern="unstructured", ratio=0.5, min_weight_elements=16, storage="auto")
    assert half.stats["stored_weight_bytes"] == half.stats["dense_weight_bytes"]  # 50 %: dense is smaller
    assert load(sparse_path) is not None


def test_weights_that_cannot_hold_the_pattern_are_skipped_with_a_reason():
    rng = np.random.default_rng(1)
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    odd (float[N, 6] x) => (float[N, 8] y)
    <{weights}>
    {{
        y = MatMul(x, w)
    }}
    """
    model = model_from_text(text.format(weights=initializers(w=rng.standard_normal((6, 8)).astype(np.float32))))
    _, result = run(Sparsify, model, None, pattern="2:4", min_weight_elements=16)
    assert not result.modified
    (record,) = decisions(result, "skipped")
    assert "not a multiple of 4" in record["reason"]
