"""An MLP whose weights exceed protobuf's 2 GB limit at full size: the large-model path.

Weights live in an external data file beside the model (``<name>.onnx.data``, every
tensor 4 KiB aligned, as ``onnxopt.model_io.save`` writes them). Each weight is drawn and
written in row chunks straight into that file, so building the 2.5 GB ``base`` model holds
one chunk (16 MB) in memory, never the model. The smaller sizes use external data too,
so the tests exercise the same path in megabytes.

Layers: ``MatMul + Add`` with He-normal weights and ReLU between them, so activations
keep their scale through the stack.

Sizes (widths of the input, the hidden activations and the output): ``tiny`` (256, 4×512,
10: 3.7 MB, for tests), ``small`` (1024, 6×2048, 1000: 100 MB), ``base`` (1024, 10×8192,
1000: 2.48 GB, past protobuf's 2 GiB).

Run ``python -m models.large_mlp OUT.onnx --size base``.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import math
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from onnx import TensorProto

from models.builder import GraphBuilder, run_cli, write_model

SEED = 2048
CHUNK_BYTES = 16 * 1024 * 1024
ALIGNMENT_BYTES = 4096
BIAS_STD = 0.01


@dataclass(frozen=True)
class MlpSize:
    input_features: int
    hidden_features: int
    hidden_layers: int
    output_features: int

    def layer_shapes(self) -> list[tuple[int, int]]:
        """``(in, out)`` of every MatMul, first to last (``hidden_layers`` hidden activations)."""
        widths = [self.input_features] + [self.hidden_features] * self.hidden_layers + [self.output_features]
        return list(itertools.pairwise(widths))

    @property
    def weight_bytes(self) -> int:
        return sum((rows + 1) * cols * 4 for rows, cols in self.layer_shapes())


SIZES = {
    "tiny": MlpSize(input_features=256, hidden_features=512, hidden_layers=4, output_features=10),
    "small": MlpSize(input_features=1024, hidden_features=2048, hidden_layers=6, output_features=1000),
    "base": MlpSize(input_features=1024, hidden_features=8192, hidden_layers=10, output_features=1000),
}


def _chunks(rng: np.random.Generator, rows: int, cols: int, std: float) -> Iterator[np.ndarray]:
    """Normal(0, std) float32 rows of a ``[rows, cols]`` matrix, about CHUNK_BYTES at a time."""
    step = max(1, CHUNK_BYTES // (cols * 4))
    for start in range(0, rows, step):
        block = rng.standard_normal((min(step, rows - start), cols), dtype=np.float32)
        block *= np.float32(std)
        yield block


def _write_tensor(stream: BinaryIO, chunks: Iterator[np.ndarray]) -> tuple[int, int]:
    """Append ``chunks`` at the next aligned offset; returns (offset, length)."""
    position = stream.tell()
    pad = (-position) % ALIGNMENT_BYTES
    stream.write(b"\0" * pad)
    offset = position + pad
    for chunk in chunks:
        stream.write(np.ascontiguousarray(chunk, dtype="<f4").tobytes())
    return offset, stream.tell() - offset


def build(path: str | os.PathLike[str], size: str = "base", seed: int = SEED) -> Path:
    """Write the MLP at ``size`` to ``path`` plus ``path.onnx.data``, streaming the weights."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    spec = SIZES[size]
    data_path = path.with_name(path.name + ".data")
    rng = np.random.default_rng(seed)
    b = GraphBuilder(f"large-mlp-{size}")
    x = b.input("input", TensorProto.FLOAT, ["batch", spec.input_features])
    handle, temp = tempfile.mkstemp(prefix=f".{data_path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            layers = spec.layer_shapes()
            for index, (rows, cols) in enumerate(layers):
                weight_name, bias_name = f"layers.{index}.weight", f"layers.{index}.bias"
                offset, length = _write_tensor(stream, _chunks(rng, rows, cols, math.sqrt(2.0 / rows)))
                b.external_initializer(weight_name, TensorProto.FLOAT, [rows, cols], data_path.name, offset, length)
                offset, length = _write_tensor(stream, _chunks(rng, 1, cols, BIAS_STD))
                b.external_initializer(bias_name, TensorProto.FLOAT, [cols], data_path.name, offset, length)
                x = b.node("MatMul", [x, weight_name], f"/layers.{index}/MatMul")
                last = index == len(layers) - 1
                x = b.node("Add", [x, bias_name], f"/layers.{index}/Add", outputs=["output"] if last else 1)
                if not last:
                    x = b.node("Relu", [x], f"/layers.{index}/Relu")
        os.chmod(temp, 0o644)
        os.replace(temp, data_path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    b.output("output", TensorProto.FLOAT, ["batch", spec.output_features])
    return write_model(b.model(f"MLP ({size}), seeded random weights in external data"), path)


def sample_inputs(size: str = "base", batch_size: int = 1, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"input": rng.standard_normal((batch_size, SIZES[size].input_features)).astype(np.float32)}


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=int, default=SEED)


if __name__ == "__main__":
    run_cli(__doc__.splitlines()[0], build, _arguments)
