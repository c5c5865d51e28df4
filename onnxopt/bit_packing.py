"""Sub-byte codes packed into bytes, and ONNX INT4/UINT4/INT2/UINT2 constants.

Several families store small integer codes below one byte each: weight-only quantization
(int4 / int2 codes for ``DequantizeLinear`` and onnxruntime's packed blobs) and weight
clustering (codebook indices unpacked in-graph). Both pack the same way — values along the
last axis, low bits first, ``8 // bits`` per byte — so the packing lives here, once.

graph-surgeon cannot export numpy arrays of ml_dtypes' sub-byte types, so sub-byte
constants are handed to it as ready-made TensorProtos (``LazyValues``), which it writes
through unchanged.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
import onnx_graphsurgeon as gs
from onnx import numpy_helper
from onnx_graphsurgeon.ir.tensor import LazyValues

# ONNX sub-byte element types by (bits, signed), as ml_dtypes spells them.
SUB_BYTE_DTYPES = {
    (4, True): ml_dtypes.int4,
    (4, False): ml_dtypes.uint4,
    (2, True): ml_dtypes.int2,
    (2, False): ml_dtypes.uint2,
}
# Widths that divide a byte: the only ones pack_last_axis accepts.
PACKABLE_BITS = (1, 2, 4, 8)


def code_range(bits: int, signed: bool) -> tuple[int, int]:
    """Smallest and largest integer a ``bits``-wide code holds."""
    if signed:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def sub_byte_constant(name: str, codes: np.ndarray, bits: int, signed: bool) -> gs.Constant:
    """A graph-surgeon Constant stored as a packed ONNX INT4/UINT4/INT2/UINT2 tensor."""
    low, high = code_range(bits, signed)
    codes = np.asarray(codes)
    if codes.size and (codes.min() < low or codes.max() > high):
        raise ValueError(f"{name}: codes outside [{low}, {high}] cannot be stored in {bits} bits")
    typed = codes.astype(np.int8 if signed else np.uint8).astype(SUB_BYTE_DTYPES[(bits, signed)])
    return gs.Constant(name, LazyValues(numpy_helper.from_array(typed, name)))


def pack_last_axis(codes: np.ndarray, bits: int) -> np.ndarray:
    """Pack unsigned ``bits``-wide codes along the last axis, low bits first, into uint8.

    The last axis is zero-padded to a whole number of bytes.
    """
    if bits not in PACKABLE_BITS:
        raise ValueError(f"cannot pack {bits}-bit codes into whole bytes (use one of {PACKABLE_BITS})")
    per_byte = 8 // bits
    codes = np.asarray(codes, dtype=np.uint8)
    if codes.size and int(codes.max()) >= (1 << bits):
        raise ValueError(f"codes must be below {1 << bits} to pack into {bits} bits")
    length = codes.shape[-1]
    padded_length = -(-length // per_byte) * per_byte
    if padded_length != length:
        pad = [(0, 0)] * (codes.ndim - 1) + [(0, padded_length - length)]
        codes = np.pad(codes, pad)
    grouped = codes.reshape(*codes.shape[:-1], padded_length // per_byte, per_byte)
    packed = np.zeros(grouped.shape[:-1], dtype=np.uint8)
    for slot in range(per_byte):
        packed |= (grouped[..., slot] << (slot * bits)).astype(np.uint8)
    return packed


def unpack_last_axis(packed: np.ndarray, bits: int, length: int) -> np.ndarray:
    """Inverse of ``pack_last_axis``: the first ``length`` codes of each packed row."""
    per_byte = 8 // bits
    mask = (1 << bits) - 1
    packed = np.asarray(packed, dtype=np.uint8)
    slots = [(packed >> (slot * bits)) & mask for slot in range(per_byte)]
    codes = np.stack(slots, axis=-1).reshape(*packed.shape[:-1], packed.shape[-1] * per_byte)
    return codes[..., :length]
