"""Streaming calibration: value ranges of activations from running statistics only.

Why streaming: calibrators that stack every batch's activations before computing ranges
need memory proportional to the data set (hundreds of GB on real models). Here each
tensor keeps a fixed-size summary — min/max, and for the histogram methods one
fixed-bin histogram over a symmetric range that doubles (merging bin pairs, an exact
re-binning) whenever a batch exceeds it — so memory depends on the number of tensors,
never on the number of samples.

Mask sentinels: exporters write ``-float32.max`` (or -1e9 .. -3.4e38) into attention
scores at masked positions. A MinMax calibrator that sees them produces an infinite or
useless scale and the whole model collapses. We treat any value with ``|x| >= 1e30`` and
any non-finite value as a sentinel: it is excluded from every statistic and counted. A
tensor that carried sentinels is reported (``TensorRange.sentinels``) so the placement
never quantizes it: quantizing would turn the mask into a finite value and un-mask
positions. Values below the threshold (e.g. -10000 masks) are ordinary data; the
percentile/entropy/MSE methods clip such outliers on their own, minmax does not.

Methods (what ``TensorRange`` is computed from):
- ``minmax``: the smallest and largest value seen;
- ``percentile``: the two tails cut at ``percentile`` (e.g. 99.999 % of values inside);
- ``entropy``: the clipping threshold minimising the KL divergence between the histogram
  of |x| and its quantized version (TensorRT's calibrator);
- ``mse``: the range (min and max scaled together) minimising the expected squared
  quantization error (clipping + rounding) over the histogram.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from onnxopt.activations import iter_activations
from onnxopt.errors import BadInputError
from onnxopt.model_io import Model
from onnxopt.runtime_errors import ORT_RUN_ERRORS

logger = logging.getLogger(__name__)

METHODS = ("minmax", "percentile", "entropy", "mse")
SENTINEL_ABS = 1e30
DEFAULT_BINS_PER_SIDE = 1024
DEFAULT_PERCENTILE = 99.999
# Thresholds tried by the entropy and MSE searches (evenly spread over the histogram).
SEARCH_STEPS = 128


@dataclass(frozen=True)
class TensorRange:
    """The calibrated real range of one tensor, and what was seen to get it."""

    rmin: float
    rmax: float
    seen_min: float
    seen_max: float
    count: int
    sentinels: int = 0


class TensorStatistics:
    """Running statistics of one tensor: min/max and (optionally) a growing histogram.

    The histogram covers [-edge, edge] in ``2 * bins_per_side`` bins. When a value beyond
    ``edge`` arrives, ``edge`` doubles as often as needed and each adjacent pair of bins
    merges into one; counts are never re-estimated, only summed.
    """

    def __init__(self, histogram: bool, bins_per_side: int = DEFAULT_BINS_PER_SIDE) -> None:
        if bins_per_side % 2:
            raise ValueError("bins_per_side must be even so that bins merge pairwise")
        self.minimum = math.inf
        self.maximum = -math.inf
        self.count = 0
        self.sentinels = 0
        self.shape: tuple[int, ...] | None = None
        self.bins_per_side = bins_per_side
        self.histogram = np.zeros(2 * bins_per_side, dtype=np.int64) if histogram else None
        self.edge = 0.0

    @property
    def nbytes(self) -> int:
        return 64 + (self.histogram.nbytes if self.histogram is not None else 0)

    def update(self, values: np.ndarray) -> None:
        if self.shape is None:
            self.shape = tuple(int(d) for d in np.shape(values))
        flat = np.asarray(values).ravel()
        if flat.dtype != np.float32:
            flat = flat.astype(np.float32)
        keep = np.abs(flat) < SENTINEL_ABS  # also False for nan and ±inf
        if not keep.all():
            self.sentinels += int(flat.size - np.count_nonzero(keep))
            flat = flat[keep]
        if flat.size == 0:
            return
        low, high = float(flat.min()), float(flat.max())
        self.minimum = min(self.minimum, low)
        self.maximum = max(self.maximum, high)
        self.count += int(flat.size)
        if self.histogram is not None:
            self._add_to_histogram(flat, max(abs(low), abs(high)))

    def _add_to_histogram(self, flat: np.ndarray, amax: float) -> None:
        if amax == 0.0 and self.edge == 0.0:
            self.histogram[self.bins_per_side] += flat.size  # all zeros: the bin just above 0
            return
        if self.edge == 0.0:
            self.edge = amax * (1.0 + 1e-6)
        while amax >= self.edge:
            self._double_edge()
        width = self.edge / self.bins_per_side
        index = np.floor((flat.astype(np.float64) + self.edge) / width).astype(np.int64)
        np.clip(index, 0, self.histogram.size - 1, out=index)
        self.histogram += np.bincount(index, minlength=self.histogram.size)

    def _double_edge(self) -> None:
        merged = self.histogram.reshape(-1, 2).sum(axis=1)  # bins_per_side bins over the old range
        grown = np.zeros_like(self.histogram)
        quarter = self.bins_per_side // 2
        grown[quarter : quarter + merged.size] = merged
        self.histogram = grown
        self.edge *= 2.0

    # --- ranges -----------------------------------------------------------------
    def range(self, method: str, symmetric: bool, percentile: float = DEFAULT_PERCENTILE) -> TensorRange:
        if self.count == 0:
            return TensorRange(0.0, 0.0, 0.0, 0.0, 0, self.sentinels)
        if method == "minmax" or self.histogram is None or self.edge == 0.0:
            low, high = self.minimum, self.maximum
        elif method == "percentile":
            low, high = self._percentile_range(percentile, symmetric)
        elif method == "entropy":
            low, high = self._entropy_range(symmetric)
        elif method == "mse":
            low, high = self._mse_range(symmetric)
        else:
            raise BadInputError(f"unknown calibration method {method!r} (choose from {', '.join(METHODS)})")
        low = max(low, self.minimum)
        high = min(high, self.maximum)
        return TensorRange(float(low), float(high), self.minimum, self.maximum, self.count, self.sentinels)

    def _centers(self) -> np.ndarray:
        width = self.edge / self.bins_per_side
        return -self.edge + (np.arange(self.histogram.size) + 0.5) * width

    def _upper_edges(self) -> np.ndarray:
        width = self.edge / self.bins_per_side
        return -self.edge + (np.arange(self.histogram.size) + 1.0) * width

    def _percentile_range(self, percentile: float, symmetric: bool) -> tuple[float, float]:
        keep = min(max(percentile, 0.0), 100.0) / 100.0
        if symmetric:
            folded = self._folded()
            cumulative = np.cumsum(folded) / folded.sum()
            index = int(np.searchsorted(cumulative, keep))
            threshold = (index + 1) * self.edge / self.bins_per_side
            return -threshold, threshold
        cumulative = np.cumsum(self.histogram) / self.histogram.sum()
        tail = (1.0 - keep) / 2.0
        width = self.edge / self.bins_per_side
        low_index = int(np.searchsorted(cumulative, tail, side="right"))
        high_index = int(np.searchsorted(cumulative, 1.0 - tail))
        return -self.edge + low_index * width, -self.edge + (high_index + 1) * width

    def _folded(self) -> np.ndarray:
        """Histogram of |x| over [0, edge] in ``bins_per_side`` bins."""
        half = self.bins_per_side
        return self.histogram[half:] + self.histogram[:half][::-1]

    def _entropy_range(self, symmetric: bool) -> tuple[float, float]:
        folded = self._folded().astype(np.float64)
        one_sided = self.minimum >= 0.0
        levels = 255 if (one_sided and not symmetric) else 128
        threshold_bin = _kl_threshold_bin(folded, levels)
        threshold = threshold_bin * self.edge / self.bins_per_side
        return -threshold, threshold

    def _mse_range(self, symmetric: bool) -> tuple[float, float]:
        counts = self.histogram.astype(np.float64)
        centers = self._centers()
        used = counts > 0
        counts, centers = counts[used], centers[used]
        best, best_error = (self.minimum, self.maximum), math.inf
        for fraction in np.linspace(1.0 / SEARCH_STEPS, 1.0, SEARCH_STEPS):
            low = min(self.minimum * fraction, 0.0)
            high = max(self.maximum * fraction, 0.0)
            if symmetric:
                amax = max(-low, high)
                low, high = -amax, amax
                steps = 254.0
            else:
                steps = 255.0
            step = (high - low) / steps
            if step <= 0:
                continue
            clipped = np.clip(centers, low, high)
            error = float(np.sum(counts * ((centers - clipped) ** 2 + step * step / 12.0)))
            if error < best_error:
                best, best_error = (low, high), error
        return best


def _kl_threshold_bin(folded: np.ndarray, levels: int) -> int:
    """The bin index (exclusive end) of |x| whose clipping minimises KL(P || Q)."""
    total_bins = folded.size
    if total_bins <= levels:
        return total_bins
    best_end, best_divergence = total_bins, math.inf
    candidates = np.unique(np.linspace(levels, total_bins, SEARCH_STEPS).astype(np.int64))
    for end in candidates:
        reference = folded[:end].copy()
        reference[-1] += folded[end:].sum()  # clipped outliers land in the last bin
        if reference.sum() == 0:
            continue
        # Quantize the first `end` bins into `levels` groups; spread each group's mass evenly
        # over the bins of that group that were non-empty in the reference.
        edges = np.linspace(0, end, levels + 1).astype(np.int64)
        source = folded[:end]
        nonzero = source > 0
        group_sum = np.add.reduceat(source, edges[:-1])
        group_nonzero = np.add.reduceat(nonzero.astype(np.float64), edges[:-1])
        group_of_bin = np.repeat(np.arange(levels), np.diff(edges))
        spread = np.where(group_nonzero > 0, group_sum / np.maximum(group_nonzero, 1), 0.0)
        candidate = np.where(nonzero, spread[group_of_bin], 0.0)
        divergence = _kl(reference, candidate)
        if divergence < best_divergence:
            best_end, best_divergence = int(end), divergence
    return best_end


def _kl(reference: np.ndarray, candidate: np.ndarray) -> float:
    p = reference / reference.sum()
    q_total = candidate.sum()
    if q_total == 0:
        return math.inf
    q = candidate / q_total
    mask = p > 0
    if np.any(q[mask] == 0):
        # Bins the quantized distribution cannot express: smooth instead of an infinite divergence.
        q = np.where(q == 0, 1e-12, q)
    return float(np.sum(p[mask] * np.log(p[mask] / q[mask])))


@dataclass
class Calibrator:
    """Running statistics for a set of tensors; feed batches with ``observe``."""

    method: str = "minmax"
    bins_per_side: int = DEFAULT_BINS_PER_SIDE
    stats: dict[str, TensorStatistics] = field(default_factory=dict)
    batches: int = 0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise BadInputError(f"unknown calibration method {self.method!r} (choose from {', '.join(METHODS)})")

    def observe(self, activations: dict[str, np.ndarray]) -> None:
        for name, values in activations.items():
            if not np.issubdtype(np.asarray(values).dtype, np.floating):
                continue
            entry = self.stats.get(name)
            if entry is None:
                entry = self.stats[name] = TensorStatistics(self.method != "minmax", self.bins_per_side)
            entry.update(values)
        self.batches += 1

    def ranges(self, symmetric: bool | dict[str, bool] = False,
               percentile: float = DEFAULT_PERCENTILE) -> dict[str, TensorRange]:
        """The calibrated range of every observed tensor (``symmetric`` per tensor or for all)."""
        result = {}
        for name, entry in self.stats.items():
            wanted = symmetric.get(name, False) if isinstance(symmetric, dict) else symmetric
            result[name] = entry.range(self.method, wanted, percentile)
        return result

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {name: entry.shape for name, entry in self.stats.items() if entry.shape is not None}

    @property
    def nbytes(self) -> int:
        """Memory held by the statistics (independent of the number of batches)."""
        return sum(entry.nbytes for entry in self.stats.values())


def calibrate(
    model: Model,
    tensor_names: Iterable[str],
    feeds: Iterable[dict[str, np.ndarray]],
    method: str = "minmax",
    max_batches: int = 0,
    bins_per_side: int = DEFAULT_BINS_PER_SIDE,
) -> Calibrator:
    """Stream ``feeds`` through ``model`` and collect statistics of ``tensor_names``.

    ``max_batches`` 0 means every batch. Raises BadInputError when no batch arrived.
    """
    calibrator = Calibrator(method=method, bins_per_side=bins_per_side)
    names = list(dict.fromkeys(tensor_names))
    if not names:
        return calibrator
    wanted = set(names)
    try:
        for activations in iter_activations(model, names, _limited(feeds, max_batches)):
            calibrator.observe({name: value for name, value in activations.items() if name in wanted})
    except ORT_RUN_ERRORS as error:
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise BadInputError(f"calibration data does not fit the model: {first}") from None
    if calibrator.batches == 0:
        raise BadInputError("calibration data holds no batches")
    logger.info("calibrated %d tensors on %d batches (%s, %d bytes of statistics)",
                len(calibrator.stats), calibrator.batches, method, calibrator.nbytes)
    return calibrator


def _limited(feeds: Iterable[dict[str, np.ndarray]], max_batches: int) -> Iterable[dict[str, np.ndarray]]:
    for index, feed in enumerate(feeds):
        if max_batches and index >= max_batches:
            return
        yield feed
