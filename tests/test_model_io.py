"""Model I/O: lazy external data, safety of external locations, IR clamping, atomic writes."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import onnx.helper as oh
import pytest

from onnxopt.errors import BadInputError
from onnxopt.external_data import ExternalLazyValues
from onnxopt.model_io import load, read_constant, save
from tests.util import assert_bit_exact, outputs

TEXT_MLP = """
<ir_version: 8, opset_import: ["" : 17]>
mlp (float[2, 64] x) => (float[2, 16] y) {
    h = MatMul(x, w1)
    r = Relu(h)
    y = MatMul(r, w2)
}
"""


def mlp_proto(seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    proto = onnx.parser.parse_model(TEXT_MLP)
    w1 = rng.standard_normal((64, 32)).astype(np.float32)
    w2 = rng.standard_normal((32, 16)).astype(np.float32)
    proto.graph.initializer.extend([onnx.numpy_helper.from_array(w1, "w1"), onnx.numpy_helper.from_array(w2, "w2")])
    return proto


def save_external(proto: onnx.ModelProto, folder: Path, location: str = "weights.bin") -> Path:
    path = folder / "model.onnx"
    onnx.save_model(
        proto, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location=location, size_threshold=0
    )
    return path


FEED = {"x": np.random.default_rng(1).standard_normal((2, 64)).astype(np.float32)}


def test_external_data_round_trip_stays_lazy_and_exact(tmp_path: Path) -> None:
    source = save_external(mlp_proto(), tmp_path)
    model = load(source)
    constants = [
        t for t in model.graph.tensors().values() if (hasattr(t, "_values") and not hasattr(t, "inputs")) or False
    ]
    lazy = [t for t in model.graph.tensors().values() if isinstance(getattr(t, "_values", None), ExternalLazyValues)]
    assert {t.name for t in lazy} == {"w1", "w2"}, constants
    array = read_constant(lazy[0])
    assert array.dtype == np.float32 and array.shape in ((64, 32), (32, 16))
    assert isinstance(lazy[0]._values, ExternalLazyValues), "read_constant must not cache the weights"
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    info = save(model, out_dir / "opt.onnx")
    assert info.external_data_path == out_dir / "opt.onnx.data"
    assert info.external_data_path.stat().st_size >= (64 * 32 + 32 * 16) * 4
    assert_bit_exact(outputs(source, FEED), outputs(out_dir / "opt.onnx", FEED))


def test_small_embedded_model_stays_embedded(tmp_path: Path) -> None:
    source = tmp_path / "m.onnx"
    onnx.save_model(mlp_proto(), str(source))
    info = save(load(source), tmp_path / "o.onnx")
    assert info.external_data_path is None
    assert not (tmp_path / "o.onnx.data").exists()
    assert_bit_exact(outputs(source, FEED), outputs(tmp_path / "o.onnx", FEED))


@pytest.mark.parametrize("location", ["../weights.bin", "/etc/passwd", "sub/../../weights.bin"])
def test_external_location_outside_folder_is_refused(tmp_path: Path, location: str) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    source = save_external(mlp_proto(), folder)
    proto = onnx.load(str(source), load_external_data=False)
    for tensor in proto.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    (tmp_path / "weights.bin").write_bytes((folder / "weights.bin").read_bytes())
    onnx.save_model(proto, str(source))
    with pytest.raises(BadInputError, match="outside the model folder|absolute path"):
        load(source)


def test_symlink_out_of_folder_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    source = save_external(mlp_proto(), folder)
    outside = tmp_path / "elsewhere.bin"
    os.replace(folder / "weights.bin", outside)
    os.symlink(outside, folder / "weights.bin")
    with pytest.raises(BadInputError, match="resolves outside the model folder"):
        load(source)


def test_missing_and_truncated_external_data(tmp_path: Path) -> None:
    source = save_external(mlp_proto(), tmp_path)
    data = tmp_path / "weights.bin"
    content = data.read_bytes()
    data.write_bytes(content[: len(content) // 2])
    with pytest.raises(BadInputError, match="too short|truncated"):
        load(source)
    data.unlink()
    with pytest.raises(BadInputError, match="not found"):
        load(source)


@pytest.mark.parametrize(("opset", "expected_ir"), [(9, 4), (13, 7), (17, 8), (21, 10)])
def test_written_ir_version_is_the_lowest_the_opset_needs(tmp_path: Path, opset: int, expected_ir: int) -> None:
    proto = mlp_proto()
    proto.opset_import[0].version = opset
    proto.ir_version = 14  # what onnx 1.23 writes by default; onnxruntime 1.31 refuses it
    source = tmp_path / "m.onnx"
    onnx.save_model(proto, str(source))
    info = save(load(source), tmp_path / "o.onnx")
    assert info.ir_version == expected_ir
    assert onnx.load(str(tmp_path / "o.onnx")).ir_version == expected_ir
    assert_bit_exact(outputs(proto_with_ir(proto, expected_ir), FEED), outputs(tmp_path / "o.onnx", FEED))


def proto_with_ir(proto: onnx.ModelProto, ir: int) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(proto)
    copy.ir_version = ir
    return copy


def test_failed_save_leaves_no_partial_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = tmp_path / "m.onnx"
    onnx.save_model(mlp_proto(), str(source))
    model = load(source)
    target = tmp_path / "out.onnx"

    def explode(*_args: object, **_kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("onnxopt.model_io.os.replace", explode)
    with pytest.raises(OSError, match="disk full"):
        save(model, target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def test_model_with_cycle_and_unknown_op_are_refused(tmp_path: Path) -> None:
    cycle = oh.make_model(
        oh.make_graph(
            [oh.make_node("Relu", ["b"], ["a"]), oh.make_node("Relu", ["a"], ["b"])],
            "cycle",
            [],
            [oh.make_tensor_value_info("b", onnx.TensorProto.FLOAT, [1])],
        ),
        opset_imports=[oh.make_opsetid("", 17)],
        ir_version=8,
    )
    path = tmp_path / "cycle.onnx"
    path.write_bytes(cycle.SerializeToString())
    with pytest.raises(BadInputError, match="cycle"):
        load(path)
    unknown = onnx.parser.parse_model(
        '<ir_version: 8, opset_import: ["" : 17]> g (float[2] x) => (float[2] y) { y = FancyRelu(x) }'
    )
    path.write_bytes(unknown.SerializeToString())
    with pytest.raises(BadInputError, match="FancyRelu"):
        load(path)


def test_custom_domain_ops_are_accepted(tmp_path: Path) -> None:
    proto = onnx.parser.parse_model(
        '<ir_version: 8, opset_import: ["" : 17, "com.example" : 1]> g (float[2] x) => (float[2] y) '
        "{ a = Identity(x) \n y = com.example.Fancy(a) }"
    )
    path = tmp_path / "custom.onnx"
    path.write_bytes(proto.SerializeToString())
    model = load(path)
    save(model, tmp_path / "out.onnx")
    written = onnx.load(str(tmp_path / "out.onnx"))
    assert {(o.domain, o.version) for o in written.opset_import} == {("", 17), ("com.example", 1)}


IF_BOTH_BRANCHES = """
<ir_version: 8, opset_import: ["" : 17, "local" : 1]>
g (bool c, float[4, 256] x) => (float[4, 256] y) {
    y = If(c) <
        then_branch = t () => (float[4, 256] a) { a = MatMul(x, w) },
        else_branch = e () => (float[4, 256] b) {
            p = local.Twice(x)
            b = MatMul(p, w)
        }
    >
}
<domain: "local", opset_import: ["" : 17]>
Twice (v) => (o) { o = Add(v, v) }
"""


def test_subgraphs_and_functions_load_and_outer_weights_are_written_once(tmp_path: Path) -> None:
    proto = onnx.parser.parse_model(IF_BOTH_BRANCHES)
    weight = np.random.default_rng(0).standard_normal((256, 256)).astype(np.float32)
    proto.graph.initializer.append(onnx.numpy_helper.from_array(weight, "w"))
    source = tmp_path / "if.onnx"
    source.write_bytes(proto.SerializeToString())
    save(load(source), tmp_path / "out.onnx")
    assert (tmp_path / "out.onnx").stat().st_size < source.stat().st_size + 1024, "the weight must not be duplicated"
    for flag in (True, False):
        feed = {"c": np.array(flag), "x": np.random.default_rng(1).standard_normal((4, 256)).astype(np.float32)}
        assert_bit_exact(outputs(source, feed), outputs(tmp_path / "out.onnx", feed))


def test_initializers_listed_as_inputs_stay_inputs_from_ir4(tmp_path: Path) -> None:
    proto = mlp_proto()
    proto.graph.input.append(onnx.helper.make_tensor_value_info("w2", onnx.TensorProto.FLOAT, [32, 16]))
    source = tmp_path / "m.onnx"
    source.write_bytes(proto.SerializeToString())
    save(load(source), tmp_path / "o.onnx")
    assert [i.name for i in onnx.load(str(tmp_path / "o.onnx")).graph.input] == ["x", "w2"]
