"""GPTQ-style error-correcting weight quantization, and the input statistics it needs.

Round-to-nearest minimises the error of each weight on its own; what matters is the error
of the layer's *output* ``X @ W`` on real inputs. With ``H = XᵀX`` (the inputs' second
moments), that error is ``tr(ΔWᵀ H ΔW)``. GPTQ (Frantar et al., 2022) quantizes the rows of
``W [K, N]`` one input dimension at a time and, after each row, spreads its rounding error
over the rows not yet quantized, weighted by the inverse Hessian — so correlated inputs
absorb each other's errors. The Cholesky factor of ``H⁻¹`` gives those weights without
re-inverting anything.

Statistics are streamed: ``HessianAccumulator`` adds one batch's ``XᵀX`` at a time and never
keeps activations, so memory is ``K²`` per layer input whatever the number of samples.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable, Iterator, Mapping

import numpy as np

from onnxopt.activations import iter_activations
from onnxopt.lowbit import GroupParams, QuantizedMatrix, Quantizer, collect
from onnxopt.model_io import Model

logger = logging.getLogger(__name__)

# Rows updated together before the rest of the matrix sees their errors (cache-friendly
# "lazy batch" updates; the result is the same as updating after every row).
LAZY_BATCH_ROWS = 128
DEFAULT_DAMP_RATIO = 0.01
MAX_DAMP_TRIES = 6


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


def _inverse_cholesky_upper(hessian: np.ndarray, damp_ratio: float) -> np.ndarray:
    """Upper Cholesky factor of ``(H + λI)⁻¹``; λ grows until the factorisation succeeds."""
    mean_diagonal = float(np.mean(np.diag(hessian))) or 1.0
    damp = damp_ratio
    for _ in range(MAX_DAMP_TRIES):
        damped = hessian + damp * mean_diagonal * np.eye(hessian.shape[0])
        try:
            inverse = np.linalg.inv(np.linalg.cholesky(damped))
            # (L Lᵀ)⁻¹ = L⁻ᵀ L⁻¹; its upper Cholesky factor U satisfies UᵀU = H⁻¹.
            return np.linalg.cholesky(inverse.T @ inverse).T
        except np.linalg.LinAlgError:
            damp *= 10.0
    raise np.linalg.LinAlgError("Hessian is not positive definite even after damping")


def quantize_gptq(weights_kn: np.ndarray, hessian: np.ndarray, quantizer: Quantizer, group_rows: int,
                  damp_ratio: float = DEFAULT_DAMP_RATIO, act_order: bool = False) -> QuantizedMatrix:
    """Quantize ``W [K, N]`` row by row, pushing each row's error onto the rows after it.

    Without ``act_order`` rows go in their stored order and each group is fitted when its
    first row comes up, on the rows as updated so far, so the scales follow the corrected
    weights. With ``act_order`` the rows whose inputs carry the most energy (largest
    diag H) go first, while they still have the most rows left to absorb their errors;
    groups then keep their stored (contiguous) rows, as DequantizeLinear's blocks require,
    and are fitted up front on the original weights ("static groups"). With a single group
    (per-channel binary/ternary) the parameters always come from the original weights.
    """
    weights = np.array(weights_kn, dtype=np.float64)
    k_rows = weights.shape[0]
    group_rows = min(group_rows, k_rows)
    hessian = np.array(hessian, dtype=np.float64)
    dead = np.diag(hessian) <= 0
    # Inputs that never fired carry no information; a unit diagonal keeps H invertible and
    # leaves those rows at plain round-to-nearest (their off-diagonal entries are zero).
    hessian[dead, dead] = 1.0
    static = act_order or group_rows >= k_rows
    params: list[GroupParams] = (
        [quantizer.fit(weights[first : first + group_rows]) for first in range(0, k_rows, group_rows)] if static else []
    )
    order = np.argsort(-np.diag(hessian), kind="stable") if act_order else np.arange(k_rows)
    weights = weights[order]
    upper = _inverse_cholesky_upper(hessian[np.ix_(order, order)], damp_ratio)

    # Dynamic groups must lie inside one lazy block, so the block is a multiple of the group.
    lazy = min(LAZY_BATCH_ROWS, k_rows) if static else group_rows * max(1, LAZY_BATCH_ROWS // group_rows)
    codes = np.empty(weights.shape, dtype=np.int8)
    current: GroupParams | None = None
    for start in range(0, k_rows, lazy):
        stop = min(start + lazy, k_rows)
        block = weights[start:stop].copy()
        errors = np.zeros_like(block)
        for offset in range(stop - start):
            row = start + offset
            stored_row = int(order[row])
            if static:
                current = params[stored_row // group_rows]
            elif row % group_rows == 0:
                current = quantizer.fit(block[offset : offset + group_rows])
                params.append(current)
            assert current is not None
            value = block[offset]
            code = quantizer.encode(value, current)
            codes[stored_row] = code
            error = (value - quantizer.decode(code, current)) / upper[row, row]
            block[offset + 1 :] -= np.outer(upper[row, row + 1 : stop], error)
            errors[offset] = error
        weights[stop:] -= upper[start:stop, stop:].T @ errors
    return collect(quantizer, codes, params, group_rows)


def output_error(weights_kn: np.ndarray, quantized: QuantizedMatrix, hessian: np.ndarray) -> float:
    """Relative layer-output error ``tr(ΔWᵀHΔW) / tr(WᵀHW)`` under the input statistics H."""
    weights = np.asarray(weights_kn, dtype=np.float64)
    delta = weights - quantized.dequantize()
    reference = float(np.sum(weights * (hessian @ weights)))
    if reference <= 0:
        return 0.0
    return float(np.sum(delta * (hessian @ delta))) / reference


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
