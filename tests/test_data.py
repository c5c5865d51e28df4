"""DATA and random feeds: shapes, ranges and the errors users see."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.parser
import pytest

from onnxopt.data import DEFAULT_SYMBOLIC_DIM, input_specs, make_feeds, parse_shape_option, random_feed_shapes
from onnxopt.errors import BadInputError
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


HUGE_INPUT = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[1099511627776, 3] pixels, int64[batch] ids) => (float[1099511627776, 3] y) {
    y = Relu(pixels)
}
"""


def test_a_random_feed_too_large_for_memory_is_refused_before_allocating() -> None:
    proto = onnx.parser.parse_model(HUGE_INPUT)
    with pytest.raises(BadInputError) as caught:
        make_feeds(proto)
    message = str(caught.value)
    assert message.startswith("input 'pixels': a random feed of shape [1099511627776, 3] (float32) needs 12.0 TiB")
    assert "the model declares this shape as fixed" in message, "--shape cannot help with a fixed dimension"


def test_the_limit_counts_the_whole_feed_and_the_batch() -> None:
    proto = onnx.parser.parse_model("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[batch, 1024, 1024] a, float[batch, 1024, 1024] b) => (float[batch, 1024, 1024] y) { y = Add(a, b) }
    """)
    specs = input_specs(proto)
    assert random_feed_shapes(specs, batch_size=64)["b"] == [64, 1024, 1024]  # 2 x 256 MiB: under the limit
    with pytest.raises(BadInputError, match=r"over the 1.0 GiB limit; give smaller sizes with --shape a=d0,d1"):
        make_feeds(proto, batch_size=160)  # 2 x 640 MiB


def test_negative_shape_option_is_refused() -> None:
    with pytest.raises(BadInputError, match="dimensions cannot be negative"):
        parse_shape_option(["x=-1,3"])
