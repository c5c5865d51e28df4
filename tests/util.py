"""Helpers shared by the tests: build models from ONNX text, run them, compare outputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnx.parser

from onnxopt.data import make_feeds
from onnxopt.model_io import Model, from_proto, to_proto
from onnxopt.pass_api import PassContext
from onnxopt.runtime import create_session, run_session

DATA_DIR = Path(__file__).resolve().parent / "data"
BACKEND_DATA = Path(onnx.__file__).resolve().parent / "backend" / "test" / "data"


def model_from_text(text: str) -> Model:
    """A Model from ONNX text syntax (onnx.parser), imported without up-front validation.

    Tests often build a partial graph and complete it afterwards; ``load_proto`` validates.
    """
    return from_proto(onnx.parser.parse_model(text))


def outputs(model: Model | onnx.ModelProto | str | Path, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Outputs under onnxruntime on the CPU with its own graph optimizations off."""
    return run_session(create_session(model), feed)


def random_feed_for(model: Model, seed: int = 0) -> dict[str, np.ndarray]:
    feeds = make_feeds(to_proto(model), random_count=seed + 1)
    return list(feeds)[seed]


def assert_bit_exact(expected: dict[str, np.ndarray], actual: dict[str, np.ndarray]) -> None:
    assert list(expected) == list(actual)
    for name in expected:
        assert expected[name].dtype == actual[name].dtype, name
        assert expected[name].shape == actual[name].shape, name
        np.testing.assert_array_equal(actual[name], expected[name], err_msg=name)


def run_pass(pass_cls, model: Model, **options) -> tuple[Model, object]:
    """Run one pass on a copy of ``model``; returns (new model, PassResult)."""
    work = model.copy()
    instance = pass_cls(pass_cls.make_options(options) if options else None)
    result = instance.run(work, PassContext())
    return work, result


def op_types(model: Model) -> list[str]:
    return [node.op for node in model.graph.nodes]
