"""Sessions of models with external data link the data, never copy it; serialized models parse back the same."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx

from models.cache import cached_model
from onnxopt.model_io import checkable_proto, load, serialize_model, to_proto, write_session_copy
from onnxopt.runtime import create_session, model_on_disk, run_session
from tests.util import outputs


def test_session_copy_hard_links_the_external_data(tmp_path):
    source = cached_model("large_mlp", "tiny")
    model = load(source)
    assert model.had_external_data
    path = write_session_copy(model, tmp_path)
    data_files = [file for file in tmp_path.iterdir() if file.suffix == ".data"]
    assert data_files
    original = source.with_name(source.name + ".data")
    assert all(os.path.samefile(file, original) for file in data_files)  # the same file: nothing copied
    feed = {"input": np.random.default_rng(0).standard_normal((2, 256)).astype(np.float32)}
    np.testing.assert_array_equal(run_session(create_session(path), feed)["output"], outputs(source, feed)["output"])


def test_model_on_disk_of_an_external_model_is_a_linked_folder_and_is_removed_after():
    model = load(cached_model("large_mlp", "tiny"))
    with model_on_disk(model) as where:
        folder = Path(where).parent
        assert Path(where).exists()
    assert not folder.exists()


def test_streamed_serialization_parses_to_the_same_model():
    model = load(cached_model("minilm"))
    expected, actual = to_proto(model), onnx.load_from_string(serialize_model(model))
    by_name = {tensor.name: tensor.SerializeToString() for tensor in expected.graph.initializer}
    assert {tensor.name: tensor.SerializeToString() for tensor in actual.graph.initializer} == by_name
    for proto in (expected, actual):
        proto.graph.ClearField("initializer")
    assert actual.SerializeToString() == expected.SerializeToString()


def test_checkable_proto_holds_no_weight_bytes():
    model = load(cached_model("minilm"))
    light = checkable_proto(model)
    assert light.ByteSize() < 1_000_000 < to_proto(model).ByteSize()
    names = {tensor.name for tensor in light.graph.initializer}
    assert names == {tensor.name for tensor in to_proto(model).graph.initializer}


def test_a_model_that_lost_its_folder_is_an_internal_error_not_bad_input(tmp_path):
    import pytest

    from onnxopt.errors import BadInputError
    from onnxopt.model_io import save

    model = load(cached_model("large_mlp", "tiny"))
    model.base_dir = None  # what islands of external-data models used to be
    with pytest.raises(RuntimeError) as raised:
        save(model, tmp_path / "out.onnx")
    assert not isinstance(raised.value, BadInputError) and "internal error" in str(raised.value)
