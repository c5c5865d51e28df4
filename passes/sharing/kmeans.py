"""Weighted one-dimensional k-means over many groups at once (the codebooks of clustering).

Every group (a row of a ``[G, M]`` matrix: one codebook's elements) is clustered on its
own, but all groups are processed together with array operations, so a table of 30 000 ×
384 weights costs a sort and a few passes, not a Python loop per codebook.

Why sorting makes it cheap: in one dimension each cluster is an interval of the sorted
values, bounded by the midpoints between neighbouring centroids. After one sort per group
and prefix sums of ``w``, ``w·x`` and ``w·x²`` along it, a Lloyd iteration needs only the
positions of the ``K - 1`` midpoints (one ``searchsorted`` over all groups, with each
group shifted into its own disjoint range) and differences of the prefix sums: O(G·K·log
N) per iteration instead of O(N·K).

Initialisation is k-means++ (Arthur & Vassilvitskii, 2007) with the sampling weights
multiplied by each element's importance, on a per-group subsample when a group is large;
a few independent starts run side by side and each group keeps its best. Centroids can be
pinned (a zero kept exact for pruned weights) and are rounded to the dtype they will be
stored in, after which every element is assigned to its nearest *stored* centroid.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_ITERATIONS = 30
DEFAULT_STARTS = 3
# k-means++ runs on at most this many elements per cluster of each group (sampled); Lloyd uses all.
INIT_SAMPLES_PER_CLUSTER = 64


@dataclass
class Codebooks:
    """Per-group centroids ``[G, K]`` (ascending) and each element's centroid index ``[G, M]``."""

    centroids: np.ndarray
    indices: np.ndarray

    def decode(self) -> np.ndarray:
        """The ``[G, M]`` values the codebooks reproduce."""
        return np.take_along_axis(self.centroids, self.indices.astype(np.int64), axis=1)


@dataclass
class _Sorted:
    """One group per row, sorted, with prefix sums for interval statistics."""

    values: np.ndarray  # [G, M] ascending
    order: np.ndarray  # [G, M] original position of each sorted element
    keyed: np.ndarray  # [G * M] values mapped into disjoint per-group ranges (for one searchsorted)
    low: np.ndarray  # [G, 1] per-group minimum (the key's origin)
    scale: np.ndarray  # [G, 1] per-group key scale
    w: np.ndarray  # [G, M + 1] prefix sums of weights
    wx: np.ndarray  # [G, M + 1] prefix sums of weight × value
    wxx: np.ndarray  # [G, M + 1] prefix sums of weight × value²


def _prefix(values: np.ndarray) -> np.ndarray:
    out = np.zeros((values.shape[0], values.shape[1] + 1), dtype=np.float64)
    np.cumsum(values, axis=1, out=out[:, 1:])
    return out


def _prepare(values: np.ndarray, weights: np.ndarray) -> _Sorted:
    order = np.argsort(values, axis=1, kind="stable")
    ordered = np.take_along_axis(values, order, axis=1)
    w = np.take_along_axis(weights, order, axis=1)
    low = ordered[:, :1]
    span = ordered[:, -1:] - low
    scale = np.where(span > 0, 1.0 / np.where(span > 0, span, 1.0), 1.0)
    groups = values.shape[0]
    # Row g's keys lie in [3g, 3g + 1]: the gaps keep every group's midpoints inside its own range.
    keyed = ((ordered - low) * scale + 3.0 * np.arange(groups)[:, None]).reshape(-1)
    return _Sorted(ordered, order, keyed, low, scale, _prefix(w), _prefix(w * ordered), _prefix(w * ordered * ordered))


def _boundaries(data: _Sorted, centroids: np.ndarray) -> np.ndarray:
    """``[G, K + 1]`` positions in each sorted row where each centroid's interval starts (and M)."""
    groups, size = data.values.shape
    midpoints = (centroids[:, 1:] + centroids[:, :-1]) / 2.0
    keys = ((midpoints - data.low) * data.scale + 3.0 * np.arange(groups)[:, None]).reshape(-1)
    # Elements equal to a midpoint go to the lower centroid (side="right"); ties are measure-zero anyway.
    positions = np.searchsorted(data.keyed, keys, side="right").reshape(groups, -1)
    positions -= (np.arange(groups) * size)[:, None]
    positions = np.clip(positions, 0, size)
    edges = np.empty((groups, centroids.shape[1] + 1), dtype=np.int64)
    edges[:, 0] = 0
    edges[:, 1:-1] = np.maximum.accumulate(positions, axis=1)
    edges[:, -1] = size
    return edges


def _interval_sums(prefix: np.ndarray, edges: np.ndarray) -> np.ndarray:
    return np.take_along_axis(prefix, edges[:, 1:], axis=1) - np.take_along_axis(prefix, edges[:, :-1], axis=1)


def _error(data: _Sorted, centroids: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Weighted squared error of each group under the assignment ``edges``."""
    w, wx, wxx = (_interval_sums(p, edges) for p in (data.w, data.wx, data.wxx))
    return np.sum(wxx - 2.0 * centroids * wx + centroids * centroids * w, axis=1)


def _lloyd(data: _Sorted, centroids: np.ndarray, pinned: np.ndarray, iterations: int) -> tuple[np.ndarray, np.ndarray]:
    """Lloyd iterations from ``centroids`` (rows ascending); pinned centroids never move."""
    edges = _boundaries(data, centroids)
    for _ in range(iterations):
        w = _interval_sums(data.w, edges)
        wx = _interval_sums(data.wx, edges)
        updated = np.where(w > 0, wx / np.where(w > 0, w, 1.0), centroids)  # empty clusters stay put
        updated = np.where(pinned, centroids, updated)
        order = np.argsort(updated, axis=1, kind="stable")
        centroids = np.take_along_axis(updated, order, axis=1)
        pinned = np.take_along_axis(pinned, order, axis=1)
        new_edges = _boundaries(data, centroids)
        if np.array_equal(new_edges, edges):
            break
        edges = new_edges
    return centroids, pinned


def _plus_plus(values: np.ndarray, weights: np.ndarray, clusters: int, pin: np.ndarray,
               rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeds ``[G, K]`` on (a subsample of) each group, importance-weighted; pinned rows start at 0."""
    groups, size = values.shape
    samples = min(size, INIT_SAMPLES_PER_CLUSTER * clusters)
    if samples < size:
        picks = rng.integers(0, size, size=(groups, samples))  # with replacement: cheap, and fine for seeding
        values = np.take_along_axis(values, picks, axis=1)
        weights = np.take_along_axis(weights, picks, axis=1)
    rows = np.arange(groups)
    seeds = np.empty((groups, clusters), dtype=np.float64)
    seeds[:, 0] = np.where(pin, 0.0, values[rows, _draw(rng, weights)])
    nearest = (values - seeds[:, :1]) ** 2
    for index in range(1, clusters):
        seeds[:, index] = values[rows, _draw(rng, weights * nearest)]
        nearest = np.minimum(nearest, (values - seeds[:, index : index + 1]) ** 2)
    return seeds


def _draw(rng: np.random.Generator, mass: np.ndarray) -> np.ndarray:
    """One index per row, drawn with probability proportional to ``mass`` (uniform where a row has none)."""
    cumulative = np.cumsum(mass, axis=1)
    totals = cumulative[:, -1:]
    empty = totals[:, 0] <= 0
    if np.any(empty):
        cumulative[empty] = np.arange(1, mass.shape[1] + 1)
        totals = cumulative[:, -1:]
    targets = rng.random((mass.shape[0], 1)) * totals
    return np.minimum((cumulative <= targets).sum(axis=1), mass.shape[1] - 1)


def _labels(data: _Sorted, centroids: np.ndarray) -> np.ndarray:
    """Index of the nearest centroid (rows ascending) of every element, in the original order."""
    groups, size = data.values.shape
    counts = np.diff(_boundaries(data, centroids), axis=1)
    sorted_labels = np.repeat(np.tile(np.arange(centroids.shape[1]), groups), counts.reshape(-1)).reshape(groups, size)
    labels = np.empty((groups, size), dtype=np.int64)
    np.put_along_axis(labels, data.order, sorted_labels, axis=1)
    return labels


def fit_codebooks(values: np.ndarray, clusters: int, weights: np.ndarray | None = None,
                  pin_zero: np.ndarray | None = None, storage_dtype: np.dtype | type = np.float32,
                  iterations: int = DEFAULT_ITERATIONS, starts: int = DEFAULT_STARTS, seed: int = 0) -> Codebooks:
    """``clusters`` centroids per row of ``values [G, M]`` minimising Σ weight · (value − centroid)².

    ``weights`` (same shape, ≥ 0) says how much each element's error counts (uniform when
    None). ``pin_zero`` ([G] booleans) keeps 0.0 as an exact centroid of those rows.
    Centroids are rounded to ``storage_dtype`` before the final assignment, so the indices
    point at the values a model will really hold.
    """
    values = np.asarray(values, dtype=np.float64)
    groups = values.shape[0]
    weights = np.ones_like(values) if weights is None else np.asarray(weights, dtype=np.float64)
    weights = np.maximum(weights, 0.0)
    weights = np.where(weights.sum(axis=1, keepdims=True) > 0, weights, 1.0)
    pin = np.zeros(groups, dtype=bool) if pin_zero is None else np.asarray(pin_zero, dtype=bool)
    rng = np.random.default_rng(seed)
    data = _prepare(values, weights)
    best_centroids: np.ndarray | None = None
    best_error = np.full(groups, np.inf)
    for _ in range(max(1, starts)):
        seeds = _plus_plus(values, weights, clusters, pin, rng)
        pinned = np.zeros((groups, clusters), dtype=bool)
        pinned[:, 0] = pin
        order = np.argsort(seeds, axis=1, kind="stable")
        seeds = np.take_along_axis(seeds, order, axis=1)
        pinned = np.take_along_axis(pinned, order, axis=1)
        centroids, _ = _lloyd(data, seeds, pinned, iterations)
        error = _error(data, centroids, _boundaries(data, centroids))
        better = error < best_error
        best_centroids = centroids if best_centroids is None else np.where(better[:, None], centroids, best_centroids)
        best_error = np.minimum(error, best_error)
    assert best_centroids is not None
    stored = np.sort(best_centroids.astype(storage_dtype).astype(np.float64), axis=1)  # 0.0 rounds to itself
    index_dtype = np.uint8 if clusters <= 256 else np.uint16
    return Codebooks(stored, _labels(data, stored).astype(index_dtype))


def nearest_indices(values: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Index of the nearest of each row's ``centroids`` ``[G, K]`` for every element of ``values`` ``[G, M]``.

    Rows of centroids need not be sorted. One ``searchsorted`` over all groups: each
    group's midpoints and values are mapped into a range of their own.
    """
    values = np.asarray(values, dtype=np.float64)
    centroids = np.asarray(centroids, dtype=np.float64)
    groups, clusters = centroids.shape
    order = np.argsort(centroids, axis=1, kind="stable")
    ordered = np.take_along_axis(centroids, order, axis=1)
    if clusters == 1:
        return np.zeros(values.shape, dtype=np.int64) + order[:, :1]
    low = ordered[:, :1]
    span = ordered[:, -1:] - low
    scale = np.where(span > 0, 1.0 / np.where(span > 0, span, 1.0), 1.0)
    offsets = 3.0 * np.arange(groups)[:, None]
    midpoints = ((ordered[:, 1:] + ordered[:, :-1]) / 2.0 - low) * scale + offsets
    keys = np.clip((values - low) * scale, -0.5, 1.5) + offsets
    positions = np.searchsorted(midpoints.reshape(-1), keys.reshape(-1), side="left").reshape(values.shape)
    positions -= (np.arange(groups) * (clusters - 1))[:, None]
    return np.take_along_axis(order, np.clip(positions, 0, clusters - 1), axis=1)
