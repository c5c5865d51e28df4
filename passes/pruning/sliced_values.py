"""Weights cut from their source when read, never held: pruning an external-data model stays lazy.

A pruned weight of a 30 GB model must not pull the model into memory. When a removed
unit's columns are cut from a lazily loaded tensor (external data, or an initializer
graph-surgeon has not decoded yet), the result is kept as a recipe — the source, the
axis, the indices kept — and is computed only when the model is written or handed to a
runtime, one tensor at a time. Refitted weights are new numbers and live in memory.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx.numpy_helper
from onnx_graphsurgeon.ir.tensor import LazyValues


class SlicedLazyValues(LazyValues):
    """``take(source, kept, axis)`` of a lazily loaded tensor, computed each time it is read."""

    def __init__(self, source: LazyValues, axis: int, kept: np.ndarray) -> None:  # no TensorProto: skip base init
        self.source = source
        self.axis = int(axis)
        self.kept = np.asarray(kept, dtype=np.int64)
        shape = list(source.shape)
        shape[self.axis] = int(self.kept.size)
        self.shape = tuple(int(dim) for dim in shape)
        self.dtype = source.dtype
        itemsize = int(source.nbytes) // max(1, int(np.prod(source.shape, dtype=np.int64)))
        self.nbytes = int(np.prod(self.shape, dtype=np.int64)) * itemsize

    def load(self) -> np.ndarray:
        return np.ascontiguousarray(np.take(np.asarray(self.source.load()), self.kept, axis=self.axis))

    @property
    def tensor(self) -> onnx.TensorProto:  # what graph-surgeon's exporter writes
        return onnx.numpy_helper.from_array(self.load())

    def __repr__(self) -> str:
        return f"SlicedLazyValues(shape={self.shape}, axis={self.axis})"
