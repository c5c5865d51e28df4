"""Coupled dimensions: what a group holds, the edits it needs, and why a candidate is refused."""

from __future__ import annotations

import numpy as np

from onnxopt.passes.pruning.candidates import head_candidates, neuron_candidates
from onnxopt.passes.pruning.coupling import Segment, kept_indices
from onnxopt.passes.pruning.rewrite import apply_removal
from onnxopt.shape_info import infer_tensor_infos
from tests.passes.pruning.graphs import check_full, initializers, random_mlp, token_feeds
from tests.util import model_from_text, outputs

RNG = np.random.default_rng(5)


def weights(*shape: int, scale: float = 0.3) -> np.ndarray:
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def candidates_of(model, finder=neuron_candidates):
    return finder(model.graph, infer_tensor_infos(model))


def test_an_mlp_hidden_layer_is_one_group_with_its_bias_and_both_weights():
    model = random_mlp()
    (group,) = [c.group for c in candidates_of(model) if c.group is not None]
    assert group.units == 16
    assert [node.name for node in group.producers.values()] == ["up"]
    assert [consumer.node.name for consumer in group.consumers.values()] == ["down"]
    sliced = {(entry.node.name or entry.node.op, entry.slot, entry.axis) for entry in group.slices.values()}
    assert sliced == {("up", 1, 1), ("Add", 1, 0), ("down", 1, 0)}


def test_segments_place_units_and_keep_the_rest():
    segment = Segment(offset=8, unit_size=4)
    assert segment.indices(np.array([0, 2])).tolist() == [8, 9, 10, 11, 16, 17, 18, 19]
    kept = kept_indices(24, {Segment(0, 4), Segment(12, 4)}, np.array([1]))
    assert kept.tolist() == [0, 1, 2, 3, 8, 9, 10, 11, 12, 13, 14, 15, 20, 21, 22, 23]


def test_removing_units_shrinks_every_tensor_and_keeps_shapes_consistent():
    model = random_mlp(zero_units=(1, 5, 9))
    feed = token_feeds(model, 1)[0]
    before = outputs(model, feed)
    (group,) = [c.group for c in candidates_of(model) if c.group is not None]
    apply_removal(model.graph, group, np.array([1, 5, 9]))
    proto = check_full(model)
    shapes = {init.name: list(init.dims) for init in proto.graph.initializer}
    assert sorted(shapes.values()) == sorted([[8, 13], [13], [13, 8], [8]])
    np.testing.assert_array_equal(outputs(model, feed)["y"], before["y"])


RESIDUAL_LN = """
<ir_version: 8, opset_import: ["" : 17]>
block (float[N, 4, 8] x) => (float[N, 4, 8] y)
<{weights}>
{{
    [pre] x0 = MatMul(x, w0)
    [up] h = MatMul(x0, w1)
    a = Relu(h)
    [down] o = MatMul(a, w2)
    s = Add(o, x0)
    y = LayerNormalization<axis = -1>(s, gamma, beta)
}}
"""


def test_a_residual_stream_into_layer_normalization_is_refused_with_the_reason():
    model = model_from_text(RESIDUAL_LN.format(weights=initializers(
        w0=weights(8, 8), w1=weights(8, 16), w2=weights(16, 8), gamma=np.ones(8, np.float32),
        beta=np.zeros(8, np.float32))))
    found = {c.label: c for c in candidates_of(model)}
    assert found["up"].group is not None  # the hidden units are fine
    assert found["down"].group is None
    assert "LayerNormalization" in found["down"].reason


UNKNOWN_OP = """
<ir_version: 8, opset_import: ["" : 17, "custom.domain" : 1]>
mlp (float[N, 8] x) => (float[N, 8] y)
<{weights}>
{{
    [up] h = MatMul(x, w1)
    a = custom.domain.Swish(h)
    [down] y = MatMul(a, w2)
}}
"""


def test_an_unknown_op_stops_propagation_and_the_candidate_is_skipped():
    model = model_from_text(UNKNOWN_OP.format(weights=initializers(w1=weights(8, 16), w2=weights(16, 8))))
    (candidate, _) = candidates_of(model)
    assert candidate.group is None
    assert "unknown op custom.domain::Swish" in candidate.reason


SHAPE_READER = """
<ir_version: 8, opset_import: ["" : 17]>
mlp (float[N, 8] x) => (float[N, 8] y, int64[2] width)
<{weights}>
{{
    [up] h = MatMul(x, w1)
    a = Relu(h)
    width = Shape(a)
    [down] y = MatMul(a, w2)
}}
"""


def test_a_shape_that_reads_the_width_refuses_the_group():
    model = model_from_text(SHAPE_READER.format(weights=initializers(w1=weights(8, 16), w2=weights(16, 8))))
    candidate = candidates_of(model)[0]
    assert candidate.group is None and "Shape" in candidate.reason


CONV_BLOCK = """
<ir_version: 8, opset_import: ["" : 17]>
block (float[N, 4, 6, 6] x) => (float[N, 4, 6, 6] y)
<{weights}>
{{
    [expand] e = Conv(x, we)
    n1 = BatchNormalization(e, s1, b1, m1, v1)
    r1 = Clip(n1, lo, hi)
    p = Pad<mode = "constant">(r1, pads)
    [depthwise] d = Conv<group = 12>(p, wd, bd)
    r2 = Relu(d)
    [project] y = Conv(r2, wp)
}}
"""


def _conv_block(pads: str = "0, 0, 1, 1, 0, 0, 1, 1"):
    text = CONV_BLOCK.format(weights=initializers(
        we=weights(12, 4, 1, 1), s1=np.abs(weights(12)) + 1, b1=weights(12), m1=weights(12),
        v1=np.abs(weights(12)) + 0.5, wd=weights(12, 1, 3, 3), bd=weights(12), wp=weights(4, 12, 1, 1))
        + f", float lo = {{0.0}}, float hi = {{6.0}}, int64[8] pads = {{{pads}}}")
    return model_from_text(text)


def test_channels_flow_through_batchnorm_pad_and_a_depthwise_conv():
    model = _conv_block()
    group = candidates_of(model)[0].group
    assert group is not None and group.units == 12
    assert [node.name for node in group.conv_groups.values()] == ["depthwise"]
    feed = {"x": RNG.standard_normal((2, 4, 6, 6)).astype(np.float32)}
    apply_removal(model.graph, group, np.array([0, 3, 7]))
    check_full(model)
    depthwise = next(node for node in model.graph.nodes if node.name == "depthwise")
    assert depthwise.attrs["group"] == 9 and depthwise.inputs[1].shape[0] == 9
    assert outputs(model, feed)["y"].shape == (2, 4, 6, 6)


def test_a_pad_on_the_channel_axis_refuses_the_group():
    candidate = candidates_of(_conv_block(pads="0, 1, 1, 1, 0, 0, 1, 1"))[0]
    assert candidate.group is None
    assert "Pad" in candidate.reason


ATTENTION = """
<ir_version: 8, opset_import: ["" : 17]>
attention (float[N, 5, 8] x) => (float[N, 5, 8] y)
<{weights}, int64[4] split_shape = {{0, 0, 4, 2}}, int64[3] merge_shape = {{0, 0, 8}}>
{{
    q0 = MatMul(x, wq)
    k0 = MatMul(x, wk)
    v0 = MatMul(x, wv)
    q1 = Reshape(q0, split_shape)
    k1 = Reshape(k0, split_shape)
    v1 = Reshape(v0, split_shape)
    q = Transpose<perm = [0, 2, 1, 3]>(q1)
    k = Transpose<perm = [0, 2, 3, 1]>(k1)
    v = Transpose<perm = [0, 2, 1, 3]>(v1)
    s = MatMul(q, k)
    p = Softmax<axis = -1>(s)
    c = MatMul(p, v)
    ct = Transpose<perm = [0, 2, 1, 3]>(c)
    cm = Reshape(ct, merge_shape)
    [out] y = MatMul(cm, wo)
}}
"""


def attention_model(zero_heads: tuple[int, ...] = ()):
    wo = weights(8, 8)
    for head in zero_heads:
        wo[2 * head : 2 * head + 2] = 0.0
    return model_from_text(ATTENTION.format(weights=initializers(wq=weights(8, 8), wk=weights(8, 8),
                                                                wv=weights(8, 8), wo=wo)))


def test_heads_are_one_group_with_every_reshape_that_counts_them():
    model = attention_model()
    (candidate,) = candidates_of(model, head_candidates)
    group = candidate.group
    assert group is not None and group.units == 4
    assert len(group.reshapes) == 4  # three splits and the merge
    assert len(group.producers) == 3 and [c.node.name for c in group.consumers.values()] == ["out"]
    feed = {"x": RNG.standard_normal((2, 5, 8)).astype(np.float32)}
    apply_removal(model.graph, group, np.array([1, 2]))
    proto = check_full(model)
    targets = {init.name: onnx_values(init) for init in proto.graph.initializer if init.name.endswith("_pruned")
               and init.data_type == 7}
    assert sorted(tuple(value) for value in targets.values()) == [(0, 0, 2, 2), (0, 0, 4)]
    assert outputs(model, feed)["y"].shape == (2, 5, 8)


def onnx_values(init) -> list[int]:
    import onnx.numpy_helper

    return onnx.numpy_helper.to_array(init).tolist()


def test_removing_heads_whose_output_rows_are_zero_changes_no_bit():
    model = attention_model(zero_heads=(0, 3))
    feed = {"x": RNG.standard_normal((3, 5, 8)).astype(np.float32)}
    before = outputs(model, feed)["y"]
    (candidate,) = candidates_of(model, head_candidates)
    apply_removal(model.graph, candidate.group, np.array([0, 3]))
    check_full(model)
    np.testing.assert_array_equal(outputs(model, feed)["y"], before)


SPLIT_WITHOUT_ATTENTION = """
<ir_version: 8, opset_import: ["" : 17]>
grouped (float[N, 6, 8] x) => (float[N, 6, 8] y)
<{weights}, int64[4] split_shape = {{0, 0, 4, 4}}, int64[3] merge_shape = {{0, 0, 16}}>
{{
    h = MatMul(x, w1)
    s = Reshape(h, split_shape)
    r = Relu(s)
    m = Reshape(r, merge_shape)
    y = MatMul(m, w2)
}}
"""


def test_a_head_like_split_without_softmax_is_not_a_head_group():
    model = model_from_text(SPLIT_WITHOUT_ATTENTION.format(weights=initializers(w1=weights(8, 16), w2=weights(16, 8))))
    (candidate,) = candidates_of(model, head_candidates)
    assert candidate.group is None and "Softmax" in candidate.reason
