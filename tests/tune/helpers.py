"""User metrics for the tune tests: importable by name (``python:tests.tune.helpers:...``) in trial processes.

They stand for a user's own metric code, which runs inside every trial: one that raises,
one that hangs, one that allocates far more memory than the trial may use.
"""

from __future__ import annotations

import time

import numpy as np

from onnxopt.error_metrics import relative_l2

PICKY_LIMIT = 0.05


def picky_error(references, candidates) -> float:
    """rel_l2, but raises on a candidate far from the reference (as a user's metric might)."""
    error = relative_l2(references, candidates)
    if error > PICKY_LIMIT:
        raise ValueError(f"picky metric refuses a model this far off (rel_l2 {error:.3g})")
    return error


def slow_error(references, candidates) -> float:
    """Hangs: the trial's timeout must end it."""
    time.sleep(120)
    return 0.0


def hungry_error(references, candidates) -> float:
    """Asks for 4 GiB: under a trial memory limit this is a MemoryError."""
    block = np.ones(1 << 29, dtype=np.float64)
    return float(block[0] - 1.0)
