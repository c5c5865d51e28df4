"""MobileNetV2 (torchvision's layout) with seeded random weights.

Stem 3×3 stride-2 conv, seventeen inverted-residual blocks (1×1 expansion, 3×3
depthwise, 1×1 linear projection; residual Add when shape allows), a 1×1 conv to the
last channel count, global average pool and a Gemm head. Activations are ReLU6 written
as ``Clip(0, 6)``; every convolution has its own BatchNormalization node, calibrated on
random images (see ``models.convnet``).

Sizes: ``tiny`` (width 0.25, 32×32, 10 classes: for tests), ``small`` (width 0.5,
112×112, 100 classes), ``base`` (MobileNetV2 1.0 at 224×224, 1000 classes).

Run ``python -m models.mobilenet OUT.onnx --size base``.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from models.builder import run_cli, write_model
from models.convnet import ConvNet, build_calibrated, sample_images, scope

SEED = 2_2018
# (expansion t, output channels c, repeats n, first stride s), as in the MobileNetV2 paper.
INVERTED_RESIDUAL_SETTING = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                             (6, 160, 3, 2), (6, 320, 1, 1))
STEM_CHANNELS = 32
LAST_CHANNELS = 1280


@dataclass(frozen=True)
class MobileNetSize:
    width: float
    image_size: int
    classes: int
    last_channels: int


SIZES = {
    "tiny": MobileNetSize(width=0.25, image_size=32, classes=10, last_channels=320),
    "small": MobileNetSize(width=0.5, image_size=112, classes=100, last_channels=640),
    "base": MobileNetSize(width=1.0, image_size=224, classes=1000, last_channels=LAST_CHANNELS),
}


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round channels to a multiple of ``divisor`` without dropping more than 10%."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def _conv_bn_relu6(net: ConvNet, x: str, in_channels: int, out_channels: int, kernel: int, name: str,
                   stride: int = 1, groups: int = 1) -> str:
    out = net.conv(x, in_channels, out_channels, kernel, f"{name}.0", stride, groups)
    out = net.batch_norm(out, out_channels, f"{name}.1")
    return net.relu6(out, scope(name))


def _inverted_residual(net: ConvNet, x: str, in_channels: int, out_channels: int, stride: int, expansion: int,
                       name: str) -> str:
    hidden = round(in_channels * expansion)
    out, index = x, 0
    if expansion != 1:
        out = _conv_bn_relu6(net, out, in_channels, hidden, 1, f"{name}.conv.{index}")
        index += 1
    out = _conv_bn_relu6(net, out, hidden, hidden, 3, f"{name}.conv.{index}", stride, groups=hidden)
    out = net.conv(out, hidden, out_channels, 1, f"{name}.conv.{index + 1}")
    out = net.batch_norm(out, out_channels, f"{name}.conv.{index + 2}", gamma_scale=0.5 if stride == 1 else 1.0)
    if stride == 1 and in_channels == out_channels:
        out = net.b.node("Add", [x, out], f"{scope(name)}/Add")
    return out


def _mobilenet_v2(net: ConvNet, image: str, size: MobileNetSize) -> tuple[str, int]:
    channels = make_divisible(STEM_CHANNELS * size.width)
    x = _conv_bn_relu6(net, image, 3, channels, 3, "features.0", stride=2)
    block = 1
    for expansion, base_channels, repeats, first_stride in INVERTED_RESIDUAL_SETTING:
        out_channels = make_divisible(base_channels * size.width)
        for repeat in range(repeats):
            stride = first_stride if repeat == 0 else 1
            x = _inverted_residual(net, x, channels, out_channels, stride, expansion, f"features.{block}")
            channels = out_channels
            block += 1
    x = _conv_bn_relu6(net, x, channels, size.last_channels, 1, f"features.{block}")
    return net.classifier(x, size.last_channels, size.classes, "classifier.1"), size.classes


def build(path: str | os.PathLike[str], size: str = "base", seed: int = SEED) -> Path:
    """Write a MobileNetV2 at ``size`` to ``path``."""
    spec = SIZES[size]
    proto = build_calibrated(f"mobilenetv2-{size}", partial(_mobilenet_v2, size=spec), spec.image_size, seed)
    return write_model(proto, path)


def sample_inputs(size: str = "base", batch_size: int = 1, seed: int = 0) -> dict[str, np.ndarray]:
    return sample_images(SIZES[size].image_size, batch_size, seed)


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=int, default=SEED)


if __name__ == "__main__":
    run_cli(__doc__.splitlines()[0], build, _arguments)
