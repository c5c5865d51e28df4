"""Framework pieces the sharing passes stand on: order-independent digests, element reads,
channel energies, sub-byte packing."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.numpy_helper
import onnx_graphsurgeon as gs
import pytest

import onnxopt.external_data
import onnxopt.tensor_content
from onnxopt.bit_packing import pack_last_axis, unpack_last_axis
from onnxopt.input_statistics import ChannelEnergy, collect_channel_energy, padding_mask_input
from onnxopt.model_io import from_proto, load, save
from onnxopt.tensor_content import ElementReader, multiset_digest

RNG = np.random.default_rng(21)


def test_multiset_digest_ignores_order_and_sees_every_bit(tmp_path, monkeypatch):
    monkeypatch.setattr(onnxopt.tensor_content, "CHUNK_BYTES", 1000)
    monkeypatch.setattr(onnxopt.external_data, "CHUNK_BYTES", 1000)
    values = RNG.standard_normal((30, 17)).astype(np.float32)
    same = [values, values.T.copy(), values.reshape(17, 30).copy(), np.sort(values.reshape(-1))]
    digests = {multiset_digest(gs.Constant(f"c{i}", v)) for i, v in enumerate(same)}
    assert len(digests) == 1
    flipped = values.copy()
    flipped[3, 4] = np.nextafter(flipped[3, 4], np.float32(np.inf))
    assert multiset_digest(gs.Constant("f", flipped)) not in digests
    assert multiset_digest(gs.Constant("d", values.astype(np.float64))) not in digests  # another type
    # The same digest, streamed from external data in chunks that split elements.
    proto = onnx.helper.make_model(onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["w"], ["y"])], "g", [],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [30, 17])],
        [onnx.numpy_helper.from_array(values, "w")]), opset_imports=[onnx.helper.make_opsetid("", 17)])
    proto.ir_version = 8
    save(from_proto(proto), tmp_path / "m.onnx", external_data=True)
    external = load(tmp_path / "m.onnx").graph.nodes[0].inputs[0]
    assert multiset_digest(external) in digests
    assert multiset_digest(gs.Constant("s", np.array(["a", "b"]))) is None  # strings have no fixed width


def test_element_reader_reads_the_asked_elements(tmp_path):
    values = RNG.standard_normal((40, 9)).astype(np.float32)
    constant = gs.Constant("w", values)
    reader = ElementReader(constant)
    picks = np.array([0, 5, 359, 100])
    np.testing.assert_array_equal(reader.bits(picks).view(np.float32), values.reshape(-1)[picks])


def test_channel_energy_along_any_axis_with_padding_masked():
    energy = ChannelEnergy(3, axis=1)
    batch = RNG.standard_normal((2, 3, 4, 4))
    energy.add(batch)
    np.testing.assert_allclose(energy.mean, np.mean(batch**2, axis=(0, 2, 3)))
    last = ChannelEnergy(4)
    tokens = RNG.standard_normal((2, 5, 4))
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    last.add(tokens, mask)
    np.testing.assert_allclose(last.mean, np.mean(tokens[mask == 1] ** 2, axis=0))
    with pytest.raises(ValueError):
        last.add(RNG.standard_normal((2, 3)))


def test_collect_channel_energy_streams_a_model_leaving_padding_out():
    proto = onnx.parser.parse_model("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[batch, 5, 6] x, int64[batch, 5] attention_mask) => (float[batch, 5, 6] y) {
            y = Relu(x)
        }
    """)
    model = from_proto(proto)
    assert padding_mask_input(model, "auto") == "attention_mask" and padding_mask_input(model, "") is None
    feeds = [{"x": RNG.standard_normal((4, 5, 6)).astype(np.float32),
              "attention_mask": (np.arange(5)[None, :] < RNG.integers(1, 6, size=(4, 1))).astype(np.int64)}
             for _ in range(3)]
    energies = collect_channel_energy(model, {("y", -1): 6}, feeds, mask_input="attention_mask")
    kept = np.concatenate([np.maximum(f["x"], 0)[f["attention_mask"] == 1] for f in feeds]).astype(np.float64)
    np.testing.assert_allclose(energies[("y", -1)].mean, np.mean(kept**2, axis=0), rtol=1e-6)
    assert energies[("y", -1)].count == sum(int(f["attention_mask"].sum()) for f in feeds)


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
def test_packing_round_trips_and_refuses_widths_that_straddle_bytes(bits):
    codes = RNG.integers(0, 1 << bits, size=(3, 37)).astype(np.uint8)
    np.testing.assert_array_equal(unpack_last_axis(pack_last_axis(codes, bits), bits, 37), codes)
    with pytest.raises(ValueError):
        pack_last_axis(codes, 3)
