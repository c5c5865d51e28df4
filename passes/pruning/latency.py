"""The measured latency change a pruning pass reports: before vs after, interleaved, on one sample.

Timing uses the framework's paired, round-robin timing (``onnxopt.paired_timing``) with
onnxruntime's graph optimizations on, as deployed; batch 1 keeps it short inside a pass
(the benchmark script measures larger batches). Timing never fails a pass: an error is a note.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from onnxopt.model_io import Model
from onnxopt.paired_timing import relative_times
from onnxopt.runtime_errors import ORT_RUN_ERRORS

LATENCY_ROUNDS = 9


def record_latency(before: Model, after: Model, feed: dict[str, np.ndarray] | None, threads: int,
                   stats: dict[str, Any], notes: list[str]) -> None:
    """Add ``latency_ratio`` (after/before, the pessimistic paired ratio) and the times to ``stats``."""
    if feed is None:
        return
    one_sample = {name: value[:1] if np.ndim(value) else value for name, value in feed.items()}
    try:
        (comparison,) = relative_times(before, [after], one_sample, threads, rounds=LATENCY_ROUNDS)
    except ORT_RUN_ERRORS as error:
        notes.append(f"latency not measured: {str(error).splitlines()[0]}")
        return
    stats.update(latency_ratio=round(comparison.pessimistic_ratio, 3), latency_batch=1,
                 latency_ms_before=round(comparison.baseline_ms, 3), latency_ms_after=round(comparison.candidate_ms, 3))
