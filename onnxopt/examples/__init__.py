"""A small real model shipped with the package, for ``onnxopt optimize --example``.

``digits_cnn.onnx`` is a CNN trained on scikit-learn's digits (3 convs, 2 dense layers);
``digits_inputs.npz`` holds 64 held-out test images in the DATA format.
"""

from __future__ import annotations

from pathlib import Path

EXAMPLE_DIR = Path(__file__).resolve().parent
EXAMPLE_MODEL = EXAMPLE_DIR / "digits_cnn.onnx"
EXAMPLE_INPUTS = EXAMPLE_DIR / "digits_inputs.npz"
# The exporter already fused this model's BatchNorms, so the exact cleanup passes have
# nothing to do on it; the example shows a pass that does (half the size, same accuracy).
EXAMPLE_PRESET = "fp16"
