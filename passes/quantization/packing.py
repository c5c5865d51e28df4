"""onnxruntime's packed sub-byte layouts (MatMulNBits, GatherBlockQuantized).

The generic packing (codes along the last axis, low bits first) and standard ONNX
INT4/UINT4/INT2/UINT2 constants live in the framework (``onnxopt.bit_packing``), shared
with other families; this module holds onnxruntime's contrib layouts built on it:

* ``MatMulNBits`` wants the weight transposed to ``[N, blocks, block_bytes]`` with each
  block's values packed low bits first and unsigned (``code + 2**(bits-1)`` for signed
  codes), zero points packed per output row;
* ``GatherBlockQuantized`` (uint8 data, ``bits=4``) wants each table row packed the same way.
"""

from __future__ import annotations

import numpy as np

from onnxopt.bit_packing import pack_last_axis


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
