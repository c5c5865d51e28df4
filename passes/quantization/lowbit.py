"""Low-bit weight quantizers (int4 blockwise, binary, ternary) in one layout: ``[K, N]``.

Every weight this project quantizes weight-only (a MatMul's B, a Gemm's B with or without
``transB``, a Conv kernel, an embedding table) is first viewed as a matrix whose rows run
along the *reduction* axis K and whose columns are the N outputs. Groups of
``block_size`` consecutive rows share one scale (and zero point) per column: that is
exactly the block layout of ``DequantizeLinear(block_size=...)`` and of ``MatMulNBits``,
and a group of all K rows is per-output-channel quantization.

A quantizer is split into ``fit`` (the scale, zero point or threshold of one group, from
that group's rows) and ``encode``/``decode`` (codes of one row given those parameters), so
round-to-nearest and GPTQ (which re-fits each group after earlier rows have pushed their
errors into it) share the same arithmetic. A stored value is always
``(code - zero_point) * scale``.

Scales are rounded to the dtype they will be stored in (float32 or float16) inside ``fit``:
codes are then computed against the scale the runtime really multiplies by.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from onnxopt.bit_packing import code_range

SCHEMES = ("int4", "binary", "ternary")
# Ternary keeps weights whose magnitude exceeds this fraction of the column's mean |w|
# (the classic ternary-weight-network rule, which minimises the L2 error for Gaussian weights).
TERNARY_THRESHOLD_RATIO = 0.7
# Range shrink factors tried by the int4 clip search (1.0, the plain range, is always tried).
CLIP_SEARCH_FACTORS = tuple(round(1.0 - 0.025 * step, 3) for step in range(1, 13))
# A column of zeros gets this scale (any positive value works; its codes are all zero).
FALLBACK_SCALE = 1.0


@dataclass
class GroupParams:
    """Parameters of one group of rows: per-column scale, zero point (asymmetric int4 only)
    and magnitude threshold (ternary only)."""

    scale: np.ndarray
    zero_point: np.ndarray | None = None
    threshold: np.ndarray | None = None


@dataclass
class QuantizedMatrix:
    """Codes ``[K, N]`` plus per-group parameters ``[G, N]``; ``group_rows`` rows per group."""

    codes: np.ndarray
    scales: np.ndarray
    zero_points: np.ndarray | None
    group_rows: int
    bits: int
    signed: bool

    def dequantize(self) -> np.ndarray:
        """The float64 ``[K, N]`` matrix that the runtime reconstructs."""
        k_rows = self.codes.shape[0]
        scales = np.repeat(self.scales, self.group_rows, axis=0)[:k_rows]
        codes = self.codes.astype(np.float64)
        if self.zero_points is not None:
            codes = codes - np.repeat(self.zero_points, self.group_rows, axis=0)[:k_rows]
        return codes * scales


def _safe_scale(scale: np.ndarray, storage_dtype: np.dtype) -> np.ndarray:
    """Scale rounded to its storage dtype, zeros (all-zero columns) replaced, as float64."""
    stored = np.asarray(scale, dtype=np.float64).astype(storage_dtype)
    tiny = np.finfo(storage_dtype).tiny
    stored = np.where(stored > tiny, stored, np.asarray(FALLBACK_SCALE, dtype=storage_dtype))
    return stored.astype(np.float64)


class Quantizer:
    """Base: subclasses define ``bits``, ``signed``, ``fit``, ``encode``; ``decode`` is shared."""

    bits: int = 4
    signed: bool = True

    def __init__(self, storage_dtype: np.dtype | type = np.float32) -> None:
        self.storage_dtype = np.dtype(storage_dtype)

    def fit(self, rows: np.ndarray) -> GroupParams:
        raise NotImplementedError

    def encode(self, rows: np.ndarray, params: GroupParams) -> np.ndarray:
        raise NotImplementedError

    def decode(self, codes: np.ndarray, params: GroupParams) -> np.ndarray:
        values = codes.astype(np.float64)
        if params.zero_point is not None:
            values = values - params.zero_point
        return values * params.scale


class Int4Quantizer(Quantizer):
    """Round-to-nearest int4 grid of one group.

    Symmetric: signed codes in [-8, 7] with zero point 0; the scale is the smallest that
    reaches both the group's largest positive value at +7 and its most negative at -8, so
    nothing clips. Asymmetric: unsigned codes in [0, 15] over [min(w, 0), max(w, 0)], with
    an integer zero point (zero stays exact).
    """

    bits = 4

    def __init__(self, symmetric: bool = True, storage_dtype: np.dtype | type = np.float32,
                 clip_search: bool = False) -> None:
        super().__init__(storage_dtype)
        self.symmetric = symmetric
        self.signed = symmetric
        self.clip_search = clip_search
        self.low, self.high = code_range(self.bits, self.signed)

    def fit(self, rows: np.ndarray) -> GroupParams:
        if not self.clip_search:
            return self._fit_range(rows, 1.0)
        # Shrinking the range clips a few outliers but refines the grid for every other
        # weight; keep, per column, the shrink factor with the smallest squared error.
        best = self._fit_range(rows, 1.0)
        best_error = self._squared_error(rows, best)
        for factor in CLIP_SEARCH_FACTORS:
            candidate = self._fit_range(rows, factor)
            error = self._squared_error(rows, candidate)
            better = error < best_error
            best.scale = np.where(better, candidate.scale, best.scale)
            if best.zero_point is not None:
                best.zero_point = np.where(better, candidate.zero_point, best.zero_point)
            best_error = np.minimum(error, best_error)
        return best

    def _squared_error(self, rows: np.ndarray, params: GroupParams) -> np.ndarray:
        return ((self.decode(self.encode(rows, params), params) - rows) ** 2).sum(axis=0)

    def _fit_range(self, rows: np.ndarray, factor: float) -> GroupParams:
        low = np.minimum(rows.min(axis=0), 0.0) * factor
        high = np.maximum(rows.max(axis=0), 0.0) * factor
        if self.symmetric:
            scale = _safe_scale(np.maximum(high / self.high, low / self.low), self.storage_dtype)
            return GroupParams(scale=scale)
        scale = _safe_scale((high - low) / (self.high - self.low), self.storage_dtype)
        zero_point = np.clip(np.rint(-low / scale), self.low, self.high)
        return GroupParams(scale=scale, zero_point=zero_point)

    def encode(self, rows: np.ndarray, params: GroupParams) -> np.ndarray:
        codes = np.rint(rows / params.scale)
        if params.zero_point is not None:
            codes = codes + params.zero_point
        return np.clip(codes, self.low, self.high).astype(np.int8)


class BinaryQuantizer(Quantizer):
    """sign(w) × per-column scale, scale = mean |w| (the L2-optimal scale for sign codes).

    Zero maps to +1: binary has no zero code.
    """

    bits = 1

    def fit(self, rows: np.ndarray) -> GroupParams:
        return GroupParams(scale=_safe_scale(np.abs(rows).mean(axis=0), self.storage_dtype))

    def encode(self, rows: np.ndarray, params: GroupParams) -> np.ndarray:
        return np.where(rows >= 0, 1, -1).astype(np.int8)


class TernaryQuantizer(Quantizer):
    """{-1, 0, +1} × per-column scale.

    Threshold = 0.7 × mean |w| of the column; the scale is the mean magnitude of the weights
    kept (the L2-optimal scale for those codes).
    """

    bits = 2

    def fit(self, rows: np.ndarray) -> GroupParams:
        magnitude = np.abs(rows)
        threshold = TERNARY_THRESHOLD_RATIO * magnitude.mean(axis=0)
        kept = magnitude > threshold
        counts = kept.sum(axis=0)
        sums = np.where(kept, magnitude, 0.0).sum(axis=0)
        scale = np.divide(sums, counts, out=np.zeros_like(sums), where=counts > 0)
        return GroupParams(scale=_safe_scale(scale, self.storage_dtype), threshold=threshold)

    def encode(self, rows: np.ndarray, params: GroupParams) -> np.ndarray:
        return (np.sign(rows) * (np.abs(rows) > params.threshold)).astype(np.int8)


def make_quantizer(scheme: str, symmetric: bool = True, storage_dtype: np.dtype | type = np.float32,
                   clip_search: bool = False) -> Quantizer:
    """The quantizer of a scheme name (``int4``, ``binary``, ``ternary``)."""
    if scheme == "int4":
        return Int4Quantizer(symmetric=symmetric, storage_dtype=storage_dtype, clip_search=clip_search)
    if scheme == "binary":
        return BinaryQuantizer(storage_dtype=storage_dtype)
    if scheme == "ternary":
        return TernaryQuantizer(storage_dtype=storage_dtype)
    raise ValueError(f"unknown low-bit scheme {scheme!r} (choose from {', '.join(SCHEMES)})")


def collect(quantizer: Quantizer, codes: np.ndarray, params: list[GroupParams], group_rows: int) -> QuantizedMatrix:
    """Assemble codes and the groups' parameters into a QuantizedMatrix."""
    scales = np.stack([p.scale for p in params])
    zero_points = None
    if params[0].zero_point is not None:
        zero_points = np.stack([p.zero_point for p in params]).astype(np.int8)
    return QuantizedMatrix(codes=codes, scales=scales, zero_points=zero_points, group_rows=group_rows,
                           bits=quantizer.bits, signed=quantizer.signed)


def quantize_rtn(weights_kn: np.ndarray, quantizer: Quantizer, group_rows: int) -> QuantizedMatrix:
    """Round-to-nearest: each group fitted and encoded on its own rows."""
    weights = np.asarray(weights_kn, dtype=np.float64)
    k_rows = weights.shape[0]
    group_rows = min(group_rows, k_rows)
    codes = np.empty(weights.shape, dtype=np.int8)
    params = []
    for start in range(0, k_rows, group_rows):
        rows = weights[start : start + group_rows]
        group = quantizer.fit(rows)
        codes[start : start + group_rows] = quantizer.encode(rows, group)
        params.append(group)
    return collect(quantizer, codes, params, group_rows)
