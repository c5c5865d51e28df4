"""Paired, interleaved timing of model variants: decisions that survive a noisy, shared machine.

Why this shape of measurement: on a small machine shared with other work, absolute times drift by tens
of percent within seconds and onnxruntime's spinning worker threads suffer most from contention. We
time all variants in rounds, the order rotating every round, each variant running long enough per round
to dwarf the timer; a burst of noise then lands on every variant of a round. Two ratios per variant:
the median of the per-round ratios to the baseline, and the ratio of the fastest rounds (noise only
adds time, so the minimum is each variant's least disturbed run). A decision uses the larger (the
pessimistic one): a win must show in both.

Sessions run as deployed - onnxruntime's graph optimizations on, the thread count the user runs with
(0: onnxruntime's default, all cores), onnxopt's kernels registered - with one exception: worker threads
do not spin while idle. Every session owns a thread pool, and a pool that keeps spinning after its
session ran steals the cores from the next variant timed; on a loaded two-core machine that made
whole rounds ten times slower for whichever variant came next. Every variant pays the same wake-ups.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort

from onnxopt.runtime import providers_for, session_options

logger = logging.getLogger(__name__)

MAX_RUNS_PER_ROUND = 200


@dataclass(frozen=True)
class TimingConfig:
    threads: int = 0  # 0: onnxruntime's default
    rounds: int = 9
    min_round_seconds: float = 0.004
    provider: str = "cpu"


@dataclass(frozen=True)
class VariantTime:
    """One variant against the baseline (the first variant): below 1 means faster."""

    median_ms: float
    best_ms: float
    median_ratio: float
    best_ratio: float

    @property
    def ratio(self) -> float:
        """The pessimistic ratio: the larger of the median paired ratio and the best-time ratio."""
        return max(self.median_ratio, self.best_ratio)

    def as_dict(self) -> dict:
        return {"median_ms": round(self.median_ms, 4), "best_ms": round(self.best_ms, 4),
                "median_ratio": round(self.median_ratio, 4), "best_ratio": round(self.best_ratio, 4)}


def make_session(model: onnx.ModelProto, config: TimingConfig) -> ort.InferenceSession:
    options = session_options(optimize=True, threads=config.threads, use_kernels=True)
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model.SerializeToString(), options, providers=providers_for(config.provider))


def make_sessions(models: dict[str, onnx.ModelProto], config: TimingConfig) -> dict[str, ort.InferenceSession]:
    return {name: make_session(model, config) for name, model in models.items()}


def time_variants(sessions: dict[str, ort.InferenceSession], feed: dict[str, np.ndarray],
                  config: TimingConfig) -> dict[str, VariantTime]:
    """Time every session on ``feed``; ratios are to the first session (the baseline)."""
    names = list(sessions)
    runs = {name: _runs_per_round(sessions[name], feed, config) for name in names}
    per_round: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(config.rounds):
        order = names[round_index % len(names):] + names[: round_index % len(names)]
        for name in order:
            session = sessions[name]
            start = time.perf_counter()
            for _ in range(runs[name]):
                session.run(None, feed)
            per_round[name].append((time.perf_counter() - start) / runs[name])
    base = np.asarray(per_round[names[0]])
    result = {}
    for name in names:
        times = np.asarray(per_round[name])
        result[name] = VariantTime(
            median_ms=float(np.median(times) * 1e3),
            best_ms=float(times.min() * 1e3),
            median_ratio=float(np.median(times / base)),
            best_ratio=float(times.min() / base.min()),
        )
    return result


def _runs_per_round(session: ort.InferenceSession, feed: dict[str, np.ndarray], config: TimingConfig) -> int:
    """Warm the session up and size its rounds to at least ``min_round_seconds``."""
    session.run(None, feed)  # first run: allocations, kernel set-up
    start = time.perf_counter()
    session.run(None, feed)
    once = max(time.perf_counter() - start, 1e-6)
    return int(min(MAX_RUNS_PER_ROUND, max(1, math.ceil(config.min_round_seconds / once))))
