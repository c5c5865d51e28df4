"""prune-heads: zero heads go bit-identically; fused QKV Split sizes, Reshape targets and num_heads follow."""

from __future__ import annotations

import numpy as np
import onnx.numpy_helper

from models.cache import cached_model
from models.evaluate import sample_feeds
from onnxopt.model_io import load
from onnxopt.pass_api import PassContext
from onnxopt.passes.pruning.prune_heads import PruneHeads
from tests.passes.pruning.graphs import check_full, decisions, initializers, relative_error, run
from tests.passes.pruning.test_coupling import attention_model
from tests.util import assert_bit_exact, model_from_text, outputs

RNG = np.random.default_rng(11)


def test_heads_whose_output_projection_is_zero_are_removed_bit_identically():
    model = attention_model(zero_heads=(1, 2))
    pruned, result = run(PruneHeads, model, None, count=2)
    (record,) = decisions(result, "pruned")
    assert record["removed_heads"] == [1, 2] and "bit-identical" in record["reason"]
    proto = check_full(pruned)
    shapes = {tuple(onnx.numpy_helper.to_array(init).tolist()) for init in proto.graph.initializer
              if init.data_type == onnx.TensorProto.INT64}
    assert shapes == {(0, 0, 2, 2), (0, 0, 4)}  # the three splits and the merge, nothing stale left
    for seed in range(3):
        feed = {"x": np.random.default_rng(seed).standard_normal((2, 5, 8)).astype(np.float32)}
        assert_bit_exact(outputs(model, feed), outputs(pruned, feed))


def test_gpt2_fused_qkv_split_sizes_and_reshapes_follow_the_head_count():
    model = load(cached_model("gpt2", "tiny"))
    feeds = sample_feeds("gpt2", "tiny", batch_size=2, count=6)
    pruned = model.copy()
    result = PruneHeads(PruneHeads.make_options({"count": 1, "measure_latency": False,
                                                 "refit_scope": "consumers"})).run(
        pruned, PassContext(data=feeds[:4], original=model))
    assert [entry["kept_units"] for entry in decisions(result, "pruned")] == [3, 3]
    proto = check_full(pruned)
    values = {init.name: onnx.numpy_helper.to_array(init) for init in proto.graph.initializer}
    splits = [node for node in proto.graph.node if node.op_type == "Split"]
    assert [values[node.input[1]].tolist() for node in splits] == [[48, 48, 48], [48, 48, 48]]
    qkv = [values[node.input[1]].shape for node in proto.graph.node if node.name.endswith("c_attn/MatMul")]
    assert qkv == [(64, 144), (64, 144)]
    assert relative_error(model, pruned, feeds[4:]) < 0.2


def test_recovery_makes_up_for_removed_heads_on_unseen_data():
    model = load(cached_model("bert", "tiny"))
    calibration = sample_feeds("bert", "tiny", batch_size=4, count=8, seed=1)
    unseen = sample_feeds("bert", "tiny", batch_size=4, count=3, seed=50)
    options = {"count": 2, "measure_latency": False, "refit_scope": "consumers"}
    recovered, plain = model.copy(), model.copy()
    PruneHeads(PruneHeads.make_options(options)).run(recovered, PassContext(data=calibration))
    PruneHeads(PruneHeads.make_options({**options, "reconstruct": False})).run(plain, PassContext(data=calibration))
    assert relative_error(model, recovered, unseen) < relative_error(model, plain, unseen)


MULTI_HEAD = """
<ir_version: 8, opset_import: ["" : 17, "com.microsoft" : 1]>
mha (float[N, 5, 8] x) => (float[N, 5, 8] y)
<{weights}>
{{
    q = MatMul(x, wq)
    k = MatMul(x, wk)
    v = MatMul(x, wv)
    [attention] c = com.microsoft.MultiHeadAttention<num_heads = 4>(q, k, v)
    [out] y = MatMul(c, wo)
}}
"""


def test_multi_head_attention_num_heads_follows():
    weights = {name: (RNG.standard_normal((8, 8)) * 0.4).astype(np.float32) for name in ("wq", "wk", "wv", "wo")}
    model = model_from_text(MULTI_HEAD.format(weights=initializers(**weights)))
    pruned, result = run(PruneHeads, model, None, count=1)
    attention = next(node for node in pruned.graph.nodes if node.name == "attention")
    assert attention.attrs["num_heads"] == 3
    feed = {"x": RNG.standard_normal((2, 5, 8)).astype(np.float32)}
    assert outputs(pruned, feed)["y"].shape == (2, 5, 8)
    assert decisions(result, "pruned")[0]["kept_units"] == 3


def test_obs_importance_scores_heads_as_blocks_and_finds_the_zero_ones():
    model = attention_model(zero_heads=(1, 2))
    rng = np.random.default_rng(3)
    calibration = [{"x": rng.standard_normal((4, 5, 8)).astype(np.float32)} for _ in range(16)]
    pruned, result = run(PruneHeads, model, calibration, count=2, importance="obs")
    (record,) = decisions(result, "pruned")
    assert result.stats["importance"] == "obs" and record["removed_heads"] == [1, 2]
    feed = {"x": rng.standard_normal((2, 5, 8)).astype(np.float32)}
    assert_bit_exact(outputs(model, feed), outputs(pruned, feed))
