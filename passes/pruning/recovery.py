"""Which units to remove, and the consumer weights that make up for them, in closed form.

For a consumer ``y = x W + b`` (``W [K, N]``), the calibration sums of ``statistics.py``
give the output error of any candidate ``θ = [W'; b']`` over the kept rows ``S`` as
``θᵀ G_SS θ − 2 tr(θᵀ C_S) + Σ‖y‖²`` — no activation is kept, yet every error the report
shows is exact on the calibration data. Three refits of the kept rows are candidates:

* ``plain``: the weights as they are (removal without recovery);
* ``scale``: one factor per kept unit and a new bias, ``y ≈ Σ_u m_u·(x_u W_u) + b'`` — the
  least-squares "mask tuning" of Kwon et al. (2022). Its normal equations come from the
  same sums (``A = P (G ∘ W Wᵀ) Pᵀ`` over units), and with a few hundred parameters it
  cannot overfit a few hundred calibration tokens;
* ``full``: every kept weight and the bias (layer-wise feature distillation), with a ridge
  that pulls towards the teacher's own weights rather than towards zero,
  ``θ = (G_SS + λI)⁻¹ (C_S + λ θ₀)`` with ``θ₀`` the plain removal: with few calibration
  rows (a transformer sees the tokens of a few dozen sentences) an unanchored fit
  overfits, a large λ falls back to the original weights instead of shrinking them.

``choose_recovery`` picks among them by two-fold cross-validation on the calibration
batches — the refit is chosen by error on data it was not fitted on, so recovery is never
taken when it would not generalise — then refits the winner on all batches.

``obs_removal`` chooses units by optimal brain surgeon on the ``scale`` problem: removing
unit ``u`` means ``m_u = 0`` with every other factor and the bias re-optimised, which costs
``m_u² / [H⁻¹]_uu``; the cheapest units go in chunks and ``H⁻¹`` is downdated after each
(as SparseGPT and ZipLM do). Several consumers of one group add their relative errors.
``obs_full_removal`` is optimal brain surgeon on the ``full`` problem instead (``importance=obs``):
from the damped least-squares solution ``Θ* = (G + λI)⁻¹ (C + λθ₀)``, removing unit
``u``'s rows ``R`` raises the error by ``tr(Θ*_Rᵀ [H⁻¹]_RR⁻¹ Θ*_R)`` with every other weight
and the bias re-optimised (blocks of rows for heads and conv kernels), the rule SparseGPT
uses for weights, applied to whole input rows: the units chosen are the ones the full
refit can best do without.
``activation_scores`` (Wanda: ``‖x_j‖·‖W_j‖``) and ``magnitude_scores`` (weights only, the
data-free fallback) rank units in one shot.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from onnxopt.hessian_inverse import damped_inverse, damped_solve
from onnxopt.passes.pruning.statistics import ConsumerStatistics

logger = logging.getLogger(__name__)

DEFAULT_DAMP_RATIO = 0.01
# Ridge strengths (fractions of mean diag XᵀX) tried for the full refit.
FULL_RIDGES = (0.001, 0.03, 0.3, 3.0, 10.0)
# The scale refit's tiny damping only keeps the system solvable (dead units, duplicate units).
SCALE_DAMP_RATIO = 1e-6
# OBS removes units in at most this many chunks (re-scoring after each): near-greedy quality, bounded cost.
OBS_MAX_STEPS = 32


@dataclass
class Problem:
    """One consumer's least-squares problem: statistics, current weights, and which rows each unit owns."""

    stats: ConsumerStatistics
    weights: np.ndarray  # [K, N]
    bias: np.ndarray  # [N] the consumer's own bias (zeros for MatMul)
    unit_rows: np.ndarray  # [units, rows per unit]

    @property
    def intercept(self) -> int:
        return self.weights.shape[0]

    def rows_of(self, units: np.ndarray) -> np.ndarray:
        return np.sort(self.unit_rows[np.asarray(units, dtype=np.int64)].reshape(-1))

    def kept_rows(self, removed_units: np.ndarray) -> np.ndarray:
        keep = np.ones(self.weights.shape[0], dtype=bool)
        keep[self.rows_of(removed_units)] = False
        return np.flatnonzero(keep)

    def plain(self, rows: np.ndarray) -> np.ndarray:
        """The current weights over ``rows`` and the current bias: removal without recovery."""
        return np.vstack([self.weights[rows], self.bias[None, :]])


def squared_error(stats: ConsumerStatistics, rows: np.ndarray, theta: np.ndarray) -> float:
    """``Σ‖x_S θ − y‖²`` of ``theta`` (``[rows…, intercept]`` × N) under ``stats``."""
    chosen = np.append(rows, stats.features)
    gram = stats.gram[np.ix_(chosen, chosen)]
    value = float(np.sum(theta * (gram @ theta)) - 2.0 * np.sum(theta * stats.cross[chosen]) + stats.target_energy)
    return max(value, 0.0)


def relative_error(stats: ConsumerStatistics, rows: np.ndarray, theta: np.ndarray) -> float:
    """``‖Δy‖ / ‖y‖`` on the rows ``stats`` summed."""
    return float(np.sqrt(squared_error(stats, rows, theta) / max(stats.target_energy, 1e-30)))


def _scale_system(stats: ConsumerStatistics, weights: np.ndarray, unit_rows: np.ndarray) -> tuple[np.ndarray, ...]:
    """Normal equations of ``[m (units); b' (N)]`` for ``y ≈ Σ_u m_u x_u W_u + b'``."""
    units, per_unit = unit_rows.shape
    outputs = weights.shape[1]
    flat = unit_rows.reshape(-1)
    intercept = stats.features
    rows_w = weights[flat]
    coupling = (stats.gram[np.ix_(flat, flat)] * (rows_w @ rows_w.T)).reshape(units, per_unit, units, per_unit)
    a = coupling.sum(axis=(1, 3))
    sums = stats.gram[flat, intercept]
    mixed = (sums[:, None] * rows_w).reshape(units, per_unit, outputs).sum(axis=1)
    hessian = np.block([[a, mixed], [mixed.T, stats.gram[intercept, intercept] * np.eye(outputs)]])
    rhs = np.concatenate([(rows_w * stats.cross[flat]).sum(axis=1).reshape(units, per_unit).sum(axis=1),
                          stats.cross[intercept]])
    return hessian, rhs


def _scaled_theta(weights: np.ndarray, unit_rows: np.ndarray, solution: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(rows, θ)`` of a scale solution: each kept unit's rows times its factor, then the bias."""
    units = unit_rows.shape[0]
    factors = np.repeat(solution[:units], unit_rows.shape[1])
    flat = unit_rows.reshape(-1)
    order = np.argsort(flat)
    rows = flat[order]
    scaled = weights[rows] * factors[order][:, None]
    return rows, np.vstack([scaled, solution[units:][None, :]])


def fit_scale(stats: ConsumerStatistics, problem: Problem, kept_units: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(rows, θ)`` of the per-unit scale refit over ``kept_units``."""
    unit_rows = problem.unit_rows[kept_units]
    hessian, rhs = _scale_system(stats, problem.weights, unit_rows)
    solution = damped_solve(hessian, rhs, SCALE_DAMP_RATIO)
    return _scaled_theta(problem.weights, unit_rows, solution)


def fit_full(stats: ConsumerStatistics, rows: np.ndarray, anchor: np.ndarray, ridge: float) -> np.ndarray:
    """Least-squares ``[W'; b']`` over ``rows``, pulled towards ``anchor`` by ``λ = ridge · mean(diag)``."""
    chosen = np.append(rows, stats.features)
    gram = stats.gram[np.ix_(chosen, chosen)]
    damp = ridge * (float(np.mean(np.diag(gram))) or 1.0)
    return np.linalg.solve(gram + damp * np.eye(chosen.size), stats.cross[chosen] + damp * anchor)


@dataclass
class Recovery:
    """The chosen refit of one consumer: its name, ``θ`` over ``rows``, and in-sample and held-out errors."""

    method: str
    rows: np.ndarray
    theta: np.ndarray
    error_before: float
    error_after: float
    heldout_before: float | None = None
    heldout_after: float | None = None


def _fit(method: str, stats: ConsumerStatistics, problem: Problem, kept_units: np.ndarray,
         rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if method == "plain":
        return rows, problem.plain(rows)
    if method == "scale":
        return fit_scale(stats, problem, kept_units)
    return rows, fit_full(stats, rows, problem.plain(rows), float(method.partition(":")[2]))


def recovery_methods(mode: str) -> list[str]:
    """The refits tried for a recovery mode (auto, scale, full, none; distill: an unpruned layer's refit)."""
    full = [f"full:{ridge:g}" for ridge in FULL_RIDGES]
    return {"auto": ["plain", "scale", *full], "scale": ["scale"], "full": full, "none": ["plain"],
            "distill": ["plain", *full]}[mode]


def choose_recovery(problem: Problem, removed_units: np.ndarray, mode: str) -> Recovery:
    """The refit with the lowest two-fold cross-validated error (or the only one ``mode`` allows)."""
    stats = problem.stats
    kept_units = np.setdiff1d(np.arange(problem.unit_rows.shape[0]), removed_units)
    rows = problem.kept_rows(removed_units)
    methods = recovery_methods(mode)
    plain_rows, plain_theta = rows, problem.plain(rows)
    heldout: dict[str, float] = {}
    folds = stats.folds
    if len(folds) == 2 and all(fold.rows for fold in folds):
        for method in dict.fromkeys(["plain", *methods]):
            total = 0.0
            for fit_on, check_on in ((folds[0], folds[1]), (folds[1], folds[0])):
                fit_rows, theta = _fit(method, fit_on, problem, kept_units, rows)
                total += squared_error(check_on, fit_rows, theta)
            heldout[method] = float(np.sqrt(total / max(folds[0].target_energy + folds[1].target_energy, 1e-30)))
        best = min(methods, key=lambda name: heldout[name])
    else:
        best = methods[0] if len(methods) == 1 else "scale"
    fit_rows, theta = _fit(best, stats, problem, kept_units, rows)
    return Recovery(best, fit_rows, theta, relative_error(stats, plain_rows, plain_theta),
                    relative_error(stats, fit_rows, theta), heldout.get("plain"), heldout.get(best))


def obs_removal(problems: list[Problem], units: int, count: int,
                max_steps: int = OBS_MAX_STEPS) -> tuple[np.ndarray, np.ndarray]:
    """``count`` units to remove, cheapest after rescaling the others; and every unit's first-step score.

    Scores are relative squared output errors, summed over the group's consumers.
    """
    states = []
    one_row_per_unit = np.arange(units)[:, None]
    for problem in problems:
        hessian, rhs = _scale_system(problem.stats, problem.weights, problem.unit_rows)
        hinv = damped_inverse(hessian, SCALE_DAMP_RATIO)
        theta = (hinv @ rhs)[:, None]  # one scale per unit, then the new bias: one column
        states.append((theta, hinv, max(problem.stats.target_energy, 1e-30), one_row_per_unit))
    return _greedy_obs(states, units, count, max_steps)


def _greedy_obs(states: list[tuple[np.ndarray, np.ndarray, float, np.ndarray]], units: int, count: int,
                max_steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Remove ``count`` units in at most ``max_steps`` chunks, cheapest first; ``Θ`` and ``H⁻¹`` downdated
    after each chunk. ``states``: per consumer ``(Θ, H⁻¹, target energy, unit_rows)``. Returns the
    removed units in order and every unit's first-step score."""
    active = np.ones(units, dtype=bool)
    removed: list[int] = []
    first_scores: np.ndarray | None = None
    steps = max(1, min(max_steps, count))
    while len(removed) < count:
        candidates = np.flatnonzero(active)
        scores = np.zeros(candidates.size)
        for theta, hinv, energy, unit_rows in states:
            scores += _block_costs(theta, hinv, unit_rows, candidates) / energy
        if first_scores is None:
            first_scores = np.full(units, np.nan)
            first_scores[candidates] = scores
        chunk = min(count - len(removed), max(1, int(np.ceil(count / steps))))
        chosen = candidates[np.argsort(scores, kind="stable")[:chunk]]
        for theta, hinv, _, unit_rows in states:
            _obs_remove(theta, hinv, np.sort(unit_rows[chosen].reshape(-1)))
        active[chosen] = False
        removed.extend(int(unit) for unit in chosen)
    return np.asarray(removed, dtype=np.int64), first_scores if first_scores is not None else np.zeros(units)


def _obs_remove(theta: np.ndarray, hinv: np.ndarray, rows: np.ndarray) -> None:
    """Remove ``rows`` from a least-squares solution in place (optimal brain surgeon's update).

    ``theta`` moves to the best solution without those rows and ``hinv`` (the inverse of the
    damped Gram matrix) to the inverse of the problem without them; a singular block falls
    back to its pseudo-inverse.
    """
    block = hinv[np.ix_(rows, rows)]
    try:
        theta -= hinv[:, rows] @ np.linalg.solve(block, theta[rows])
        hinv -= hinv[:, rows] @ np.linalg.solve(block, hinv[rows, :])
    except np.linalg.LinAlgError:
        pseudo = np.linalg.pinv(block)
        theta -= hinv[:, rows] @ (pseudo @ theta[rows])
        hinv -= hinv[:, rows] @ (pseudo @ hinv[rows, :])


# Damping of the full-problem OBS (fraction of mean diag G); on MiniLM 1e-3 chose as well as any tried.
OBS_FULL_DAMP_RATIO = 1e-3


def _block_costs(theta: np.ndarray, hinv: np.ndarray, unit_rows: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """``tr(Θ_Rᵀ [H⁻¹]_RR⁻¹ Θ_R)`` for each candidate unit's rows ``R``."""
    if unit_rows.shape[1] == 1:
        rows = unit_rows[candidates, 0]
        return np.sum(theta[rows] ** 2, axis=1) / np.maximum(np.diag(hinv)[rows], 1e-300)
    costs = np.empty(candidates.size)
    for position, unit in enumerate(candidates):
        rows = unit_rows[unit]
        block = hinv[np.ix_(rows, rows)]
        costs[position] = float(np.sum(theta[rows] * np.linalg.lstsq(block, theta[rows], rcond=None)[0]))
    return costs


def obs_full_removal(problems: list[Problem], units: int, count: int,
                     max_steps: int = OBS_MAX_STEPS) -> tuple[np.ndarray, np.ndarray]:
    """``count`` units to remove, cheapest once every other weight and the bias are refitted; first-step scores.

    Scores are squared output errors relative to each consumer's target energy, summed
    over the group's consumers; units go in at most ``max_steps`` chunks, ``Θ`` and
    ``H⁻¹`` downdated after each.
    """
    states = []
    for problem in problems:
        stats = problem.stats
        gram = stats.gram
        damp = OBS_FULL_DAMP_RATIO * (float(np.mean(np.diag(gram))) or 1.0)
        anchor = np.vstack([problem.weights, problem.bias[None, :]])
        hinv = damped_inverse(gram + damp * np.eye(gram.shape[0]), 1e-9)
        theta = hinv @ (stats.cross + damp * anchor)
        states.append((theta, hinv, max(stats.target_energy, 1e-30), problem.unit_rows))
    return _greedy_obs(states, units, count, max_steps)


def activation_scores(problems: list[Problem]) -> np.ndarray:
    """Wanda's ``‖x_j‖ · ‖W_j‖`` summed over each unit's rows and the group's consumers (relative)."""
    total = np.zeros(problems[0].unit_rows.shape[0])
    for problem in problems:
        norms = np.sqrt(np.maximum(np.diag(problem.stats.gram)[:-1], 0.0))
        per_row = norms * np.linalg.norm(problem.weights, axis=1)
        scores = per_row[problem.unit_rows].sum(axis=1)
        total += scores / max(float(scores.sum()), 1e-30)
    return total


def magnitude_scores(consumer_rows: list[tuple[np.ndarray, np.ndarray]],
                     producer_norms: list[np.ndarray]) -> np.ndarray:
    """Weight norms only: ``‖consumer rows‖ × ‖producer columns‖`` per unit (the data-free fallback).

    ``consumer_rows``: (``[K, N]`` weights, ``[units, r]`` rows per unit) per consumer;
    ``producer_norms``: per producer weight, the ``[units]`` norms of each unit's slice.
    """
    units = consumer_rows[0][1].shape[0] if consumer_rows else producer_norms[0].shape[0]
    consumer = np.zeros(units)
    for weights, unit_rows in consumer_rows:
        consumer += np.sum(weights ** 2, axis=1)[unit_rows].sum(axis=1)
    producer = np.ones(units) if not producer_norms else sum(norms ** 2 for norms in producer_norms)
    return np.sqrt(consumer) * np.sqrt(producer)
