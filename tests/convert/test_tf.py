"""Keras files and TensorFlow SavedModels → ONNX through tf2onnx; runs where the tf extra is installed."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from tests.cli.test_cli import assert_one_line_error, invoke
from tests.convert.conftest import files_in

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
tf = pytest.importorskip("tensorflow", reason="the tf extra (TensorFlow) is not installed")
pytest.importorskip("tf2onnx", reason="the tf extra (tf2onnx) is not installed")
keras = pytest.importorskip("keras", reason="the tf extra (Keras) is not installed")


@pytest.fixture(scope="module")
def keras_model() -> object:
    keras.utils.set_random_seed(0)
    image = keras.Input((8, 8, 1), name="image")
    hidden = keras.layers.Conv2D(6, 3, activation="relu")(image)
    hidden = keras.layers.GlobalAveragePooling2D()(hidden)
    probabilities = keras.layers.Dense(10, activation="softmax", name="probs")(hidden)
    return keras.Model(image, probabilities)


def test_keras_file_converts_and_agrees(tmp_path: Path, keras_model: object) -> None:
    source = tmp_path / "model.keras"
    keras_model.save(source)
    result = invoke("convert", source, "-o", tmp_path / "model.onnx", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["framework"] == "tensorflow" and summary["inputs"] == ["image:float32:?,8,8,1"]
    images = np.random.default_rng(0).random((5, 8, 8, 1), dtype=np.float32)
    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    (probabilities,) = session.run(None, {"image": images})
    np.testing.assert_allclose(probabilities, keras_model(images).numpy(), rtol=1e-5, atol=1e-6)


def test_saved_model_folder_converts_with_its_signature(tmp_path: Path, keras_model: object) -> None:
    folder = tmp_path / "saved"
    keras_model.export(str(folder), verbose=False)
    result = invoke("convert", folder, "-o", tmp_path / "model.onnx", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["notes"] == ["signature serving_default"] and summary["agreement"]["passed"]
    images = np.random.default_rng(1).random((3, 8, 8, 1), dtype=np.float32)
    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    (probabilities,) = session.run(None, {"image": images})
    np.testing.assert_allclose(probabilities, keras_model(images).numpy(), rtol=1e-5, atol=1e-6)
    assert_one_line_error(invoke("convert", folder, "--signature", "nope", "-o", tmp_path / "x.onnx"), 2,
                          "no signature 'nope'")


def test_broken_keras_file_is_bad_input(tmp_path: Path) -> None:
    source = tmp_path / "broken.keras"
    source.write_bytes(b"not a zip")
    assert_one_line_error(invoke("convert", source, "-o", tmp_path / "m.onnx"), 2, "Keras cannot load it")
    assert files_in(tmp_path) == ["broken.keras"]
