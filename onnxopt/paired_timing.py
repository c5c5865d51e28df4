"""Paired timing of model variants, robust on a small shared machine.

Why paired ratios: on a 2-core machine shared with other work, absolute times drift by
tens of percent within seconds. We time the variants in alternation (the order rotating
every round), each round long enough to dwarf timer resolution, and take the median of
the per-round ratios: a burst of noise lands on every variant of a round, and one bad
round cannot move the median. We also keep the ratio of the fastest rounds (noise only
ever adds time, so the minimum is each variant's least disturbed run) and judge by the
larger of the two: a win must show in both. Sessions run with onnxruntime's graph
optimizations on, as deployed.

Passes that promise speed (int8 only where it is faster, pruning that reports its
measured latency change) time their candidates with this one module.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from onnxopt.model_io import Model
from onnxopt.runtime import create_session

logger = logging.getLogger(__name__)

DEFAULT_ROUNDS = 15
MIN_ROUND_SECONDS = 0.003
MAX_RUNS_PER_ROUND = 2000


@dataclass(frozen=True)
class SpeedComparison:
    """Candidate time over baseline time (below 1: candidate faster)."""

    ratio: float
    baseline_ms: float
    candidate_ms: float
    rounds: int
    min_ratio: float = math.nan  # fastest candidate round over fastest baseline round

    @property
    def pessimistic_ratio(self) -> float:
        """The larger of the median paired ratio and the ratio of best times: both must show a win."""
        return self.ratio if math.isnan(self.min_ratio) else max(self.ratio, self.min_ratio)


def optimized_session(model: Model, threads: int) -> ort.InferenceSession:
    return create_session(model, optimize=True, threads=threads)


def _time_runs(session: ort.InferenceSession, feed: dict[str, np.ndarray], runs: int) -> float:
    started = time.perf_counter()
    for _ in range(runs):
        session.run(None, feed)
    return (time.perf_counter() - started) / runs


def paired_ratio(baseline: ort.InferenceSession, candidate: ort.InferenceSession,
                 feed: dict[str, np.ndarray], rounds: int = DEFAULT_ROUNDS) -> SpeedComparison:
    """Median over rounds of (candidate time / baseline time) on one feed."""
    for session in (baseline, candidate):
        _time_runs(session, feed, 2)  # warm-up: allocations, thread pools, first-run caches
    probe = min(_time_runs(baseline, feed, 1), _time_runs(candidate, feed, 1))
    runs = int(min(MAX_RUNS_PER_ROUND, max(1, math.ceil(MIN_ROUND_SECONDS / max(probe, 1e-7)))))
    ratios, base_times, cand_times = [], [], []
    for index in range(rounds):
        if index % 2:
            cand = _time_runs(candidate, feed, runs)
            base = _time_runs(baseline, feed, runs)
        else:
            base = _time_runs(baseline, feed, runs)
            cand = _time_runs(candidate, feed, runs)
        ratios.append(cand / base)
        base_times.append(base)
        cand_times.append(cand)
    return SpeedComparison(float(np.median(ratios)), 1e3 * float(np.median(base_times)),
                           1e3 * float(np.median(cand_times)), rounds, float(min(cand_times) / min(base_times)))


def relative_times(baseline: Model, candidates: Sequence[Model], feed: dict[str, np.ndarray], threads: int = 1,
                   rounds: int = DEFAULT_ROUNDS) -> list[SpeedComparison]:
    """Each candidate's time over the baseline's, all timed round-robin in the same rounds.

    The order of the models rotates every round so that no model always runs right after
    another; each ratio is the median over rounds of (candidate / baseline in that round).
    """
    sessions = [optimized_session(baseline, threads)] + [optimized_session(c, threads) for c in candidates]
    for session in sessions:
        _time_runs(session, feed, 2)
    probe = min(_time_runs(session, feed, 1) for session in sessions)
    runs = int(min(MAX_RUNS_PER_ROUND, max(1, math.ceil(MIN_ROUND_SECONDS / max(probe, 1e-7)))))
    times = [[0.0] * rounds for _ in sessions]
    for index in range(rounds):
        shift = index % len(sessions)
        for position in range(len(sessions)):
            which = (position + shift) % len(sessions)
            times[which][index] = _time_runs(sessions[which], feed, runs)
    base = np.asarray(times[0])
    result = []
    for series in times[1:]:
        cand = np.asarray(series)
        result.append(SpeedComparison(float(np.median(cand / base)), 1e3 * float(np.median(base)),
                                      1e3 * float(np.median(cand)), rounds, float(cand.min() / base.min())))
    return result


def compare_models(baseline: Model, candidate: Model, feed: dict[str, np.ndarray], threads: int = 1,
                   rounds: int = DEFAULT_ROUNDS) -> SpeedComparison:
    """Paired timing of two whole models on one feed."""
    return paired_ratio(optimized_session(baseline, threads), optimized_session(candidate, threads), feed, rounds)
