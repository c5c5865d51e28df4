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

import contextlib
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from onnxopt.model_io import Model
from onnxopt.runtime import create_session, model_on_disk

logger = logging.getLogger(__name__)

DEFAULT_ROUNDS = 15
# Slow models get fewer rounds (never below MIN_ROUNDS): about this many seconds of timing per comparison.
TIMING_BUDGET_SECONDS = 1.5
MIN_ROUNDS = 5
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


def timing_threads(requested: int) -> tuple[int, ...]:
    """Thread counts to time under: the user's, else 1 and onnxruntime's default (0: all cores)."""
    if requested > 0:
        return (requested,)
    return (1,) if (os.cpu_count() or 1) <= 1 else (1, 0)


def describe_threads(counts: Sequence[int]) -> str:
    """``1 thread and onnxruntime's default (2 cores)``, for reports and metadata."""
    parts = [f"onnxruntime's default ({os.cpu_count()} cores)" if count == 0 else
             f"{count} thread{'s' if count > 1 else ''}" for count in counts]
    return " and ".join(parts)


def optimized_session(model: Model | bytes | str, threads: int) -> ort.InferenceSession:
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
    probes = (_time_runs(baseline, feed, 1), _time_runs(candidate, feed, 1))
    runs = int(min(MAX_RUNS_PER_ROUND, max(1, math.ceil(MIN_ROUND_SECONDS / max(min(probes), 1e-7)))))
    rounds = _affordable_rounds(rounds, runs * sum(probes))
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


def relative_times(baseline: Model | bytes | str, candidates: Sequence[Model | bytes | str],
                   feed: dict[str, np.ndarray],
                   threads: int = 1, rounds: int = DEFAULT_ROUNDS) -> list[SpeedComparison]:
    """Each candidate's time over the baseline's, all timed round-robin in the same rounds.

    The order of the models rotates every round so that no model always runs right after
    another; each ratio is the median over rounds of (candidate / baseline in that round).
    Models may be given serialized, or as paths (see ``worst_relative_times``).
    """
    sessions = [optimized_session(baseline, threads)] + [optimized_session(c, threads) for c in candidates]
    for session in sessions:
        _time_runs(session, feed, 1)  # warm-up (the probe below is a second warm run)
    probes = [_time_runs(session, feed, 1) for session in sessions]
    runs = int(min(MAX_RUNS_PER_ROUND, max(1, math.ceil(MIN_ROUND_SECONDS / max(min(probes), 1e-7)))))
    rounds = _affordable_rounds(rounds, runs * sum(probes))
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


def _affordable_rounds(rounds: int, seconds_per_round: float) -> int:
    """``rounds``, or fewer (not below MIN_ROUNDS) when that many would pass the timing budget."""
    affordable = math.ceil(TIMING_BUDGET_SECONDS / max(seconds_per_round, 1e-9))
    return max(min(rounds, MIN_ROUNDS), min(rounds, affordable))


def worst_relative_times(baseline: Model, candidates: Sequence[Model], feed: dict[str, np.ndarray],
                         thread_counts: Sequence[int], rounds: int = DEFAULT_ROUNDS,
                         ) -> tuple[list[SpeedComparison], dict[int, list[float]]]:
    """``relative_times`` under each thread count; per candidate the comparison with the worst ratio.

    Each model is exported and serialized once (seconds for a whole model), and every
    thread count's sessions open that payload. Also returns the pessimistic ratio of every
    candidate under every count (for the report).
    """
    with contextlib.ExitStack() as stack:
        sources = [stack.enter_context(model_on_disk(model)) for model in (baseline, *candidates)]
        by_count = {count: relative_times(sources[0], sources[1:], feed, count, rounds) for count in thread_counts}
    worst = []
    for index in range(len(candidates)):
        worst.append(max((by_count[count][index] for count in thread_counts), key=lambda c: c.pessimistic_ratio))
    ratios = {count: [round(c.pessimistic_ratio, 3) for c in comparisons] for count, comparisons in by_count.items()}
    return worst, ratios


def compare_models(baseline: Model, candidate: Model, feed: dict[str, np.ndarray], threads: int = 1,
                   rounds: int = DEFAULT_ROUNDS) -> SpeedComparison:
    """Paired timing of two whole models on one feed."""
    return paired_ratio(optimized_session(baseline, threads), optimized_session(candidate, threads), feed, rounds)
