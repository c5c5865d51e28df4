"""DATA and random feeds: shapes, ranges and the errors users see."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.parser

from onnxopt.data import DEFAULT_SYMBOLIC_DIM, make_feeds
from tests.util import outputs

EMBEDDING = """
<ir_version: 8, opset_import: ["" : 17]>
g (int64[batch, sequence] ids) => (float[batch, sequence, 8] y) {
    y = Gather(table, ids)
}
"""


def test_random_ids_stay_inside_the_table_they_index() -> None:
    proto = onnx.parser.parse_model(EMBEDDING)
    table = np.random.default_rng(0).standard_normal((5, 8)).astype(np.float32)
    proto.graph.initializer.append(onnx.numpy_helper.from_array(table, "table"))
    for feed in make_feeds(proto, random_count=4):
        assert feed["ids"].shape == (1, DEFAULT_SYMBOLIC_DIM)
        assert feed["ids"].min() >= 0 and feed["ids"].max() < 5
        assert outputs(proto, feed)["y"].shape == (1, DEFAULT_SYMBOLIC_DIM, 8)
