"""Half-precision tensors computed from their fp32 source when read, never held.

Converting an external-data model must not pull its weights into memory. A converted
weight is kept as a recipe — the source's lazy values plus the target type — and
graph-surgeon's exporter asks for its TensorProto only when the model is written (or
handed to a runtime), one tensor at a time.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx.numpy_helper
from onnx_graphsurgeon.ir.tensor import LazyValues


class HalfLazyValues(LazyValues):
    """Half-precision values of an external fp32 tensor, computed each time they are read.

    Converting an external-data model must not hold its weights: the half tensor stays a
    recipe (source tensor + target type) until it is written or read, one tensor at a time.
    """

    def __init__(self, source: LazyValues, half_np: np.dtype) -> None:  # no TensorProto: skip the base init
        self.source = source
        self.half_np = np.dtype(half_np)
        self.shape = tuple(source.shape)
        self.dtype = self.half_np
        self.nbytes = int(np.prod(self.shape, dtype=np.int64)) * self.half_np.itemsize

    def load(self) -> np.ndarray:
        return np.asarray(self.source.load()).astype(self.half_np)

    @property
    def tensor(self) -> onnx.TensorProto:  # what graph-surgeon's exporter writes
        return onnx.numpy_helper.from_array(self.load())

    def __repr__(self) -> str:
        return f"HalfLazyValues(shape={self.shape}, dtype={self.half_np})"
