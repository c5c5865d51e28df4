"""quantize-embeddings: int8 GatherBlockQuantized tables, error within half a step, shared tables once."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnx.parser

from onnxopt.model_io import from_proto, read_constant, save
from onnxopt.pass_api import PassContext
from onnxopt.passes.quantization.quantize_embeddings import QuantizeEmbeddings, quantize_rows
from tests.util import op_types, outputs

ROWS, COLS = 4096, 64

TWO_LOOKUPS = """
<ir_version: 8, opset_import: ["" : 17]>
g (int64[2, 5] ids, int64[2, 5] other) => (float[2, 5, 64] y) {
    a = Gather(table, ids)
    b = Gather(table, other)
    y = Add(a, b)
}
"""

TIED = """
<ir_version: 8, opset_import: ["" : 17]>
g (int64[2, 5] ids) => (float[2, 5, 4096] y) {
    a = Gather(table, ids)
    t = Transpose<perm = [1, 0]>(table)
    y = MatMul(a, t)
}
"""


def _model(text: str):
    proto = onnx.parser.parse_model(text)
    table = np.random.default_rng(0).standard_normal((ROWS, COLS)).astype(np.float32)
    proto.graph.initializer.append(onnx.numpy_helper.from_array(table, "table"))
    return from_proto(proto), table


FEED = {"ids": np.array([[0, 1, 2, 3, 4095]] * 2), "other": np.array([[7, 7, 9, 100, 4000]] * 2)}


def test_tables_become_one_int8_gather_block_table_within_half_a_step(tmp_path: Path) -> None:
    model, table = _model(TWO_LOOKUPS)
    before = outputs(model, FEED)["y"]
    save(model, tmp_path / "fp32.onnx")
    result = QuantizeEmbeddings().run(model, PassContext())
    assert result.modified and result.stats["tables"] == 1
    assert op_types(model) == ["GatherBlockQuantized", "GatherBlockQuantized", "Add"]
    first, second = model.graph.nodes[0], model.graph.nodes[1]
    assert first.inputs[0] is second.inputs[0], "one quantized copy of the shared table"
    assert read_constant(first.inputs[0]).dtype == np.uint8 and first.attrs["bits"] == 8
    assert first.domain == "com.microsoft"
    save(model, tmp_path / "int8.onnx")
    assert (tmp_path / "int8.onnx").stat().st_size < 0.3 * (tmp_path / "fp32.onnx").stat().st_size
    after = outputs(tmp_path / "int8.onnx", FEED)["y"]
    _, scales = quantize_rows(table, 32)
    half_steps = (scales[FEED["ids"]] + scales[FEED["other"]]).repeat(32, axis=-1) / 2
    assert np.all(np.abs(after - before) <= half_steps + 1e-6)
    assert np.abs(after - before).max() > 0, "values really went through int8"
    assert not QuantizeEmbeddings().run(model, PassContext()).modified


def test_tied_tables_and_non_onnxruntime_targets_stay_float() -> None:
    tied, _ = _model(TIED)
    result = QuantizeEmbeddings().run(tied, PassContext())
    assert not result.modified and "tied weights" in result.notes[0]
    model, _ = _model(TWO_LOOKUPS)
    result = QuantizeEmbeddings().run(model, PassContext(target="tensorrt"))
    assert not result.modified and op_types(model) == ["Gather", "Gather", "Add"]
