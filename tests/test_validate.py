"""Up-front validation: each defect class is refused with one line naming where it is; valid models pass.

Models are written in ONNX text syntax and damaged in one place, then loaded the way every
command loads a user's file (``load`` / ``load_proto``), so each test shows the defect it
means and the words a user sees.
"""

from __future__ import annotations

import resource
import time
import tracemalloc
from pathlib import Path

import numpy as np
import onnx
import onnx.helper as oh
import pytest

from onnxopt.errors import BadInputError
from onnxopt.external_data import ExternalLazyValues
from onnxopt.model_io import load, load_proto
from onnxopt.onnx_check import CHECKER_MEMORY_BYTES
from onnxopt.validate import validate_model
from tests.util import BACKEND_DATA

HEADER = '<ir_version: 8, opset_import: ["" : 17]>'
CHAIN = HEADER + " g (float[2] x) => (float[2] y) { a = Relu(x) \n y = Neg(a) }"
IF_MODEL = HEADER + """ g (bool c, float[2] x) => (float[2] y) {
    y = If(c) < then_branch = t () => (float[2] a) { a = Neg(x) }, else_branch = e () => (float[2] b) { b = Abs(x) } >
}"""
FUNCTION_MODEL = """<ir_version: 8, opset_import: ["" : 17, "com.onnxopt" : 1]>
g (float[2] x) => (float[2] y) { y = com.onnxopt.Twice(x) }
<domain: "com.onnxopt", opset_import: ["" : 17]> Twice (v) => (o) { o = Add(v, v) }"""


def parse(text: str) -> onnx.ModelProto:
    return onnx.parser.parse_model(text)


def refusal(proto: onnx.ModelProto, base_dir: Path | None = None) -> str:
    """The one-line message validation gives for ``proto``."""
    with pytest.raises(BadInputError) as caught:
        validate_model(proto, base_dir, "m.onnx")
    message = str(caught.value)
    assert "\n" not in message and message.startswith("m.onnx: ")
    return message


def with_weight(proto: onnx.ModelProto, name: str = "w", values: np.ndarray | None = None) -> onnx.ModelProto:
    values = np.arange(6, dtype=np.float32).reshape(2, 3) if values is None else values
    proto.graph.initializer.append(onnx.numpy_helper.from_array(values, name))
    return proto


MATMUL = HEADER + " g (float[4, 2] x) => (float[4, 3] y) { y = MatMul(x, w) }"


# ---------------------------------------------------------------- names and scopes


def test_a_read_of_a_name_nothing_defines_names_the_node_and_the_name() -> None:
    proto = parse(CHAIN)
    proto.graph.node[1].input[0] = "nowhere_673"
    assert "node Neg #1 reads 'nowhere_673', which nothing defines" in refusal(proto)


def test_two_nodes_writing_one_name() -> None:
    proto = parse(CHAIN)
    proto.graph.node[1].output[0] = "a"
    assert "'a' is defined twice: as output of node Relu #0 and as output of node Neg #1" in refusal(proto)


def test_a_cycle_is_refused_but_mere_disorder_is_not() -> None:
    proto = parse(CHAIN)
    proto.graph.node[0].input[0] = "y"
    assert "graph has a cycle through node Relu #0" in refusal(proto)
    unsorted = parse(CHAIN)
    nodes = list(unsorted.graph.node)
    del unsorted.graph.node[:]
    unsorted.graph.node.extend(reversed(nodes))
    validate_model(unsorted, None, "m.onnx")  # graph-surgeon sorts on import
    assert [node.op for node in load_proto(unsorted).graph.nodes] == ["Relu", "Neg"]


def test_an_undefined_read_inside_a_subgraph_body_names_the_branch() -> None:
    proto = parse(IF_MODEL)
    proto.graph.node[0].attribute[0].g.node[0].input[0] = "nowhere"
    assert "node If #0 then_branch: node Neg #0 reads 'nowhere'" in refusal(proto)


def test_a_subgraph_reading_its_own_nodes_output_is_a_cycle() -> None:
    proto = parse(IF_MODEL)
    proto.graph.node[0].attribute[1].g.node[0].input[0] = "y"
    assert "cycle through node If #0" in refusal(proto)


def test_subgraph_node_outputs_may_not_redefine_outer_values_but_inputs_may() -> None:
    proto = parse(IF_MODEL)
    proto.graph.node[0].attribute[0].g.node[0].output[0] = "x"
    proto.graph.node[0].attribute[0].g.output[0].name = "x"
    assert "'x' (output of node Neg #0) redefines a value of an enclosing graph" in refusal(proto)
    loop = parse(HEADER + """ g (int64 n, bool c, float[2] x) => (float[2] y) {
        y = Loop(n, c, x) < body = b (int64 i, bool cin, float[2] x) => (bool cout, float[2] z) {
            cout = Identity(cin)
            z = Neg(x)
        } >
    }""")
    validate_model(loop, None, "m.onnx")  # onnx and onnxruntime allow a body input to hide an outer name


def test_function_bodies_are_checked_and_may_not_recurse() -> None:
    validate_model(parse(FUNCTION_MODEL), None, "m.onnx")
    undefined = parse(FUNCTION_MODEL)
    undefined.functions[0].node[0].input[1] = "w"
    assert "function com.onnxopt::Twice: node Add #0 reads 'w', which nothing defines" in refusal(undefined)
    recursive = parse(FUNCTION_MODEL)
    recursive.functions[0].node[0].op_type, recursive.functions[0].node[0].domain = "Twice", "com.onnxopt"
    recursive.functions[0].opset_import.append(oh.make_opsetid("com.onnxopt", 1))
    assert "calls itself" in refusal(recursive)


def test_a_domain_the_model_does_not_import_and_an_output_nothing_produces() -> None:
    proto = parse(CHAIN)
    proto.graph.node[0].domain = "com.nowhere"
    assert "node Relu #0 uses domain 'com.nowhere', which the model does not import" in refusal(proto)
    proto = parse(CHAIN)
    proto.graph.output[0].name = "missing"
    assert "output 'missing' is not produced by anything" in refusal(proto)


def test_an_initializer_stored_twice() -> None:
    proto = with_weight(with_weight(parse(MATMUL)))
    assert "'w' is defined twice: as initializer and as initializer" in refusal(proto)


# ---------------------------------------------------------------- element types and dims


@pytest.mark.parametrize("code", [99, -1])
def test_an_element_type_onnx_does_not_define(code: int) -> None:
    proto = parse(CHAIN)
    proto.graph.input[0].type.tensor_type.elem_type = code
    assert f"input 'x' has element type {code}, which ONNX does not define" in refusal(proto)


def test_negative_and_unaddressable_dims() -> None:
    proto = parse(CHAIN)
    proto.graph.input[0].type.tensor_type.shape.dim[0].dim_value = -3
    assert "input 'x' has dimension 0 = -3; dimensions cannot be negative" in refusal(proto)
    proto = parse(HEADER + " g (float[N, M] x) => (float[N, M] y) { y = Relu(x) }")
    for dim in proto.graph.input[0].type.tensor_type.shape.dim:
        dim.Clear()
        dim.dim_value = 2**30
    assert "more than any machine can address" in refusal(proto)


def test_a_weight_without_element_type() -> None:
    proto = with_weight(parse(MATMUL))
    proto.graph.initializer[0].data_type = 0
    assert "initializer 'w' has no element type" in refusal(proto)


# ---------------------------------------------------------------- stored data


def test_raw_data_shorter_or_longer_than_the_dims_need() -> None:
    for cut in (-4, 8):
        proto = with_weight(parse(MATMUL))
        raw = proto.graph.initializer[0].raw_data
        proto.graph.initializer[0].raw_data = raw[:cut] if cut < 0 else raw + bytes(cut)
        expected = f"initializer 'w': raw_data holds {24 + cut} bytes, but dims [2, 3] of FLOAT need 24"
        assert expected in refusal(proto)


def test_typed_fields_count_their_entries_by_type() -> None:
    proto = parse(MATMUL)
    proto.graph.initializer.append(onnx.TensorProto(name="w", data_type=onnx.TensorProto.FLOAT, dims=[2, 3],
                                                    float_data=[1.0] * 5))
    assert "initializer 'w': float_data holds 5 entries, but dims [2, 3] of FLOAT need 6" in refusal(proto)
    wrong_field = parse(MATMUL)
    tensor = onnx.TensorProto(name="w", data_type=onnx.TensorProto.FLOAT, dims=[2, 3], int64_data=[1] * 6)
    wrong_field.graph.initializer.append(tensor)
    assert "stores FLOAT elements in int64_data, which cannot hold them" in refusal(wrong_field)
    empty = parse(MATMUL)
    empty.graph.initializer.append(onnx.TensorProto(name="w", data_type=onnx.TensorProto.FLOAT, dims=[2, 3]))
    assert "holds no data for its 6 elements" in refusal(empty)


def test_packed_int4_in_int32_data_is_two_per_entry() -> None:
    text = """<ir_version: 10, opset_import: ["" : 21]> g (float[2, 3] x) => (float[2, 3] y) {
        d = DequantizeLinear(q, s)
        y = Add(x, d)
    }"""
    proto = parse(text)
    proto.graph.initializer.append(oh.make_tensor("s", onnx.TensorProto.FLOAT, [], [0.5]))
    proto.graph.initializer.append(onnx.TensorProto(name="q", data_type=onnx.TensorProto.INT4, dims=[2, 3],
                                                    int32_data=[0x21, 0x43, 0x65]))
    load_proto(proto)
    proto.graph.initializer[1].int32_data.append(0)
    assert "int32_data holds 4 entries, but dims [2, 3] of INT4 need 3" in refusal(proto)


def test_a_constant_attribute_tensor_is_checked_where_it_sits() -> None:
    proto = parse(HEADER + " g (float[2] x) => (float[2] y) "
                  "{ c = Constant<value = float[2] {1, 2}>() \n y = Add(x, c) }")
    proto.graph.node[0].attribute[0].t.float_data.append(3)
    assert "node Constant #0 attribute 'value': float_data holds 3 entries" in refusal(proto)


def external_model(folder: Path, weight: np.ndarray | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    proto = with_weight(parse(MATMUL), values=weight)
    path = folder / "model.onnx"
    onnx.save_model(proto, str(path), save_as_external_data=True, location="w.bin", size_threshold=0)
    return path


def set_external(path: Path, key: str, value: str | None) -> None:
    proto = onnx.load(str(path), load_external_data=False)
    entries = proto.graph.initializer[0].external_data
    for position, entry in enumerate(entries):
        if entry.key == key:
            if value is None:
                del entries[position]
            else:
                entry.value = value
            break
    path.write_bytes(proto.SerializeToString())


def test_external_data_length_offset_and_file_size_are_checked_without_reading(tmp_path: Path) -> None:
    path = external_model(tmp_path / "a")
    set_external(path, "length", "20")
    with pytest.raises(BadInputError, match="initializer 'w': external data length is 20 bytes, but dims"):
        load(path)
    path = external_model(tmp_path / "b")
    set_external(path, "offset", "twelve")
    with pytest.raises(BadInputError, match="external data offset 'twelve' is not an integer"):
        load(path)
    path = external_model(tmp_path / "c")
    (tmp_path / "c" / "w.bin").write_bytes(bytes(20))
    with pytest.raises(BadInputError, match=r"needs bytes 0\.\.24 but w.bin holds 20 \(truncated\?\)"):
        load(path)


def test_external_data_without_a_length_reads_what_the_dims_say(tmp_path: Path) -> None:
    weight = np.arange(6, dtype=np.float32).reshape(2, 3)
    path = external_model(tmp_path, weight)
    set_external(path, "length", None)
    with (tmp_path / "w.bin").open("ab") as handle:
        handle.write(bytes(100))  # more data after the tensor, as in a shared weights file
    model = load(path)
    constant = model.graph.tensors()["w"]
    np.testing.assert_array_equal(constant._values.load(), weight)


# ---------------------------------------------------------------- text and onnx's own checks


def test_a_name_that_is_not_utf8_is_damage_not_an_internal_error(tmp_path: Path) -> None:
    data = parse(CHAIN).SerializeToString()
    position = data.index(b"Relu")
    path = tmp_path / "m.onnx"
    path.write_bytes(data[:position] + b"R\xc3lu" + data[position + 4:])
    with pytest.raises(BadInputError, match=r"model.graph\['g'\].node\[0\].op_type is not valid UTF-8"):
        load(path)


def test_string_attributes_and_string_tensors_must_be_utf8() -> None:
    proto = parse(HEADER + ' g (float[2] x) => (float[2] y) { y = Identity(x) }')
    proto.graph.node[0].attribute.append(oh.make_attribute("note", b"\xff\xfe"))
    assert "node[0].attribute['note'].s is not valid UTF-8" in refusal(proto)
    proto = parse(HEADER + ' g (string[1] x) => (bool[1] y) { y = Equal(x, w) }')
    proto.graph.initializer.append(onnx.TensorProto(name="w", data_type=onnx.TensorProto.STRING, dims=[1],
                                                    string_data=[b"\xc3("]))
    assert "initializer['w'].string_data is not valid UTF-8" in refusal(proto)


def test_shape_inference_errors_are_reported() -> None:
    proto = with_weight(parse(MATMUL), values=np.ones((5, 3), np.float32))
    assert "invalid ONNX model: [ShapeInferenceError]" in refusal(proto)


def test_stale_value_info_is_named_as_such() -> None:
    proto = parse(CHAIN)
    proto.graph.value_info.append(oh.make_tensor_value_info("a", onnx.TensorProto.FLOAT, [3]))
    assert "value_info annotations disagree with what the nodes compute" in refusal(proto)


def test_op_unknown_at_the_declared_opset() -> None:
    proto = parse(HEADER + " g (float[2] x) => (float[2] y) { y = FancyRelu(x) }")
    assert "FancyRelu" in refusal(proto)


# ---------------------------------------------------------------- valid models keep working


@pytest.mark.parametrize("text", [
    HEADER.replace('"" : 17', '"" : 17, "com.example" : 1') + " g (float[2] x) => (float[2] y) "
    "{ a = Identity(x) \n y = com.example.Fancy(a) }",
    HEADER.replace('"" : 17', '"" : 17, "com.microsoft" : 1') + " g (float[2, 4] x, float[4, 4] w) => (float[2, 4] y) "
    "{ y = com.microsoft.DynamicQuantizeMatMul(x, w) }",
    FUNCTION_MODEL,
    IF_MODEL,
    HEADER + " g (float[batch, sequence] x) => (float[batch, sequence] y) { y = Relu(x) }",
], ids=["custom-domain", "contrib-op", "local-function", "if-bodies", "symbolic-dims"])
def test_valid_models_pass(text: str) -> None:
    validate_model(parse(text), None, "m.onnx")


def test_ir3_models_with_initializers_listed_as_inputs_pass() -> None:
    path = BACKEND_DATA / "pytorch-converted" / "test_Conv2d" / "model.onnx"
    proto = onnx.load(str(path))
    assert proto.ir_version == 3 and {init.name for init in proto.graph.initializer} <= {
        value.name for value in proto.graph.input}
    load(path)


def test_a_model_over_2_gb_is_validated_lazily(tmp_path: Path) -> None:
    """Six 400 MiB external weights (2.3 GiB, a sparse file): checked from dims and file size alone."""
    side = 10240  # 10240 x 10240 float32 = 400 MiB
    text = HEADER + f" g (float[1, {side}] x) => (float[1, {side}] y) {{\n"
    text += "\n".join(f"h{i} = MatMul({'x' if i == 0 else f'h{i - 1}'}, w{i})" for i in range(6))
    text += "\ny = Identity(h5)\n}"
    proto = parse(text)
    tensor_bytes = side * side * 4
    for index in range(6):
        tensor = onnx.TensorProto(name=f"w{index}", data_type=onnx.TensorProto.FLOAT, dims=[side, side])
        tensor.data_location = onnx.TensorProto.EXTERNAL
        for key, value in (("location", "weights.bin"), ("offset", str(index * tensor_bytes)),
                           ("length", str(tensor_bytes))):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value
        proto.graph.initializer.append(tensor)
    path = tmp_path / "big.onnx"
    path.write_bytes(proto.SerializeToString())
    with (tmp_path / "weights.bin").open("wb") as handle:
        handle.truncate(6 * tensor_bytes)  # sparse: no disk, and any read would cost 2.3 GiB of memory
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    started = time.perf_counter()
    model = load(path)
    seconds = time.perf_counter() - started
    _current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 32 * 1024 * 1024, f"validation allocated {peak / 2**20:.0f} MiB"
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before < 200 * 1024  # KiB: no weight was read
    assert seconds < 10
    weights = [t for t in model.graph.tensors().values() if isinstance(getattr(t, "_values", None),
                                                                       ExternalLazyValues)]
    assert len(weights) == 6, "weights stay lazy"
    with (tmp_path / "weights.bin").open("r+b") as handle:
        handle.truncate(6 * tensor_bytes - 1)
    with pytest.raises(BadInputError, match="initializer 'w5': external data needs bytes"):
        load(path)


def test_sparse_initializers_are_judged_as_the_dense_tensors_onnxruntime_makes() -> None:
    values = onnx.numpy_helper.from_array(np.array([1.0, 2.0], np.float32), "w")
    indices = onnx.numpy_helper.from_array(np.array([1, 4], np.int64), "w_indices")
    proto = parse(HEADER + " g (float[2, 3] x) => (float[2, 3] y) { y = Add(x, w) }")
    proto.graph.sparse_initializer.append(oh.make_sparse_tensor(values, indices, [2, 3]))
    validate_model(proto, None, "m.onnx")  # onnx's shape inference alone would call Add's input sparse_tensor
    proto.graph.sparse_initializer[0].indices.raw_data = np.array([1, 40], np.int64).tobytes()
    assert "index value at position [1] out of range" in refusal(proto)


def test_a_shape_input_longer_than_any_rank_is_refused_before_shape_inference_builds_it() -> None:
    proto = parse(HEADER + " g (float[1, 3, 1] x, int64[4] shape) => (float[3, 3, 3, 3] y) { y = Expand(x, shape) }")
    validate_model(proto, None, "m.onnx")
    proto.graph.input[1].type.tensor_type.shape.dim[0].dim_value = 2**31  # onnx would build 2^31 dims: ~100 GB
    assert ("'shape' is declared with 2147483648 elements and gives node Expand #0 (Expand) its output's rank"
            in refusal(proto))


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="the address-space cap is Linux-only")
def test_the_checker_runs_under_a_memory_ceiling(monkeypatch: pytest.MonkeyPatch) -> None:
    def greedy_checker(*_args: object, **_kwargs: object) -> None:
        bytearray(CHECKER_MEMORY_BYTES + (1 << 30))  # what a runaway shape inference would ask for

    monkeypatch.setattr(onnx.checker, "check_model", greedy_checker)
    assert "onnx's shape inference needs more than 4 GiB for this model" in refusal(parse(CHAIN))
    bytearray(64 << 20)  # the cap is lifted afterwards
