"""The trained digits CNN and its held-out test split: a real model whose accuracy counts.

A small CNN (three convolutions, two dense layers) trained on scikit-learn's 8×8 digits;
its fp32 top-1 accuracy on the 540 held-out images is 0.9889. A lossy pass (fp16, int8,
pruning) on this model is judged by how much of that accuracy it keeps. The files live
in ``tests/data`` (the model is also shipped as ``onnxopt/examples/digits_cnn.onnx``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from models.sessions import ModelLike, output_names, session_for
from onnxopt.errors import BadInputError

DATA_DIR = Path(__file__).resolve().parent.parent / "tests" / "data"
MODEL_PATH = DATA_DIR / "digits_cnn.onnx"
TEST_PATH = DATA_DIR / "digits_test.npz"
CALIBRATION_PATH = DATA_DIR / "digits_calib.npz"
RECORDED_ACCURACY = 0.9889
TEST_IMAGES = 540


def model_path() -> Path:
    """The trained model: ``tests/data`` copy, else the one shipped with onnxopt."""
    if MODEL_PATH.is_file():
        return MODEL_PATH
    from onnxopt.examples import EXAMPLE_MODEL

    return EXAMPLE_MODEL


def held_out_split() -> dict[str, np.ndarray]:
    """``input`` [540, 1, 8, 8] float32 in [0, 1] and ``labels`` [540] int64."""
    with np.load(TEST_PATH) as archive:
        return {"input": archive["input"], "labels": archive["labels"]}


def calibration_data() -> dict[str, np.ndarray]:
    """``input`` [128, 1, 8, 8]: training images, for calibrating quantization."""
    with np.load(CALIBRATION_PATH) as archive:
        return {"input": archive["input"]}


def top1_accuracy(model: ModelLike, data: dict[str, np.ndarray] | str | Path | None = None,
                  batch_size: int = 256) -> float:
    """Fraction of ``data`` (default: the held-out split) whose arg-max logit is the label.

    ``data`` holds ``input`` and ``labels`` (a dict or an .npz path). The model's first
    input takes the images and its first output gives the logits.
    """
    if data is None:
        data = held_out_split()
    elif not isinstance(data, dict):
        with np.load(data) as archive:
            data = {name: archive[name] for name in archive.files}
    if "input" not in data or "labels" not in data:
        raise BadInputError("digits data needs arrays 'input' and 'labels'")
    session = session_for(model)
    input_name = session.get_inputs()[0].name
    logits_name = output_names(session)[0]
    images, labels = data["input"], np.asarray(data["labels"])
    correct = 0
    for start in range(0, len(images), batch_size):
        logits = session.run([logits_name], {input_name: images[start : start + batch_size]})[0]
        correct += int((np.argmax(logits, axis=1) == labels[start : start + batch_size]).sum())
    return correct / len(images)
