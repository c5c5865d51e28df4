"""Shared inputs of the tune tests: the trained digits CNN with its held-out split and calibration set."""

from __future__ import annotations

from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[1] / "data"


@pytest.fixture
def digits() -> dict[str, Path]:
    return {"model": DATA / "digits_cnn.onnx", "data": DATA / "digits_test.npz", "calib": DATA / "digits_calib.npz"}
