"""Which weights become zero: unstructured or N:M masks, by magnitude, Wanda, or SparseGPT.

All work on a weight seen as ``W [K, N]`` (rows along the reduction axis, the axis
TensorRT's 2:4 kernels need: MatMul's B axis 0, Gemm's B per ``transB``, Conv's input
channels), with the layer's input statistics ``H = XᵀX`` when there is DATA.

* ``magnitude``: the smallest ``|w|`` go;
* ``wanda`` (Sun et al. 2023): the smallest ``|w_kn|·‖x_k‖`` go, compared within each
  output column (or within each group of ``M`` rows for N:M);
* ``sparsegpt`` (Frantar & Alistarh 2023): rows are visited in order; within each block
  the mask is chosen by ``w² / [H⁻¹]_kk²`` (the OBS cost), and each pruned weight's error
  is pushed onto the rows not yet visited through the Cholesky factor of ``H⁻¹`` — the
  same error feedback GPTQ uses for rounding, shared through ``onnxopt.hessian_inverse``.

N:M groups are ``M`` consecutive rows of one column; for a Conv the rows are ordered so
that a group is ``M`` input channels at one kernel position.
"""

from __future__ import annotations

import logging

import numpy as np

from onnxopt.hessian_inverse import inverse_cholesky_upper

logger = logging.getLogger(__name__)

LAZY_BATCH_ROWS = 128
DEFAULT_DAMP_RATIO = 0.01


def nm_mask(scores: np.ndarray, n: int, m: int) -> np.ndarray:
    """Keep-mask ``[K, N]`` keeping the ``n`` highest scores of every ``m`` consecutive rows of each column."""
    rows, columns = scores.shape
    grouped = scores.reshape(rows // m, m, columns)
    order = np.argsort(-grouped, axis=1, kind="stable")
    keep = np.zeros_like(grouped, dtype=bool)
    np.put_along_axis(keep, order[:, :n, :], True, axis=1)
    return keep.reshape(rows, columns)


def column_mask(scores: np.ndarray, ratio: float) -> np.ndarray:
    """Keep-mask removing the ``ratio`` lowest scores of each column (Wanda's per-output comparison)."""
    rows = scores.shape[0]
    drop = int(np.floor(ratio * rows + 1e-9))
    keep = np.ones(scores.shape, dtype=bool)
    if drop:
        order = np.argsort(scores, axis=0, kind="stable")[:drop]
        np.put_along_axis(keep, order, False, axis=0)
    return keep


def one_shot_mask(weights: np.ndarray, input_norms: np.ndarray | None, pattern: tuple[int, int] | None,
                  ratio: float) -> np.ndarray:
    """Magnitude (``input_norms`` None) or Wanda scores, masked N:M or per column."""
    scores = np.abs(weights)
    if input_norms is not None:
        scores = scores * input_norms[:, None]
    if pattern is not None:
        return nm_mask(scores, *pattern)
    return column_mask(scores, ratio)


def sparsegpt(weights: np.ndarray, hessian: np.ndarray, pattern: tuple[int, int] | None, ratio: float,
              damp_ratio: float = DEFAULT_DAMP_RATIO) -> np.ndarray:
    """Sparse ``W [K, N]`` with the pruning error of each row pushed onto the later rows (OBS updates)."""
    weights = np.array(weights, dtype=np.float64)
    rows = weights.shape[0]
    hessian = np.array(hessian, dtype=np.float64)
    dead = np.diag(hessian) <= 0
    hessian[dead, dead] = 1.0
    weights[dead] = 0.0
    upper = inverse_cholesky_upper(hessian, damp_ratio)
    diagonal = np.diag(upper)
    lazy = LAZY_BATCH_ROWS if pattern is None else max(pattern[1], LAZY_BATCH_ROWS // pattern[1] * pattern[1])
    for start in range(0, rows, lazy):
        stop = min(start + lazy, rows)
        block = weights[start:stop].copy()
        errors = np.zeros_like(block)
        keep = None
        if pattern is None:
            keep = column_mask(block ** 2 / diagonal[start:stop, None] ** 2, ratio)
        for offset in range(stop - start):
            row = start + offset
            if pattern is not None and offset % pattern[1] == 0:
                group = block[offset : offset + pattern[1]]
                group_keep = nm_mask(group ** 2 / diagonal[row : row + pattern[1], None] ** 2, *pattern)
                keep = np.zeros_like(block, dtype=bool) if keep is None else keep
                keep[offset : offset + pattern[1]] = group_keep
            value = block[offset]
            pruned = np.where(keep[offset], value, 0.0)
            error = (value - pruned) / upper[row, row]
            block[offset] = pruned
            block[offset + 1 :] -= np.outer(upper[row, row + 1 : stop], error)
            errors[offset] = error
        weights[start:stop] = block
        weights[stop:] -= upper[start:stop, stop:].T @ errors
    return weights


def relative_output_error(weights: np.ndarray, sparse: np.ndarray, hessian: np.ndarray) -> float:
    """``‖X ΔW‖ / ‖X W‖`` under the input statistics ``H = XᵀX``."""
    delta = np.asarray(weights, np.float64) - np.asarray(sparse, np.float64)
    reference = float(np.sum(weights * (hessian @ weights)))
    if reference <= 0:
        return 0.0
    return float(np.sqrt(max(float(np.sum(delta * (hessian @ delta))), 0.0) / reference))

