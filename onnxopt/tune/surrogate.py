"""A cheap model of the search space, fitted to the trials so far, to rank untried configurations.

Each configuration is a set of binary features (a pass is on; an option of it has a
non-default value: ``onnxopt.tune.space.SearchSpace.features``). Three ridge regressions
on those features predict, for an untried configuration, the log of the objective, the log
of the fidelity error and whether it fails. The score is the predicted log objective plus
penalties for a predicted budget miss and a predicted failure; lower is better.

Why this model: trials are expensive (seconds to minutes) and few (tens), the effects of
passes and options are mostly additive in log space (int8 halves latency whatever the
calibration method; a calibration method changes the error whatever the smoothing), and a
ridge fit on a few dozen rows costs microseconds and is deterministic — no random
restarts, so the same history always gives the same ranking.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

RIDGE = 1.0
MISS_PENALTY = 2.0
FAILURE_PENALTY = 3.0
MIN_TRIALS = 4  # fewer finished trials than this: no model, callers keep their own order
_ERROR_FLOOR = 1e-9


class Surrogate:
    """Ridge regressions on configuration features; ``score`` ranks candidates (lower is better)."""

    def __init__(self, features: Callable[[object], list[str]]) -> None:
        self._features = features
        self._vocabulary: dict[str, int] = {}
        self._weights: dict[str, np.ndarray] = {}
        self.error_limit: float | None = None

    @property
    def fitted(self) -> bool:
        return bool(self._weights)

    def _matrix(self, configs: Sequence[object]) -> np.ndarray:
        rows = np.zeros((len(configs), len(self._vocabulary) + 1))
        rows[:, -1] = 1.0  # intercept
        for index, config in enumerate(configs):
            for name in self._features(config):
                column = self._vocabulary.get(name)
                if column is not None:
                    rows[index, column] = 1.0
        return rows

    @staticmethod
    def _solve(matrix: np.ndarray, target: np.ndarray) -> np.ndarray:
        penalty = RIDGE * np.eye(matrix.shape[1])
        penalty[-1, -1] = 0.0  # the intercept is not shrunk
        return np.linalg.solve(matrix.T @ matrix + penalty + 1e-9 * np.eye(matrix.shape[1]), matrix.T @ target)

    def fit(self, samples: Sequence[tuple[object, float | None, float | None, bool]],
            error_limit: float | None) -> None:
        """``samples``: (configuration, objective value or None, error or None, failed)."""
        self.error_limit = error_limit
        names = sorted({name for config, *_ in samples for name in self._features(config)})
        self._vocabulary = {name: index for index, name in enumerate(names)}
        self._weights = {}
        finished = [(c, v, e) for c, v, e, failed in samples if not failed and v is not None and v > 0]
        if len(finished) < MIN_TRIALS:
            return
        configs = [c for c, _, _ in finished]
        matrix = self._matrix(configs)
        self._weights["objective"] = self._solve(matrix, np.log([v for _, v, _ in finished]))
        self._weights["error"] = self._solve(matrix, np.log([max(e or 0.0, _ERROR_FLOOR) for _, _, e in finished]))
        all_configs = [c for c, *_ in samples]
        failures = np.asarray([1.0 if failed else 0.0 for *_, failed in samples])
        self._weights["failure"] = self._solve(self._matrix(all_configs), failures)

    def score(self, configs: Sequence[object]) -> list[float]:
        """Predicted badness of each configuration (lower is better); zeros when not fitted."""
        if not self.fitted:
            return [0.0] * len(configs)
        matrix = self._matrix(configs)
        objective = matrix @ self._weights["objective"]
        failure = np.clip(matrix @ self._weights["failure"], 0.0, 1.0)
        scores = objective + FAILURE_PENALTY * failure
        if self.error_limit is not None and self.error_limit > 0:
            miss = np.maximum(0.0, matrix @ self._weights["error"] - math.log(self.error_limit))
            scores = scores + MISS_PENALTY * miss
        return [float(value) for value in scores]
