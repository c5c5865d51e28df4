"""GPTQ-style error-correcting weight quantization.

Round-to-nearest minimises the error of each weight on its own; what matters is the error
of the layer's *output* ``X @ W`` on real inputs. With ``H = XᵀX`` (the inputs' second
moments), that error is ``tr(ΔWᵀ H ΔW)``. GPTQ (Frantar et al., 2022) quantizes the rows of
``W [K, N]`` one input dimension at a time and, after each row, spreads its rounding error
over the rows not yet quantized, weighted by the inverse Hessian — so correlated inputs
absorb each other's errors. The Cholesky factor of ``H⁻¹`` gives those weights without
re-inverting anything.

The statistics ``H`` are streamed by ``onnxopt.input_statistics`` and inverted by
``onnxopt.hessian_inverse`` (shared with the other passes that need a layer's input second
moments: SparseGPT-style sparsity and pruning's least-squares recovery).
"""

from __future__ import annotations

import logging

import numpy as np

from onnxopt.hessian_inverse import inverse_cholesky_upper
from onnxopt.passes.quantization.lowbit import GroupParams, QuantizedMatrix, Quantizer, collect

logger = logging.getLogger(__name__)

# Rows updated together before the rest of the matrix sees their errors (cache-friendly
# "lazy batch" updates; the result is the same as updating after every row).
LAZY_BATCH_ROWS = 128
DEFAULT_DAMP_RATIO = 0.01


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
    hessian = np.array(hessian, dtype=np.float64)
    dead = np.diag(hessian) <= 0
    # Inputs that never fired carry no information; a unit diagonal keeps H invertible and
    # leaves those rows at plain round-to-nearest (their off-diagonal entries are zero).
    hessian[dead, dead] = 1.0
    static = act_order or group_rows >= k_rows
    params: list[GroupParams] = (
        [quantizer.fit(weights[first : first + group_rows]) for first in range(0, k_rows, group_rows)] if static else []
    )
    order = np.argsort(-np.diag(hessian), kind="stable") if act_order else np.arange(k_rows)
    weights = weights[order]
    upper = inverse_cholesky_upper(hessian[np.ix_(order, order)], damp_ratio)

    # Dynamic groups must lie inside one lazy block, so the block is a multiple of the group.
    lazy = min(LAZY_BATCH_ROWS, k_rows) if static else group_rows * max(1, LAZY_BATCH_ROWS // group_rows)
    codes = np.empty(weights.shape, dtype=np.int8)
    current: GroupParams | None = None
    for start in range(0, k_rows, lazy):
        stop = min(start + lazy, k_rows)
        block = weights[start:stop].copy()
        errors = np.zeros_like(block)
        for offset in range(stop - start):
            row = start + offset
            stored_row = int(order[row])
            if static:
                current = params[stored_row // group_rows]
            elif row % group_rows == 0:
                current = quantizer.fit(block[offset : offset + group_rows])
                params.append(current)
            assert current is not None
            value = block[offset]
            code = quantizer.encode(value, current)
            codes[stored_row] = code
            error = (value - quantizer.decode(code, current)) / upper[row, row]
            block[offset + 1 :] -= np.outer(upper[row, row + 1 : stop], error)
            errors[offset] = error
        weights[stop:] -= upper[start:stop, stop:].T @ errors
    return collect(quantizer, codes, params, group_rows)


def output_error(weights_kn: np.ndarray, quantized: QuantizedMatrix, hessian: np.ndarray) -> float:
    """Relative layer-output error ``tr(ΔWᵀHΔW) / tr(WᵀHW)`` under the input statistics H."""
    weights = np.asarray(weights_kn, dtype=np.float64)
    delta = weights - quantized.dequantize()
    reference = float(np.sum(weights * (hessian @ weights)))
    if reference <= 0:
        return 0.0
    return float(np.sum(delta * (hessian @ delta))) / reference
