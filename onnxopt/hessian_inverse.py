"""Damped inverses of input second-moment matrices ``H = XᵀX``, for second-order weight updates.

GPTQ (quantization), SparseGPT and optimal-brain-surgeon pruning all ask the same thing of
the statistics that ``onnxopt.input_statistics`` streams: the inverse of ``H`` (or its
Cholesky factor), well defined even when ``H`` is singular — inputs that never fire, more
features than calibration rows. Damping adds ``λ · mean(diag H)`` to the diagonal, and
grows λ tenfold until the factorisation succeeds, so every caller gets the same answer to
"how much damping is enough" instead of its own variant.
"""

from __future__ import annotations

import numpy as np

MAX_DAMP_TRIES = 6


def _damped(hessian: np.ndarray, damp: float) -> np.ndarray:
    mean_diagonal = float(np.mean(np.diag(hessian))) or 1.0
    return hessian + damp * mean_diagonal * np.eye(hessian.shape[0])


def inverse_cholesky_upper(hessian: np.ndarray, damp_ratio: float) -> np.ndarray:
    """Upper Cholesky factor of ``(H + λI)⁻¹``; λ grows until the factorisation succeeds."""
    damp = damp_ratio
    for _ in range(MAX_DAMP_TRIES):
        try:
            inverse = np.linalg.inv(np.linalg.cholesky(_damped(hessian, damp)))
            # (L Lᵀ)⁻¹ = L⁻ᵀ L⁻¹; its upper Cholesky factor U satisfies UᵀU = H⁻¹.
            return np.linalg.cholesky(inverse.T @ inverse).T
        except np.linalg.LinAlgError:
            damp *= 10.0
    raise np.linalg.LinAlgError("Hessian is not positive definite even after damping")


def damped_inverse(hessian: np.ndarray, damp_ratio: float) -> np.ndarray:
    """``(H + λI)⁻¹`` through a Cholesky factorisation; λ grows until it succeeds."""
    damp = damp_ratio
    for _ in range(MAX_DAMP_TRIES):
        try:
            lower_inverse = np.linalg.inv(np.linalg.cholesky(_damped(hessian, damp)))
            return lower_inverse.T @ lower_inverse
        except np.linalg.LinAlgError:
            damp *= 10.0
    raise np.linalg.LinAlgError("Hessian is not positive definite even after damping")


def damped_solve(hessian: np.ndarray, right: np.ndarray, damp_ratio: float) -> np.ndarray:
    """``(H + λI)⁻¹ · right`` (least squares with ridge damping); λ grows until Cholesky succeeds."""
    damp = damp_ratio
    for _ in range(MAX_DAMP_TRIES):
        try:
            lower = np.linalg.cholesky(_damped(hessian, damp))
            return np.linalg.solve(lower.T, np.linalg.solve(lower, right))
        except np.linalg.LinAlgError:
            damp *= 10.0
    raise np.linalg.LinAlgError("Hessian is not positive definite even after damping")
