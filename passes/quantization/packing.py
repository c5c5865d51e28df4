"""Sub-byte storage: ONNX INT4/UINT4/INT2/UINT2 tensors and onnxruntime's packed blobs.

Two storage families, one job each:

* standard ONNX sub-byte tensors (IR 10+: INT4/UINT4; IR 13 / opset 25: INT2/UINT2),
  packed two (four) values per byte, low bits first, as ``DequantizeLinear`` reads them;
* onnxruntime's contrib layouts: ``MatMulNBits`` wants the weight transposed to
  ``[N, blocks, block_bytes]`` with each block's values packed low bits first and unsigned
  (``code + 2**(bits-1)`` for signed codes), zero points packed per output row;
  ``GatherBlockQuantized`` (uint8 data, ``bits=4``) wants each table row packed the same way.

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


def matmulnbits_weight(codes_kn: np.ndarray, bits: int, block_size: int, offset: int) -> np.ndarray:
    """``MatMulNBits`` input B: codes ``[K, N]`` (+ ``offset`` to make them unsigned) as
    ``uint8 [N, ceil(K / block_size), block_size * bits / 8]``.

    The last block of each column is padded with the zero-point code (it multiplies
    nothing: the kernel reads only K values).
    """
    k_rows, n_cols = codes_kn.shape
    blocks = -(-k_rows // block_size)
    unsigned = (np.asarray(codes_kn, dtype=np.int16) + offset).astype(np.uint8)
    padded = np.full((blocks * block_size, n_cols), offset, dtype=np.uint8)
    padded[:k_rows] = unsigned
    per_column = padded.T.reshape(n_cols, blocks, block_size)
    return pack_last_axis(per_column, bits)


def matmulnbits_zero_points(zero_points_gn: np.ndarray, bits: int) -> np.ndarray:
    """``MatMulNBits`` zero points: ``[G, N]`` codes as uint8 ``[N * ceil(G * bits / 8)]``."""
    return pack_last_axis(np.asarray(zero_points_gn, dtype=np.uint8).T, bits).reshape(-1)


def packed_table(codes_rows: np.ndarray, bits: int, offset: int) -> np.ndarray:
    """``GatherBlockQuantized`` uint8 data: each row's codes (+ ``offset``) packed along the row."""
    unsigned = (np.asarray(codes_rows, dtype=np.int16) + offset).astype(np.uint8)
    return pack_last_axis(unsigned, bits)
