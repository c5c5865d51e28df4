"""The fp16 pass on golden graphs: what converts, what stays fp32, where the casts go."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from onnxopt.errors import BadInputError
from onnxopt.fp16_judge import judge_run, relative_error
from onnxopt.model_io import to_proto
from onnxopt.pass_api import Contract
from onnxopt.passes import PRESETS, get_pass
from onnxopt.passes.precision.fp16 import Fp16Pass
from onnxopt.passes.precision.tensor_types import type_conflict
from tests.passes.precision.helpers import (
    BF16,
    BF16_REL,
    F16,
    F32,
    assert_close,
    assert_consistent,
    cast_chains,
    cast_nodes,
    convert,
    initializer_types,
    io_types,
    kept_reasons,
    node_by_output,
)
from tests.util import model_from_text, outputs, run_pass

RNG = np.random.default_rng(7)


def _values(shape: tuple[int, ...], scale: float = 0.5) -> str:
    return ", ".join(f"{v:.6g}" for v in (RNG.standard_normal(shape) * scale).ravel())


CONV_RESIZE = f"""<ir_version:8, opset_import:["":17]>
g (float[1,3,4,4] x) => (float[1,3,8,8] y) <float[3,3,1,1] w = {{{_values((3, 3, 1, 1))}}},
    float[3] b = {{0.1, -0.2, 0.3}}, float[4] scales = {{1.0, 1.0, 2.0, 2.0}}, float[1,3,4,4] c> {{
  c = Conv(x, w, b)
  r = Relu(c)
  u = Resize<mode="nearest">(r, , scales)
  y = Sigmoid(u)
}}"""


def _feed(shape: tuple[int, ...], name: str = "x", scale: float = 1.0) -> dict[str, np.ndarray]:
    return {name: (RNG.standard_normal(shape) * scale).astype(np.float32)}


def test_registered_lossy_once_with_preset():
    assert get_pass("fp16") is Fp16Pass
    assert Fp16Pass.contract is Contract.LOSSY and Fp16Pass.cleanup is False
    assert PRESETS["fp16"][-1] == "fp16"


def test_io_fp32_weights_half_boundary_casts_only_resize_scales_fp32():
    model = model_from_text(CONV_RESIZE)
    converted, result = convert(model)
    graph = to_proto(converted).graph
    assert io_types(converted) == ([F32], [F32])
    assert initializer_types(converted) == {"w": F16, "b": F16, "scales": F32}
    casts = cast_nodes(graph)
    assert [(c.input[0], c.attribute[0].i) for c in casts] == [("x", F16), ("y/fp16", F32)]
    assert node_by_output(graph, "y").op_type == "Cast"
    resize = next(node for node in graph.node if node.op_type == "Resize")
    assert resize.input[2] == "scales"
    # The declared type of the intermediate 'c' (value_info) follows the conversion.
    declared = {v.name: v.type.tensor_type.elem_type for v in graph.value_info}
    assert declared["c"] == F16
    assert result.stats["nodes_fp32"] == 0 and result.modified
    assert_consistent(converted)
    assert_close(model, converted, _feed((1, 3, 4, 4)))


MATMUL_RESIZE = f"""<ir_version:8, opset_import:["":17]>
g (float[1,1,4,8] x) => (float[1,1,8,8] y, float[1,1,4,8] z) <float[8,8] w = {{{_values((8, 8))}}},
    float[8] b = {{{_values((8,))}}}, float[4] scales = {{1.0, 1.0, 2.0, 1.0}}> {{
  m = MatMul(x, w)
  a = Add(m, b)
  r = Relu(a)
  y = Resize<mode="nearest">(r, , scales)
  c = Conv(x, k)
  z = Sigmoid(c)
  k = Constant<value=float[1,1,1,1] {{0.5}}>()
}}"""


def test_bf16_variant_converts_to_bfloat16():
    model = model_from_text(MATMUL_RESIZE)
    converted, result = convert(model, bf16=True)
    assert result.stats["half_type"] == "bfloat16"
    assert initializer_types(converted) == {"w": BF16, "b": BF16, "scales": F32}
    # Conv has no bfloat16 in the ONNX spec: it stays fp32, with the reason.
    kept = [row for row in result.stats["decisions"] if row["op"] == "Conv"]
    assert kept and "has no bfloat16" in kept[0]["reason"]
    graph = to_proto(converted).graph
    # x -> bf16 for MatMul and y back; Sigmoid sits between the fp32 Conv and the fp32
    # output, so converting it would only add casts: it follows its neighbours.
    assert sorted(c.attribute[0].i for c in cast_nodes(graph)) == [F32, BF16]
    assert {row["op"] for row in result.stats["decisions"]} == {"Conv", "Sigmoid"}
    assert_consistent(converted)
    # onnxruntime has no CPU bfloat16 MatMul kernel: judge with the reference evaluator.
    feed = _feed((1, 1, 4, 8))
    expected = outputs(model, feed)
    judged = judge_run(converted, feed)
    assert judged["y"].dtype == np.float32
    assert 0 < relative_error(expected["y"], judged["y"]) <= BF16_REL
    assert relative_error(expected["z"], judged["z"]) <= 1e-6  # the fp32 Conv path is untouched


def test_bf16_refused_below_opset_13():
    model = model_from_text(MATMUL_RESIZE.replace('"":17', '"":12').replace("r, , scales", "r, scales, scales"))
    with pytest.raises(BadInputError, match="bf16 needs opset >= 13"):
        convert(model, bf16=True)


def test_keep_io_types_false_makes_io_half():
    model = model_from_text(CONV_RESIZE)
    converted, _ = convert(model, keep_io_types=False)
    assert io_types(converted) == ([F16], [F16])
    assert not cast_nodes(to_proto(converted).graph)
    assert_consistent(converted)
    feed = _feed((1, 3, 4, 4))
    expected = outputs(model, feed)["y"]
    actual = outputs(converted, {"x": feed["x"].astype(np.float16)})["y"]
    assert actual.dtype == np.float16
    assert relative_error(expected, actual) <= 4e-3


FP32_ISLAND = """<ir_version:8, opset_import:["":17]>
g (float[2,8] x) => (float[2,8] y) {
  a = Relu(x)
  s = Sigmoid(a)
  b = Exp(s)
  c = Log(b)
  d = Cast<to=10>(c)
  e = Cast<to=1>(d)
  f = Softplus(e)
  h = Tanh(f)
  y = Neg(h)
}"""


def test_fp32_island_has_one_cast_in_and_out_and_round_trips_cancel():
    model = model_from_text(FP32_ISLAND)
    for node in model.graph.nodes:
        node.name = node.outputs[0].name
    converted, result = convert(model, keep_fp32=("op:Exp", "op:Log", "op:Softplus"))
    graph = to_proto(converted).graph
    # x in, Sigmoid -> Exp, Softplus -> Tanh, y out; the fp32 -> fp16 -> fp32 pair between
    # the fp32 nodes Log and Softplus is gone, and no cast sits inside the island.
    assert [node.op_type for node in graph.node] == ["Cast", "Relu", "Sigmoid", "Cast", "Exp", "Log", "Softplus",
                                                     "Cast", "Tanh", "Neg", "Cast"]
    assert cast_chains(graph) == []
    assert node_by_output(graph, "f").input == ["c"]
    assert set(kept_reasons(result)) == {"b", "c", "f"}
    assert result.stats["casts_bypassed"] == 1
    assert_consistent(converted)
    assert_close(model, converted, _feed((2, 8)))


def test_casts_to_float_follow_their_readers():
    model = model_from_text("""<ir_version:8, opset_import:["":17]>
    g (float[2,8] x) => (float[2,8] y) {
      a = Relu(x)
      s = Sigmoid(a)
      h = Cast<to=10>(s)
      k = Cast<to=1>(h)
      m = Exp(k)
      n = Neg(m)
      y = Tanh(n)
    }""")
    converted, result = convert(model, keep_fp32=("op:Exp",))
    graph = to_proto(converted).graph
    # Cast<to=1> stays fp32 for its fp32 reader; Cast<to=10> became a no-op and is gone.
    assert [node.op_type for node in graph.node] == ["Cast", "Relu", "Sigmoid", "Cast", "Exp", "Cast", "Neg", "Tanh",
                                                     "Cast"]
    assert cast_chains(graph) == []
    assert "Cast" not in {row["op"] for row in result.stats["decisions"]}
    assert_consistent(converted)
    assert_close(model, converted, _feed((2, 8)))


def test_compute_between_fp32_neighbours_follows_them():
    model = model_from_text("""<ir_version:8, opset_import:["":17]>
    g (float[2,8] x) => (float[2,8] y) {
      a = Exp(x)
      b = Sigmoid(a)
      y = Log(b)
    }""")
    converted, result = convert(model, keep_fp32=("op:Exp", "op:Log"))
    assert [row["reason"] for row in result.stats["decisions"] if row["op"] == "Sigmoid"] == [
        "follows its fp32 neighbours (avoids casts)"]
    assert not cast_nodes(to_proto(converted).graph)


def test_keep_fp32_selectors_by_name_prefix_and_regex():
    text = """<ir_version:8, opset_import:["":17]>
    g (float[2,8] x) => (float[2,8] y) {
      a = Relu(x)
      b = Elu(a)
      c = Sigmoid(b)
      d = Tanh(c)
      e = Neg(d)
      f = Abs(e)
      g1 = Softsign(f)
      y = Selu(g1)
    }"""
    model = model_from_text(text)
    # Parsed models have no node names: give them paths like an exporter would.
    for node in model.graph.nodes:
        scope = "encoder" if node.op in ("Sigmoid", "Tanh") else "head"
        node.name = f"/{scope}/{node.op.lower()}"
    _, result = convert(model, keep_fp32=("name:/encoder/",))
    assert kept_reasons(result) == {"/encoder/sigmoid": "pinned by keep_fp32 selector name:/encoder/",
                                    "/encoder/tanh": "pinned by keep_fp32 selector name:/encoder/"}
    _, result = convert(model, keep_fp32=("re:^/head/ne",))
    assert set(kept_reasons(result)) == {"/head/neg"}
    _, result = convert(model, keep_fp32=("op:Abs", "op:Sigmoid"))
    assert set(kept_reasons(result)) == {"/head/abs", "/encoder/sigmoid"}
    with pytest.raises(BadInputError, match="keep_fp32 selector"):
        convert(model, keep_fp32=("type:Relu",))
    with pytest.raises(BadInputError, match="bad regular expression"):
        convert(model, keep_fp32=("re:([",))


def test_shared_initializer_keeps_both_versions_only_where_needed():
    text = f"""<ir_version:8, opset_import:["":17]>
    g (float[4,4] x) => (float[4,4] y, float[4,4] z) <float[4,4] w = {{{_values((4, 4))}}},
        float[4,4] v = {{{_values((4, 4))}}}> {{
      y = MatMul(x, w)
      p = MatMul(x, v)
      z = Mul(p, w)
    }}"""
    model = model_from_text(text)
    for node in model.graph.nodes:
        node.name = "pinned" if node.op == "Mul" else node.outputs[0].name
    converted, _ = convert(model, keep_fp32=("name:pinned",))
    graph = to_proto(converted).graph
    assert initializer_types(converted) == {"w": F32, "w_fp16": F16, "v": F16}
    assert node_by_output(graph, "y/fp16").input[1] == "w_fp16"
    assert next(node for node in graph.node if node.op_type == "Mul").input[1] == "w"
    assert_consistent(converted)
    assert_close(model, converted, _feed((4, 4)))


def test_typed_attributes_follow_the_conversion():
    text = """<ir_version:8, opset_import:["":17]>
    g (float[2,3] x) => (float[2,3] y) {
      s = Shape(x)
      zeros = ConstantOfShape(s)
      half_ = Constant<value_float=0.5>()
      a = Add(x, zeros)
      y = Mul(a, half_)
    }"""
    model = model_from_text(text)
    converted, result = convert(model)
    graph = to_proto(converted).graph
    by_op = {node.op_type: node for node in graph.node}
    assert by_op["ConstantOfShape"].attribute[0].t.data_type == F16  # the default value is float32 0
    value = next(a for a in by_op["Constant"].attribute if a.name == "value")
    assert value.t.data_type == F16 and not any(a.name == "value_float" for a in by_op["Constant"].attribute)
    assert result.stats["attributes_converted"] == 2
    assert_consistent(converted)
    assert_close(model, converted, _feed((2, 3)))


def test_eye_like_and_random_dtypes_follow_the_conversion():
    model = model_from_text("""<ir_version:8, opset_import:["":17]>
    g (float[3,3] x) => (float[3,3] y) {
      eye = EyeLike<dtype=1>(x)
      noise = RandomNormal<shape=[3,3], scale=0.000001, seed=1.0>()
      a = Add(x, eye)
      y = Add(a, noise)
    }""")
    converted, result = convert(model)
    graph = to_proto(converted).graph
    by_op = {node.op_type: node for node in graph.node}
    assert next(a.i for a in by_op["EyeLike"].attribute if a.name == "dtype") == F16
    # RandomNormal's dtype defaults to float: the pass writes the half type explicitly.
    assert next(a.i for a in by_op["RandomNormal"].attribute if a.name == "dtype") == F16
    assert result.stats["attributes_converted"] == 2
    assert_consistent(converted)
    # onnxruntime has no CPU float16 EyeLike/RandomNormal kernels: the reference evaluator judges.
    feed = _feed((3, 3))
    assert relative_error(outputs(model, feed)["y"], judge_run(converted, feed)["y"]) <= 4e-3


def test_index_arithmetic_stays_fp32_and_cast_targets_follow_consumers():
    text = """<ir_version:8, opset_import:["":17]>
    g (float[2,3] x, int64[2,3] mask) => (float[2,3] y) {
      m = Cast<to=1>(mask)
      one = Constant<value_float=1.0>()
      inv = Sub(one, m)
      big = Constant<value_float=-10000.0>()
      bias = Mul(inv, big)
      scaled = Cast<to=1>(mask)
      p = Mul(x, scaled)
      y = Add(p, bias)
    }"""
    model = model_from_text(text)
    for node in model.graph.nodes:
        node.name = node.outputs[0].name
    converted, result = convert(model)
    kept = kept_reasons(result)
    assert kept["inv"].startswith("index arithmetic") and kept["bias"].startswith("index arithmetic")
    assert "p" not in kept and "y" not in kept
    graph = to_proto(converted).graph
    to = {node.name: node.attribute[0].i for node in graph.node if node.op_type == "Cast"}
    assert to["m"] == F32  # its reader (Sub) is fp32
    assert to["scaled"] == F16  # its reader (Mul with x) runs in half: int -> half directly
    assert_consistent(converted)
    feed = {"x": RNG.standard_normal((2, 3)).astype(np.float32), "mask": np.array([[1, 1, 0], [1, 0, 0]])}
    assert_close(model, converted, feed)


def test_weights_beyond_half_range_stay_fp32_and_tiny_weights_are_reported():
    text = """<ir_version:8, opset_import:["":17]>
    g (float[2,2] x) => (float[2,2] y) <float[2] big = {100000.0, 1.0}, float[2] tiny = {1e-9, 0.5}> {
      a = Mul(x, tiny)
      b = Mul(a, big)
      y = Mul(b, tiny)
    }"""
    model = model_from_text(text)
    for node in model.graph.nodes:
        node.name = node.outputs[0].name
    converted, result = convert(model, check_activations=False)
    kept = kept_reasons(result)
    assert "exceeds the float16 range" in kept["b"]
    assert initializer_types(converted)["big"] == F32
    assert result.stats["weights_flushed_to_zero"] == {"tiny": 1}
    assert any("flush to zero" in note for note in result.notes)
    assert_consistent(converted)


def test_large_activations_keep_their_nodes_fp32():
    text = """<ir_version:8, opset_import:["":17]>
    g (float[2,4] x) => (float[2,4] y) <float[1] k = {300.0}, float[1] s = {0.00001}> {
      a = Mul(x, k)
      b = Mul(a, a)
      y = Mul(b, s)
    }"""
    model = model_from_text(text)
    for node in model.graph.nodes:
        node.name = node.outputs[0].name
    feeds = [_feed((2, 4))]
    converted, result = convert(model, data=feeds)
    kept = kept_reasons(result)
    assert set(kept) == {"b", "y"} and "activation 'b' reaches" in kept["b"]
    assert result.stats["activation_ranges"] == "1 batch(es) of calibration data"
    assert_consistent(converted)
    assert_close(model, converted, feeds[0])
    # Without measuring, nothing would have stopped the overflow.
    unsafe, _ = convert(model, check_activations=False)
    assert not np.all(np.isfinite(judge_run(unsafe, feeds[0])["y"]))


IF_MODEL = """<ir_version:8, opset_import:["":17]>
g (float[2,3] x, bool cond) => (float[2,3] y) <float[3] w = {2.0, 3.0, 0.5}> {
  h = Mul(x, w)
  y = If(cond) <then_branch = then_body () => (float[2,3] a) { a1 = Mul(h, w)
      a = Relu(a1) }, else_branch = else_body () => (float[2,3] b) { b1 = Neg(h)
      b = Exp(b1) }>
}"""


def test_if_branches_are_converted_with_their_outputs():
    model = model_from_text(IF_MODEL)
    converted, result = convert(model)
    graph = to_proto(converted).graph
    if_node = next(node for node in graph.node if node.op_type == "If")
    for branch in if_node.attribute:
        assert branch.g.output[0].type.tensor_type.elem_type == F16
    assert result.stats["nodes_fp32"] == 0
    assert_consistent(converted)
    for cond in (True, False):
        feed = {"x": RNG.standard_normal((2, 3)).astype(np.float32), "cond": np.array(cond)}
        assert_close(model, converted, feed)


def test_pinned_node_inside_a_branch_gets_casts_inside_the_branch():
    model = model_from_text(IF_MODEL)
    converted, _ = convert(model, keep_fp32=("op:Exp",))
    graph = to_proto(converted).graph
    else_body = next(a.g for a in next(n for n in graph.node if n.op_type == "If").attribute if a.name == "else_branch")
    assert [node.op_type for node in else_body.node] == ["Neg", "Cast", "Exp", "Cast"]
    assert else_body.output[0].type.tensor_type.elem_type == F16
    assert_consistent(converted)
    for cond in (True, False):
        feed = {"x": RNG.standard_normal((2, 3)).astype(np.float32), "cond": np.array(cond)}
        assert_close(model, converted, feed)


FUNCTION_MODEL = """<ir_version:8, opset_import:["":17, "local":1]>
g (float[2,3] x) => (float[2,3] y, float[2,3] z) <float[3] w = {2.0, 3.0, 0.5}> {
  h = Relu(x)
  y = local.Scale(h, w)
  z = local.Scale(y, w)
}
<domain: "local", opset_import: ["":17]>
Scale (p, q) => (r) {
  k = Constant<value=float[1] {0.5}>()
  s = Mul(p, q)
  t = Mul(s, k)
  r = Tanh(t)
}"""


def test_local_function_is_converted_when_all_calls_run_in_half():
    model = model_from_text(FUNCTION_MODEL)
    converted, result = convert(model)
    proto = to_proto(converted)
    body = proto.functions[0]
    constant = next(node for node in body.node if node.op_type == "Constant")
    assert constant.attribute[0].t.data_type == F16
    assert [node.op_type for node in body.node].count("Cast") == 0
    assert initializer_types(converted)["w"] == F16
    assert result.stats["nodes_fp32"] == 0
    assert_consistent(converted)
    assert_close(model, converted, _feed((2, 3)))


def test_local_function_with_one_pinned_call_stays_fp32_everywhere():
    model = model_from_text(FUNCTION_MODEL)
    for node in model.graph.nodes:
        node.name = node.outputs[0].name
    converted, result = convert(model, keep_fp32=("name:z",))
    kept = kept_reasons(result)
    assert "pinned" in kept["z"] and "another of its calls runs in fp32" in kept["y"]
    body = to_proto(converted).functions[0]
    assert next(n for n in body.node if n.op_type == "Constant").attribute[0].t.data_type == F32
    assert initializer_types(converted)["w"] == F32
    assert_consistent(converted)
    assert_close(model, converted, _feed((2, 3)))


def test_type_conflict_detects_stale_value_info():
    stale = model_from_text("""<ir_version:8, opset_import:["":17]>
    g (float[2] x) => (float[2] y) <float16[2] h> {
      h = Relu(x)
      y = Neg(h)
    }""")
    assert "elem type" in type_conflict(stale)


def test_reports_the_nodes_it_keeps():
    model = model_from_text(FP32_ISLAND)
    _, result = convert(model, keep_fp32=("op:Exp",))
    assert any(note.startswith("kept fp32:") and "(Exp)" in note for note in result.notes)
    assert result.stats["nodes_fp32_forced"] == 1
    row = next(row for row in result.stats["decisions"] if row["op"] == "Exp")
    assert row["reason"] == "pinned by keep_fp32 selector op:Exp"


def test_resize_scales_from_a_constant_node_stay_fp32():
    text = """<ir_version:8, opset_import:["":13]>
    g (float[1,1,2,2] x) => (float[1,1,4,4] y) {
      scales = Constant<value=float[4] {1.0, 1.0, 2.0, 2.0}>()
      roi = Constant<value=float[0] {}>()
      y = Resize<mode="linear">(x, roi, scales)
    }"""
    model = model_from_text(text)
    converted, _ = convert(model, keep_io_types=False)
    graph = to_proto(converted).graph
    constants = {node.output[0]: node.attribute[0].t.data_type for node in graph.node if node.op_type == "Constant"}
    assert constants == {"scales": F32, "roi": F32}
    assert next(node for node in graph.node if node.op_type == "Resize").input[1:] == ["roi", "scales"]
    assert_consistent(converted)
    x = RNG.standard_normal((1, 1, 2, 2)).astype(np.float32)
    actual = outputs(converted, {"x": x.astype(np.float16)})["y"]
    assert relative_error(outputs(model, {"x": x})["y"], actual) <= 4e-3
    onnx.checker.check_model(to_proto(converted), full_check=True)


def test_loop_carried_values_and_scan_outputs_follow_the_loop():
    model = model_from_text("""<ir_version:8, opset_import:["":17]>
    g (float[2,3] x) => (float[2,3] y, float[4,2,3] steps)
      <float[3] w = {0.5, 0.25, 1.5}, int64 trip = {4}, bool keep = {1}> {
      y, steps = Loop(trip, keep, x) <body = loop_body (int64 i, bool c, float[2,3] acc)
          => (bool c_out, float[2,3] acc_out, float[2,3] step) {
        c_out = Identity(c)
        m = Mul(acc, w)
        acc_out = Tanh(m)
        step = Relu(m)
      }>
    }""")
    feed = _feed((2, 3))
    converted, result = convert(model, data=[feed])
    graph = to_proto(converted).graph
    body = next(node for node in graph.node if node.op_type == "Loop").attribute[0].g
    assert [v.type.tensor_type.elem_type for v in body.input] == [onnx.TensorProto.INT64, onnx.TensorProto.BOOL, F16]
    assert [v.type.tensor_type.elem_type for v in body.output] == [onnx.TensorProto.BOOL, F16, F16]
    assert [init.data_type for init in body.initializer] == [F16]  # w, read inside the body
    assert result.stats["nodes_fp32"] == 0
    assert_consistent(converted)
    expected = outputs(model, feed)
    actual = outputs(converted, feed)
    for name in ("y", "steps"):
        assert relative_error(expected[name], actual[name]) <= 4e-3
    # onnx's reference Loop stacks scan outputs wrongly (shape [8,3]): judge the carried value.
    assert relative_error(expected["y"], judge_run(converted, feed)["y"]) <= 4e-3


def test_a_second_run_changes_nothing():
    model = model_from_text(FP32_ISLAND)
    feed = _feed((2, 8))
    once, first = convert(model, data=[feed], keep_fp32=("op:Exp", "op:Log", "op:Softplus"))
    twice, second = convert(once, data=[feed], keep_fp32=("op:Exp", "op:Log", "op:Softplus"))
    assert first.modified and not second.modified
    assert onnx.printer.to_text(to_proto(twice).graph) == onnx.printer.to_text(to_proto(once).graph)


def test_a_model_with_no_float_tensor_to_measure_converts_without_error():
    # onnx's backend model test_sequence_model6: its only float tensor is the input, read into a
    # sequence; range measurement must not ask onnxruntime for "no outputs" (which means all of them).
    model = model_from_text("""
    <ir_version: 7, opset_import: ["" : 12]>
    g (float[2,3,4] X) => (int64 len) {
        seq = SplitToSequence <axis: int = -1> (X)
        len = SequenceLength (seq)
    }
    """)
    feed = {"X": np.random.default_rng(0).standard_normal((2, 3, 4)).astype(np.float32)}
    expected = outputs(model, feed)
    converted, result = run_pass(Fp16Pass, model)
    assert result.stats["activation_ranges"] == "2 batch(es) of random feeds", "ranges were measured"
    assert [row["reason"] for row in result.stats["decisions"]] == ["'seq' is a sequence/optional value"]
    np.testing.assert_array_equal(outputs(converted, feed)["len"], expected["len"])
