"""A large-kernel depthwise block (RepLKNet / ConvNeXt style): 31x31 depthwise conv on 56x56x64.

x -> depthwise Conv 31x31 (+ bias) -> ReLU -> pointwise Conv 1x1 -> Add x. The depthwise kernel is
where FFT convolution wins: direct convolution costs 961 multiply-adds per output, the FFT's cost is
independent of the kernel size. Weights are seeded; the depthwise filters are normalised per channel so
the block keeps activations of unit scale.

Sizes: ``tiny`` (16 channels, 16x16, 7x7 kernel), ``small`` (32 channels, 28x28, 15x15), ``base``
(64 channels, 56x56, 31x31). Run ``python -m models.large_kernel OUT.onnx --size base``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from onnx import TensorProto

from models.builder import GraphBuilder, run_cli, write_model

SEED = 31_31


@dataclass(frozen=True)
class BlockSize:
    channels: int
    image: int
    kernel: int


SIZES = {"tiny": BlockSize(16, 16, 7), "small": BlockSize(32, 28, 15), "base": BlockSize(64, 56, 31)}


def build_proto(size: str = "base", seed: int = SEED):
    spec = SIZES[size]
    rng = np.random.default_rng(seed)
    c, k = spec.channels, spec.kernel
    b = GraphBuilder(f"large-kernel-{size}")
    x = b.input("image", TensorProto.FLOAT, ["batch", c, spec.image, spec.image])
    depthwise = rng.standard_normal((c, 1, k, k))
    depthwise /= np.sqrt((depthwise**2).sum(axis=(1, 2, 3), keepdims=True))
    dw = b.node("Conv", [x, b.initializer("dw.weight", depthwise.astype(np.float32)),
                         b.initializer("dw.bias", (rng.standard_normal(c) * 0.1).astype(np.float32))],
                "/dw/Conv", group=c, pads=[k // 2] * 4, kernel_shape=[k, k])
    act = b.node("Relu", [dw], "/dw/Relu")
    pointwise = rng.standard_normal((c, c, 1, 1)) * np.sqrt(2.0 / c)
    pw = b.node("Conv", [act, b.initializer("pw.weight", pointwise.astype(np.float32)),
                         b.initializer("pw.bias", np.zeros(c, np.float32))], "/pw/Conv")
    b.node("Add", [pw, x], "/Add", outputs=["output"])
    b.output("output", TensorProto.FLOAT, ["batch", c, spec.image, spec.image])
    return b.model(f"{k}x{k} depthwise large-kernel block")


def build(path: str | os.PathLike[str], size: str = "base", seed: int = SEED) -> Path:
    """Write the block at ``size`` to ``path``."""
    return write_model(build_proto(size, seed), path)


def sample_inputs(size: str = "base", batch_size: int = 1, seed: int = 0) -> dict[str, np.ndarray]:
    spec = SIZES[size]
    rng = np.random.default_rng(seed)
    return {"image": rng.standard_normal((batch_size, spec.channels, spec.image, spec.image)).astype(np.float32)}


if __name__ == "__main__":
    run_cli(__doc__.splitlines()[0], build)
