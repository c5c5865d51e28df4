"""The trained digits CNN reproduces its recorded fp32 accuracy on the held-out split."""

from __future__ import annotations

import numpy as np
import pytest

from models import digits
from models.sessions import session_for
from onnxopt.examples import EXAMPLE_MODEL


def test_held_out_split_shape():
    split = digits.held_out_split()
    assert split["input"].shape == (digits.TEST_IMAGES, 1, 8, 8)
    assert split["input"].dtype == np.float32
    assert split["input"].min() >= 0.0 and split["input"].max() <= 1.0
    assert sorted(np.unique(split["labels"]).tolist()) == list(range(10))
    assert digits.calibration_data()["input"].shape == (128, 1, 8, 8)


def test_fp32_accuracy_reproduces_recorded_figure():
    accuracy = digits.top1_accuracy(digits.model_path())
    assert accuracy == pytest.approx(digits.RECORDED_ACCURACY, abs=1e-4)
    assert round(accuracy * digits.TEST_IMAGES) == 534


def test_accuracy_from_session_and_npz_path_and_small_batches():
    session = session_for(digits.model_path())
    assert digits.top1_accuracy(session, digits.TEST_PATH, batch_size=7) == pytest.approx(534 / 540)


def test_wrong_labels_lower_the_accuracy():
    split = digits.held_out_split()
    shifted = {"input": split["input"], "labels": (split["labels"] + 1) % 10}
    assert digits.top1_accuracy(digits.model_path(), shifted) < 0.05


def test_packaged_example_is_the_same_model():
    assert EXAMPLE_MODEL.read_bytes() == digits.MODEL_PATH.read_bytes()
