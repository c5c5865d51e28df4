"""Error feedback: quantize a weight matrix row by row, pushing each row's error onto the rest.

Rounding each weight on its own minimises the error of the weights; what matters is the
error of the layer's *output* ``X @ W`` on real inputs. With ``H = XᵀX`` (the inputs' second
moments, streamed by ``onnxopt.input_statistics``) that error is ``tr(ΔWᵀ H ΔW)``. GPTQ
(Frantar et al., 2022) quantizes the rows of ``W [K, N]`` one input dimension at a time and,
after each row, spreads its error over the rows not yet quantized, weighted by the inverse
Hessian, so correlated inputs absorb each other's errors; the upper Cholesky factor of
``H⁻¹`` gives those weights without re-inverting anything.

The loop does not care what "quantize a row" means — a uniform grid with scales (int4,
ternary in ``passes/quantization``) or the nearest entry of a codebook (weight clustering
in ``passes/sharing``) — so it lives here, and each family passes its own row quantizer.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from onnxopt.hessian_inverse import inverse_cholesky_upper

# Rows updated together before the rest of the matrix sees their errors (cache-friendly
# "lazy batch" updates; the result is the same as updating after every row).
LAZY_BATCH_ROWS = 128
DEFAULT_DAMP_RATIO = 0.01

# quantize_row(position, block, offset) -> the row's quantized values. ``block[offset]`` is the
# row at ``position`` of the processing order, as updated by the errors of earlier rows;
# ``block[offset + 1:]`` are the rows after it in the same lazy block (updated so far), which a
# quantizer fitting groups of rows on the fly may read.
RowQuantizer = Callable[[int, np.ndarray, int], np.ndarray]


def prepared_hessian(hessian: np.ndarray) -> np.ndarray:
    """A float64 copy of ``H`` whose dead inputs (never fired) have a unit diagonal.

    Inputs that never fired carry no information; the unit diagonal keeps H invertible and
    leaves those rows at plain nearest rounding (their off-diagonal entries are zero).
    """
    prepared = np.array(hessian, dtype=np.float64)
    dead = np.diag(prepared) <= 0
    prepared[dead, dead] = 1.0
    return prepared


def feedback_factor(hessian: np.ndarray, damp_ratio: float, order: np.ndarray) -> np.ndarray:
    """The factor ``quantize_with_feedback`` uses for ``hessian`` taken in ``order``."""
    return inverse_cholesky_upper(hessian[np.ix_(order, order)], damp_ratio)


def quantize_with_feedback(weights_kn: np.ndarray, hessian: np.ndarray, quantize_row: RowQuantizer,
                           damp_ratio: float = DEFAULT_DAMP_RATIO, order: np.ndarray | None = None,
                           lazy_rows: int = LAZY_BATCH_ROWS, factor: np.ndarray | None = None) -> np.ndarray:
    """Quantize ``W [K, N]`` row by row in ``order`` (default: stored order) with error feedback.

    ``hessian`` should come from ``prepared_hessian``. ``quantize_row`` is called once per
    row, in processing order; the returned matrix holds the quantized rows in processing
    order (``result[i]`` is stored row ``order[i]``). Columns are independent given H, so a
    caller may quantize column chunks separately, passing the ``feedback_factor`` it
    computed once as ``factor``.
    """
    weights = np.array(weights_kn, dtype=np.float64)
    k_rows = weights.shape[0]
    order = np.arange(k_rows) if order is None else np.asarray(order)
    weights = weights[order]
    upper = factor if factor is not None else feedback_factor(hessian, damp_ratio, order)
    quantized = np.empty_like(weights)
    lazy = max(1, min(lazy_rows, k_rows))
    for start in range(0, k_rows, lazy):
        stop = min(start + lazy, k_rows)
        block = weights[start:stop].copy()
        errors = np.zeros_like(block)
        for offset in range(stop - start):
            row = start + offset
            value = block[offset]
            restored = quantize_row(row, block, offset)
            quantized[row] = restored
            error = (value - restored) / upper[row, row]
            block[offset + 1 :] -= np.outer(upper[row, row + 1 : stop], error)
            errors[offset] = error
        weights[stop:] -= upper[start:stop, stop:].T @ errors
    return quantized
