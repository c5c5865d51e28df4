"""A 1-D convolutional audio model with long kernels: one second of 16 kHz audio, 255/127/63 taps.

Three Conv1d + ReLU layers (kernels 255, 127 and 63 taps, "same" padding: learned filter banks of the
SincNet/wav2vec front-end kind), then global average pooling and a linear classifier. Weights are seeded
He-normal, so activations keep unit scale through the stack. Long kernels are where FFT convolution
beats direct convolution (its cost does not grow with the taps); the fast-conv pass targets this model.

Sizes: ``tiny`` (4 channels, 2000 samples), ``small`` (8 channels, 8000 samples), ``base`` (16 channels,
16000 samples = one second at 16 kHz). Run ``python -m models.audio_conv OUT.onnx --size base``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from onnx import TensorProto

from models.builder import GraphBuilder, run_cli, write_model

SEED = 16_000
KERNELS = (255, 127, 63)
CLASSES = 10


@dataclass(frozen=True)
class AudioSize:
    channels: int
    samples: int


SIZES = {"tiny": AudioSize(4, 2000), "small": AudioSize(8, 8000), "base": AudioSize(16, 16000)}


def build_proto(size: str = "base", seed: int = SEED):
    spec = SIZES[size]
    rng = np.random.default_rng(seed)
    b = GraphBuilder(f"audio-conv-{size}")
    x = b.input("audio", TensorProto.FLOAT, ["batch", 1, spec.samples])
    channels = 1
    for index, taps in enumerate(KERNELS):
        fan_in = channels * taps
        weight = rng.standard_normal((spec.channels, channels, taps)) * np.sqrt(2.0 / fan_in)
        bias = rng.standard_normal(spec.channels) * 0.1
        w = b.initializer(f"conv{index}.weight", weight.astype(np.float32))
        bias_name = b.initializer(f"conv{index}.bias", bias.astype(np.float32))
        x = b.node("Conv", [x, w, bias_name], f"/conv{index}/Conv", pads=[taps // 2, taps // 2])
        x = b.node("Relu", [x], f"/conv{index}/Relu")
        channels = spec.channels
    pooled = b.node("GlobalAveragePool", [x], "/pool/GlobalAveragePool")
    flat = b.node("Flatten", [pooled], "/pool/Flatten")
    head = rng.standard_normal((spec.channels, CLASSES)) / np.sqrt(spec.channels)
    b.node("Gemm", [flat, b.initializer("fc.weight", head.astype(np.float32).T.copy()),
                    b.initializer("fc.bias", np.zeros(CLASSES, np.float32))], "/fc/Gemm", outputs=["logits"],
           transB=1)
    b.output("logits", TensorProto.FLOAT, ["batch", CLASSES])
    return b.model("1-D convolutions with 255/127/63-tap kernels over raw audio")


def build(path: str | os.PathLike[str], size: str = "base", seed: int = SEED) -> Path:
    """Write the audio model at ``size`` to ``path``."""
    return write_model(build_proto(size, seed), path)


def sample_inputs(size: str = "base", batch_size: int = 1, seed: int = 0) -> dict[str, np.ndarray]:
    """Low-passed noise of unit scale, shaped like the model's input."""
    spec = SIZES[size]
    rng = np.random.default_rng(seed)
    audio = rng.standard_normal((batch_size, 1, spec.samples))
    smooth = np.ones(8) / 8  # a moving average: noise with less energy at high frequencies, like speech
    audio = np.apply_along_axis(lambda row: np.convolve(row, smooth, mode="same"), 2, audio)
    return {"audio": (audio / audio.std()).astype(np.float32)}


if __name__ == "__main__":
    run_cli(__doc__.splitlines()[0], build)
