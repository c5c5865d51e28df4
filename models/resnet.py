"""ResNet-18 / ResNet-50 (torchvision's v1.5 layout) with seeded random weights.

7×7 stem, max-pool, four stages of basic (3×3, 3×3) or bottleneck (1×1, 3×3, 1×1)
blocks with stride on the 3×3 conv, residual Adds, global average pool and a Gemm head.
Every convolution is followed by its own BatchNormalization node (not fused), with
statistics calibrated on random images (see ``models.convnet``).

Sizes: ``tiny`` (width 8, 32×32 input, 10 classes: for tests), ``small`` (width 32,
112×112, 100 classes), ``base`` (torchvision's ResNet: width 64, 224×224, 1000 classes).

Run ``python -m models.resnet OUT.onnx --arch resnet50 --size base``.
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

SEED = 18_50


@dataclass(frozen=True)
class ResNetSize:
    width: int
    image_size: int
    classes: int


SIZES = {
    "tiny": ResNetSize(width=8, image_size=32, classes=10),
    "small": ResNetSize(width=32, image_size=112, classes=100),
    "base": ResNetSize(width=64, image_size=224, classes=1000),
}
# Blocks per stage and whether the blocks are bottlenecks (expansion 4).
ARCHITECTURES = {"resnet18": ((2, 2, 2, 2), False), "resnet50": ((3, 4, 6, 3), True)}
BOTTLENECK_EXPANSION = 4
# Last BatchNorm of each residual branch starts smaller, as trained ResNets end up: the sum
# of sixteen unit-variance branches would otherwise grow the activations stage after stage.
RESIDUAL_GAMMA_SCALE = 0.4


def _basic_block(net: ConvNet, x: str, in_channels: int, planes: int, stride: int, name: str) -> tuple[str, int]:
    out = net.relu(net.batch_norm(net.conv(x, in_channels, planes, 3, f"{name}.conv1", stride), planes,
                                  f"{name}.bn1"), f"{scope(name)}/relu1")
    out = net.batch_norm(net.conv(out, planes, planes, 3, f"{name}.conv2"), planes, f"{name}.bn2",
                         RESIDUAL_GAMMA_SCALE)
    return _merge(net, x, out, in_channels, planes, stride, name), planes


def _bottleneck(net: ConvNet, x: str, in_channels: int, planes: int, stride: int, name: str) -> tuple[str, int]:
    out_channels = planes * BOTTLENECK_EXPANSION
    out = net.relu(net.batch_norm(net.conv(x, in_channels, planes, 1, f"{name}.conv1"), planes, f"{name}.bn1"),
                   f"{scope(name)}/relu1")
    out = net.relu(net.batch_norm(net.conv(out, planes, planes, 3, f"{name}.conv2", stride), planes,
                                  f"{name}.bn2"), f"{scope(name)}/relu2")
    out = net.batch_norm(net.conv(out, planes, out_channels, 1, f"{name}.conv3"), out_channels, f"{name}.bn3",
                         RESIDUAL_GAMMA_SCALE)
    return _merge(net, x, out, in_channels, out_channels, stride, name), out_channels


def _merge(net: ConvNet, x: str, branch: str, in_channels: int, out_channels: int, stride: int, name: str) -> str:
    shortcut = x
    if stride != 1 or in_channels != out_channels:
        shortcut = net.batch_norm(net.conv(x, in_channels, out_channels, 1, f"{name}.downsample.0", stride),
                                  out_channels, f"{name}.downsample.1")
    return net.relu(net.b.node("Add", [branch, shortcut], f"{scope(name)}/Add"), f"{scope(name)}/relu_out")


def _resnet(net: ConvNet, image: str, arch: str, size: ResNetSize) -> tuple[str, int]:
    stage_blocks, bottleneck = ARCHITECTURES[arch]
    width = size.width
    x = net.relu(net.batch_norm(net.conv(image, 3, width, 7, "conv1", stride=2), width, "bn1"), "/stem")
    x = net.b.node("MaxPool", [x], "/maxpool/MaxPool", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    channels = width
    block = _bottleneck if bottleneck else _basic_block
    for stage, blocks in enumerate(stage_blocks):
        planes = width * 2**stage
        for index in range(blocks):
            stride = 2 if stage > 0 and index == 0 else 1
            x, channels = block(net, x, channels, planes, stride, f"layer{stage + 1}.{index}")
    return net.classifier(x, channels, size.classes, "fc"), size.classes


def build(path: str | os.PathLike[str], size: str = "base", arch: str = "resnet50", seed: int = SEED) -> Path:
    """Write a ResNet (``arch`` resnet18 or resnet50) at ``size`` to ``path``."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown ResNet {arch!r} (choose from {', '.join(ARCHITECTURES)})")
    spec = SIZES[size]
    proto = build_calibrated(f"{arch}-{size}", partial(_resnet, arch=arch, size=spec), spec.image_size, seed)
    return write_model(proto, path)


def sample_inputs(size: str = "base", batch_size: int = 1, seed: int = 0) -> dict[str, np.ndarray]:
    return sample_images(SIZES[size].image_size, batch_size, seed)


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--arch", choices=sorted(ARCHITECTURES), default="resnet50")
    parser.add_argument("--seed", type=int, default=SEED)


if __name__ == "__main__":
    run_cli(__doc__.splitlines()[0], build, _arguments)
