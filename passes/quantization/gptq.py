"""GPTQ-style error-correcting weight quantization with the scale/zero-point quantizers of ``lowbit``.

The error-feedback loop itself (rows quantized in turn, each row's error pushed onto the
rows after it through the inverse Hessian's Cholesky factor) is the framework's
``onnxopt.error_feedback``, shared with weight clustering; this module supplies what a row
means for int4/binary/ternary codes: groups of rows that share a scale, fitted up front
("static") or when their first row comes up, on the rows as updated so far.

The statistics ``H`` are streamed by ``onnxopt.input_statistics``; the damped inverse
Hessian factor comes from ``onnxopt.hessian_inverse`` (shared with SparseGPT-style sparsity
and pruning's least-squares recovery).
"""

from __future__ import annotations

import logging

import numpy as np

from onnxopt.error_feedback import DEFAULT_DAMP_RATIO, LAZY_BATCH_ROWS, prepared_hessian, quantize_with_feedback
from onnxopt.passes.quantization.lowbit import GroupParams, QuantizedMatrix, Quantizer, collect

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_DAMP_RATIO", "output_error", "quantize_gptq"]


def quantize_gptq(weights_kn: np.ndarray, hessian: np.ndarray, quantizer: Quantizer, group_rows: int,
                  damp_ratio: float = DEFAULT_DAMP_RATIO, act_order: bool = False) -> QuantizedMatrix:
    """Quantize ``W [K, N]`` row by row, pushing each row's error onto the rows after it.

    Without ``act_order`` rows go in their stored order and each group is fitted when its
    first row comes up, on the rows as updated so far, so the scales follow the corrected
    weights. With ``act_order`` the rows whose inputs carry the most energy (largest
    diag H) go first, while they still have the most rows left to absorb their errors;
    groups then keep their stored (contiguous) rows, as DequantizeLinear's blocks require,
    and are fitted up front on the original weights ("static groups"). With a single group
    (per-channel binary/ternary) the parameters always come from the original weights.
    """
    weights = np.array(weights_kn, dtype=np.float64)
    k_rows = weights.shape[0]
    group_rows = min(group_rows, k_rows)
    hessian = prepared_hessian(hessian)
    static = act_order or group_rows >= k_rows
    params: list[GroupParams] = (
        [quantizer.fit(weights[first : first + group_rows]) for first in range(0, k_rows, group_rows)] if static else []
    )
    order = np.argsort(-np.diag(hessian), kind="stable") if act_order else np.arange(k_rows)
    codes = np.empty(weights.shape, dtype=np.int8)
    current: list[GroupParams] = []

    def quantize_row(row: int, block: np.ndarray, offset: int) -> np.ndarray:
        stored_row = int(order[row])
        if static:
            group = params[stored_row // group_rows]
        else:
            if row % group_rows == 0:
                current[:] = [quantizer.fit(block[offset : offset + group_rows])]
                params.append(current[0])
            group = current[0]
        code = quantizer.encode(block[offset], group)
        codes[stored_row] = code
        return quantizer.decode(code, group)

    # Dynamic groups must lie inside one lazy block, so the block is a multiple of the group.
    lazy = min(LAZY_BATCH_ROWS, k_rows) if static else group_rows * max(1, LAZY_BATCH_ROWS // group_rows)
    quantize_with_feedback(weights, hessian, quantize_row, damp_ratio, order=order, lazy_rows=lazy)
    return collect(quantizer, codes, params, group_rows)


def output_error(weights_kn: np.ndarray, quantized: QuantizedMatrix, hessian: np.ndarray) -> float:
    """Relative layer-output error ``tr(ΔWᵀHΔW) / tr(WᵀHW)`` under the input statistics H."""
    weights = np.asarray(weights_kn, dtype=np.float64)
    delta = weights - quantized.dequantize()
    reference = float(np.sum(weights * (hessian @ weights)))
    if reference <= 0:
        return 0.0
    return float(np.sum(delta * (hessian @ delta))) / reference
