"""Low-level int8 quantization helpers shared by every quantization pass.

Two jobs, kept apart from any placement policy:

* the arithmetic: scales and zero points from a real range (symmetric or asymmetric,
  per tensor or per channel), quantizing arrays the way ``QuantizeLinear`` does (round
  half to even, saturate), int32 bias with scale = input scale × weight scale;
* the graph pieces: ``QuantizeLinear``/``DequantizeLinear`` nodes and their constant
  scale/zero-point initializers, with names that never collide with the graph's own.

Why zero must be exact: padding, ReLU outputs and masked positions are zeros; if 0.0 is
not a representable value every one of them picks up an error, so ranges are always
widened to include 0 before a scale is computed.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

# Symmetric int8 uses [-127, 127] so that -x quantizes to -q (TensorRT does the same);
# QuantizeLinear still saturates to -128 for values below the range.
INT8_SYMMETRIC_MAX = 127
# A scale of 0 divides by zero in QuantizeLinear; all-zero tensors get this scale instead.
FALLBACK_SCALE = 1.0
INT32_LIMIT = 2**31 - 1


def qrange(dtype: np.dtype | type) -> tuple[int, int]:
    """The integer range of an 8-bit or 32-bit quantized type."""
    info = np.iinfo(np.dtype(dtype))
    return int(info.min), int(info.max)


@dataclass(frozen=True)
class QuantParams:
    """Scale and zero point of one quantized tensor.

    ``scale`` and ``zero_point`` are 0-d for per-tensor quantization and 1-d along
    ``axis`` for per-channel quantization.
    """

    scale: np.ndarray
    zero_point: np.ndarray
    axis: int | None = None

    @property
    def dtype(self) -> np.dtype:
        return self.zero_point.dtype

    @property
    def per_channel(self) -> bool:
        return self.scale.ndim > 0

    @property
    def symmetric(self) -> bool:
        middle = 0 if self.dtype == np.int8 else 128
        return bool(np.all(self.zero_point.astype(np.int64) == middle))


def params_from_range(
    rmin: np.ndarray | float,
    rmax: np.ndarray | float,
    dtype: np.dtype | type = np.int8,
    symmetric: bool = True,
    axis: int | None = None,
    limit: int = INT8_SYMMETRIC_MAX,
) -> QuantParams:
    """Scale/zero point covering [rmin, rmax] (arrays for per-channel), zero exact.

    Symmetric: zero point 0 for int8 (128 for uint8), scale = max|r| / ``limit`` (127, or
    64 for weights that must not saturate int16 pairs: ``onnxopt.int8_kernels``).
    Asymmetric: the full integer range maps onto [min(rmin, 0), max(rmax, 0)].
    """
    dtype = np.dtype(dtype)
    low = np.minimum(np.asarray(rmin, dtype=np.float64), 0.0)
    high = np.maximum(np.asarray(rmax, dtype=np.float64), 0.0)
    qmin, qmax = qrange(dtype)
    if symmetric:
        amax = np.maximum(np.abs(low), np.abs(high))
        scale = amax / float(limit)
        zero = np.zeros_like(scale) + (0 if dtype == np.int8 else 128)
    else:
        scale = (high - low) / float(qmax - qmin)
        safe = np.where(scale > 0, scale, 1.0)
        zero = np.clip(np.rint(qmin - low / safe), qmin, qmax)
    scale = np.where(scale > 0, scale, FALLBACK_SCALE).astype(np.float32)
    # A float32 scale so tiny that 1/scale overflows would make QuantizeLinear produce inf/nan.
    scale = np.maximum(scale, np.float32(np.finfo(np.float32).tiny * 2**24))
    return QuantParams(scale=scale, zero_point=zero.astype(dtype), axis=axis)


def channel_range(values: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (min, max) of ``values`` along ``axis`` (reducing every other axis)."""
    moved = np.moveaxis(np.asarray(values, dtype=np.float32), axis, 0).reshape(values.shape[axis], -1)
    if moved.shape[1] == 0:
        zeros = np.zeros(values.shape[axis], dtype=np.float32)
        return zeros, zeros
    return moved.min(axis=1), moved.max(axis=1)


def weight_params(weights: np.ndarray, axis: int | None, dtype: np.dtype | type = np.int8,
                  symmetric: bool = True, limit: int = INT8_SYMMETRIC_MAX) -> QuantParams:
    """Weight scales from the weights themselves: per channel along ``axis``, or per tensor.

    ``limit`` bounds the symmetric codes to ±limit (64: safe on every CPU, see
    ``onnxopt.int8_kernels``; 127: the full range).
    """
    if axis is None:
        return params_from_range(float(np.min(weights, initial=0.0)), float(np.max(weights, initial=0.0)),
                                 dtype, symmetric, limit=limit)
    low, high = channel_range(weights, axis)
    return params_from_range(low, high, dtype, symmetric, axis=axis, limit=limit)


def _broadcast(param: np.ndarray, ndim: int, axis: int | None) -> np.ndarray:
    if param.ndim == 0 or axis is None:
        return param
    shape = [1] * ndim
    shape[axis] = param.shape[0]
    return param.reshape(shape)


def quantize_array(values: np.ndarray, params: QuantParams) -> np.ndarray:
    """``QuantizeLinear`` in numpy: round half to even, add zero point, saturate."""
    values = np.asarray(values, dtype=np.float32)
    axis = params.axis if params.axis is None or params.axis >= 0 else params.axis + values.ndim
    scale = _broadcast(params.scale, values.ndim, axis)
    zero = _broadcast(params.zero_point.astype(np.int64), values.ndim, axis)
    qmin, qmax = qrange(params.dtype)
    quantized = np.rint(values / scale) + zero
    return np.clip(quantized, qmin, qmax).astype(params.dtype)


def dequantize_array(quantized: np.ndarray, params: QuantParams) -> np.ndarray:
    """``DequantizeLinear`` in numpy."""
    axis = params.axis if params.axis is None or params.axis >= 0 else params.axis + quantized.ndim
    scale = _broadcast(params.scale, quantized.ndim, axis)
    zero = _broadcast(params.zero_point.astype(np.int64), quantized.ndim, axis)
    return ((quantized.astype(np.int64) - zero) * scale).astype(np.float32)


def bias_scale(input_scale: np.ndarray | float, weight_scale: np.ndarray) -> np.ndarray:
    """Scale of an int32 bias: input scale × weight scale (what the integer kernels accumulate in)."""
    return (np.float32(input_scale) * np.asarray(weight_scale, dtype=np.float32)).astype(np.float32)


def quantize_bias(bias: np.ndarray, scale: np.ndarray) -> np.ndarray | None:
    """Bias as int32 at ``scale`` (per output channel), or None when it would overflow int32."""
    scaled = np.rint(np.asarray(bias, dtype=np.float64) / np.asarray(scale, dtype=np.float64))
    if scaled.size and np.max(np.abs(scaled)) > INT32_LIMIT:
        return None
    return scaled.astype(np.int32)


class NameScope:
    """Fresh tensor/node names for one graph: ``base``, ``base_1``, ``base_2``... never reused."""

    def __init__(self, graph: gs.Graph) -> None:
        self.used: set[str] = set(graph.tensors().keys())
        self.used.update(node.name for node in graph.nodes if node.name)

    def fresh(self, base: str) -> str:
        if base not in self.used:
            self.used.add(base)
            return base
        for index in itertools.count(1):
            candidate = f"{base}_{index}"
            if candidate not in self.used:
                self.used.add(candidate)
                return candidate
        raise AssertionError("unreachable")


def param_constants(names: NameScope, base: str, params: QuantParams) -> tuple[gs.Constant, gs.Constant]:
    """Constant scale and zero-point tensors for ``params``."""
    scale = gs.Constant(names.fresh(f"{base}_scale"), np.asarray(params.scale, dtype=np.float32))
    zero = gs.Constant(names.fresh(f"{base}_zero_point"), np.asarray(params.zero_point))
    return scale, zero


def _axis_attrs(params: QuantParams) -> dict[str, int]:
    return {"axis": int(params.axis)} if params.per_channel and params.axis is not None else {}


def quantize_node(names: NameScope, source: gs.Tensor, scale: gs.Tensor, zero: gs.Tensor,
                  params: QuantParams, base: str) -> tuple[gs.Node, gs.Variable]:
    """A ``QuantizeLinear`` reading ``source``; returns the node and its quantized output."""
    out = gs.Variable(names.fresh(f"{base}_quantized"), dtype=params.dtype, shape=source.shape)
    node = gs.Node("QuantizeLinear", names.fresh(f"{base}_QuantizeLinear"), attrs=_axis_attrs(params),
                   inputs=[source, scale, zero], outputs=[out])
    return node, out


def dequantize_node(names: NameScope, source: gs.Tensor, scale: gs.Tensor, zero: gs.Tensor,
                    params: QuantParams, base: str) -> tuple[gs.Node, gs.Variable]:
    """A ``DequantizeLinear`` reading ``source``; returns the node and its float output."""
    out = gs.Variable(names.fresh(f"{base}_dequantized"), dtype=np.float32, shape=source.shape)
    node = gs.Node("DequantizeLinear", names.fresh(f"{base}_DequantizeLinear"), attrs=_axis_attrs(params),
                   inputs=[source, scale, zero], outputs=[out])
    return node, out


def qdq_pair(names: NameScope, source: gs.Tensor, params: QuantParams, base: str) -> tuple[list[gs.Node], gs.Variable]:
    """``QuantizeLinear → DequantizeLinear`` on a float tensor, sharing one scale/zero point."""
    scale, zero = param_constants(names, base, params)
    q_node, quantized = quantize_node(names, source, scale, zero, params, base)
    dq_node, restored = dequantize_node(names, quantized, scale, zero, params, base)
    return [q_node, dq_node], restored


def dequantized_constant(names: NameScope, values: np.ndarray, params: QuantParams,
                         base: str) -> tuple[gs.Node, gs.Variable]:
    """A quantized initializer (int8/int32) feeding a ``DequantizeLinear``: how QDQ stores weights."""
    stored = gs.Constant(names.fresh(f"{base}_quantized"), np.ascontiguousarray(values))
    scale, zero = param_constants(names, base, params)
    node, out = dequantize_node(names, stored, scale, zero, params, base)
    out.shape = list(values.shape)
    return node, out


def replace_input(nodes: Iterable[gs.Node], old: gs.Tensor, new: gs.Tensor) -> None:
    """Point every input slot of ``nodes`` that reads ``old`` at ``new``."""
    for node in nodes:
        for index, tensor in enumerate(node.inputs):
            if tensor is old:
                node.inputs[index] = new
