"""Second-moment statistics of layer inputs (``XᵀX`` and its diagonal), streamed batch by batch.

Several passes need, for a weight ``W`` read as ``X @ W``, the Gram matrix ``H = XᵀX`` of the
activations that reach it: GPTQ spreads rounding error with it, SparseGPT and Wanda score
weights with it, and least-squares refitting after pruning solves with it. It lives here,
in the framework, so those families share one streamed implementation.

``HessianAccumulator`` adds one batch's ``XᵀX`` at a time and never keeps activations, so
memory is ``K²`` per layer input whatever the number of samples; ``collect_hessians`` runs
the model once per group of inputs whose sums fit a memory budget. Where only the
diagonal is needed (how much energy each input channel carries: the importance of the
weights that multiply it, for weighted clustering and Conv inputs), ``ChannelEnergy``
keeps ``Σ x²`` per channel — ``K`` numbers — and ``collect_channel_energy`` streams them
for any channel axis. ``padding_mask_input`` finds the attention-mask input whose zeros mark
padded positions, which every transformer statistic should leave out.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable, Iterator, Mapping

import numpy as np

from onnxopt.activations import iter_activations
from onnxopt.model_io import Model

logger = logging.getLogger(__name__)


class HessianAccumulator:
    """Running ``Σ xᵀx`` over the rows of every batch of one layer input (last axis = K)."""

    def __init__(self, features: int) -> None:
        self.features = features
        self.sum = np.zeros((features, features), dtype=np.float64)
        self.rows = 0

    def add(self, batch: np.ndarray, transposed: bool = False, row_mask: np.ndarray | None = None) -> None:
        """Add a batch ``[..., K]`` (or ``[K, M]`` when ``transposed``, as Gemm's transA reads it).

        ``row_mask`` (the batch's leading shape) keeps only the rows where it is non-zero:
        padded token positions would otherwise dominate the statistics of short sentences.
        """
        values = np.asarray(batch)
        matrix = values.T if transposed else values.reshape(-1, values.shape[-1])
        if matrix.shape[-1] != self.features:
            raise ValueError(f"activation has {matrix.shape[-1]} features, expected {self.features}")
        if row_mask is not None and not transposed:
            matrix = matrix[np.asarray(row_mask).reshape(-1) != 0]
        matrix = matrix.astype(np.float32, copy=False)
        self.sum += (matrix.T @ matrix).astype(np.float64)
        self.rows += matrix.shape[0]

    def merge(self, other: HessianAccumulator) -> None:
        """Add another input's statistics (a weight read by several nodes minimises their sum)."""
        self.sum += other.sum
        self.rows += other.rows


class ChannelEnergy:
    """Running ``Σ x²`` per channel of one activation (channels along ``axis``), over unmasked positions."""

    def __init__(self, channels: int, axis: int = -1) -> None:
        self.channels = channels
        self.axis = axis
        self.sum = np.zeros(channels, dtype=np.float64)
        self.count = 0

    def add(self, batch: np.ndarray, position_mask: np.ndarray | None = None) -> None:
        """Add a batch; ``position_mask`` (the batch's shape without the channel axis, last-axis
        channels only) keeps only positions where it is non-zero."""
        values = np.moveaxis(np.asarray(batch), self.axis, -1)
        if values.shape[-1] != self.channels:
            raise ValueError(f"activation has {values.shape[-1]} channels, expected {self.channels}")
        matrix = values.reshape(-1, self.channels)
        if position_mask is not None:
            matrix = matrix[np.asarray(position_mask).reshape(-1) != 0]
        matrix = matrix.astype(np.float64)
        self.sum += np.einsum("ij,ij->j", matrix, matrix)
        self.count += matrix.shape[0]

    @property
    def mean(self) -> np.ndarray:
        """``E[x²]`` per channel (zeros before any data)."""
        return self.sum / max(1, self.count)


def collect_channel_energy(model: Model, requests: Mapping[tuple[str, int], int],
                           feeds: Iterable[dict[str, np.ndarray]], max_batches: int = 0,
                           mask_input: str | None = None) -> dict[tuple[str, int], ChannelEnergy]:
    """``Σ x²`` per channel of each requested activation ``(tensor name, channel axis) -> channels``, in one
    streamed pass over the data. ``mask_input`` as for ``collect_hessians`` (last-axis channels only)."""
    sums = {key: ChannelEnergy(channels, key[1]) for key, channels in requests.items()}
    if not sums:
        return sums
    batches = itertools.islice(feeds, max_batches) if max_batches > 0 else feeds
    names = list(dict.fromkeys(name for name, _ in requests))
    for feed, values in _with_feeds(model, names, batches):
        mask = feed.get(mask_input) if mask_input else None
        for (name, axis), accumulator in sums.items():
            value = values[name]
            last = axis in (-1, value.ndim - 1)
            position_mask = mask if mask is not None and last and value.shape[:-1] == mask.shape else None
            accumulator.add(value, position_mask)
    logger.info("collected channel energies of %d activations", len(sums))
    return sums


def collect_hessians(model: Model, requests: Mapping[tuple[str, bool], int], feeds: Iterable[dict[str, np.ndarray]],
                     memory_budget_bytes: int, max_batches: int = 0,
                     mask_input: str | None = None) -> dict[tuple[str, bool], HessianAccumulator]:
    """``XᵀX`` of each requested activation ``(tensor name, transposed) -> K``, streamed batch by batch.

    Only the running sums are kept. When all of them would not fit in
    ``memory_budget_bytes`` at once, activations are split into groups that do and the data
    is read once per group (more passes, bounded memory). ``mask_input`` names a model
    input (``[batch, sequence]``, e.g. an attention mask) whose zeros mark rows to leave out
    of every activation shaped ``[batch, sequence, K]``.
    """
    groups: list[list[tuple[str, bool]]] = [[]]
    used = 0
    for key, features in requests.items():
        size = features * features * 8
        if groups[-1] and used + size > memory_budget_bytes:
            groups.append([])
            used = 0
        groups[-1].append(key)
        used += size
    results: dict[tuple[str, bool], HessianAccumulator] = {}
    for group in groups:
        if not group:
            continue
        sums = {key: HessianAccumulator(requests[key]) for key in group}
        batches = itertools.islice(feeds, max_batches) if max_batches > 0 else feeds
        for feed, values in _with_feeds(model, [name for name, _ in group], batches):
            mask = feed.get(mask_input) if mask_input else None
            for name, transposed in group:
                value = values[name]
                row_mask = mask if mask is not None and value.shape[:-1] == mask.shape else None
                sums[(name, transposed)].add(value, transposed=transposed, row_mask=row_mask)
        results.update(sums)
        logger.info("collected input statistics of %d activations", len(group))
    return results


def _with_feeds(model: Model, names: list[str], feeds: Iterable[dict[str, np.ndarray]]):
    """Pairs (feed, activations of that feed), one batch at a time."""
    remembered: list[dict[str, np.ndarray]] = []

    def recording() -> Iterator[dict[str, np.ndarray]]:
        for feed in feeds:
            remembered[:] = [feed]
            yield feed

    for values in iter_activations(model, names, recording()):
        yield remembered[0], values


def padding_mask_input(model: Model, choice: str = "auto") -> str | None:
    """The model input whose zeros mark padded positions: ``choice`` itself, or (``"auto"``) a 2-D integer
    input named like ``attention_mask``; None for "" or when there is none.

    Statistics of padded token positions describe the padding, not the data, and would
    dominate the sums for short sentences.
    """
    if choice != "auto":
        return choice or None
    for tensor in model.graph.inputs:
        shape = tensor.shape or []
        integer = tensor.dtype is not None and np.issubdtype(np.dtype(tensor.dtype), np.integer)
        if "attention_mask" in tensor.name.lower() and len(shape) == 2 and integer:
            return tensor.name
    return None
