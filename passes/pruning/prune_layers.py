"""``prune-layers``: bypass whole residual blocks or transformer layers, least influential first.

What: the blocks of ``blocks.py`` (a residual block ``relu(x + f(x))``, a transformer
sublayer, or with ``unit=layer`` a whole transformer layer) are ranked by block influence,
``1 − cos(input, output)`` averaged over tokens or pixels on DATA (ShortGPT); the ``count``
least influential are removed — whatever read a block's output reads its input. With
``max_error`` as many as the output error budget allows go (up to ``count``; 0 = no limit).

Why: a removed layer is all of its work and weights at once; deep models often carry
layers that barely change their input.

When unsafe: lossy, without recovery (the blocks after a removed one are not refitted).
Without DATA the influence is measured on random inputs (a warning says so); for
token models random ids are a poor proxy for text.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from onnxopt.activations import iter_activations
from onnxopt.data import make_feeds
from onnxopt.error_budget import ERROR_METRICS, error_function, run_outputs
from onnxopt.errors import BadInputError
from onnxopt.input_statistics import padding_mask_input
from onnxopt.model_io import Model, to_proto
from onnxopt.pass_api import Contract, Pass, PassContext, PassOptions, PassResult, check_choice
from onnxopt.passes.pruning.blocks import Block, bypass, find_blocks
from onnxopt.passes.pruning.latency import record_latency
from onnxopt.runtime_errors import ORT_RUN_ERRORS
from onnxopt.shape_info import infer_tensor_infos

logger = logging.getLogger(__name__)

UNITS = ("layer", "block")


@dataclass(frozen=True)
class PruneLayersOptions(PassOptions):
    """Options of ``prune-layers``.

    ``count``: blocks to remove (with ``max_error``: at most this many; 0 = no limit).
    ``unit``: layer (transformer layers; residual blocks in CNNs) | block (residual blocks
    and transformer sublayers). ``max_error``: output error budget (``error_metric`` /
    ``metric`` as in qdq) on ``budget_batches`` batches. ``calib_max_batches``: batches of
    DATA for block influence (0 = all). ``calib_mask_input``: input whose zeros mark padded
    tokens ("auto": an ``attention_mask``). ``exclude``: regexes of block start/end tensor
    names to keep. ``measure_latency``: time the result against the input (batch 1).
    """

    count: int = 1
    unit: str = "layer"
    max_error: float = 0.0
    error_metric: str = "rel_l2"
    metric: str = ""
    budget_batches: int = 4
    calib_max_batches: int = 0
    calib_mask_input: str = "auto"
    exclude: tuple[str, ...] = ()
    measure_latency: bool = True
    latency_threads: int = 1


def _row_cosines(start: np.ndarray, end: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """Cosine of input and output per position: per token (``[B, S, H]``) or per pixel (``[N, C, H, W]``)."""
    a, b = np.asarray(start, np.float64), np.asarray(end, np.float64)
    if a.ndim == 4:
        a, b = np.moveaxis(a, 1, -1), np.moveaxis(b, 1, -1)
    if a.ndim >= 2:
        keep = None
        if mask is not None and a.ndim == 3 and a.shape[:2] == mask.shape:
            keep = np.asarray(mask).reshape(-1) != 0
        a, b = a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1])
        if keep is not None:
            a, b = a[keep], b[keep]
    else:
        a, b = a.reshape(1, -1), b.reshape(1, -1)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.where(norms > 0, np.sum(a * b, axis=1) / np.maximum(norms, 1e-300), 1.0)


def block_influence(model: Model, blocks: list[Block], feeds, mask_input: str | None,
                    max_batches: int) -> tuple[list[float | None], list[str]]:
    """Mean ``1 − cos`` of each block on the feeds (streamed), and a reason for blocks the data rules out."""
    names = [tensor.name for block in blocks for tensor in (block.start, block.end)]
    sums = np.zeros(len(blocks))
    counts = np.zeros(len(blocks))
    reasons = [""] * len(blocks)
    remembered: list[dict[str, np.ndarray]] = []

    def recording():
        for index, feed in enumerate(feeds):
            if max_batches and index >= max_batches:
                return
            remembered[:] = [feed]
            yield feed

    for values in iter_activations(model, names, recording()):
        mask = remembered[0].get(mask_input) if mask_input else None
        for index, block in enumerate(blocks):
            start, end = values.get(block.start.name), values.get(block.end.name)
            if start is None or end is None:
                reasons[index] = reasons[index] or "its input or output is not observable"
                continue
            if start.shape != end.shape:
                reasons[index] = f"the block changes the shape ({list(start.shape)} -> {list(end.shape)})"
                continue
            cosines = _row_cosines(start, end, mask)
            sums[index] += float(np.sum(1.0 - cosines))
            counts[index] += cosines.size
    influence = [float(sums[i] / counts[i]) if counts[i] and not reasons[i] else None for i in range(len(blocks))]
    return influence, reasons


class PruneLayers(Pass):
    """Bypass the residual blocks / transformer layers that change their input least (block influence)."""

    name = "prune-layers"
    contract = Contract.LOSSY
    cleanup = False
    walks_subgraphs = False
    walks_functions = False
    Options = PruneLayersOptions

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        options: PruneLayersOptions = self.options  # type: ignore[assignment]
        self._validate(options)
        notes: list[str] = []
        infos = infer_tensor_infos(model)
        blocks = find_blocks(model.graph, infos, options.unit)
        decisions: list[dict[str, Any]] = []
        candidates: list[Block] = []
        for block in blocks:
            reason = block.reason or _excluded(block, options.exclude)
            if reason:
                decisions.append(_record(block, options.unit, "skipped", reason))
            else:
                candidates.append(block)
        stats: dict[str, Any] = {"unit": options.unit, "candidates": len(candidates)}
        if not candidates:
            stats["decisions"] = decisions
            return PassResult(False, stats, [*notes, f"no removable {options.unit} found"])
        feeds = ctx.data
        if feeds is None:
            message = "prune-layers: no calibration DATA: block influence measured on random inputs"
            ctx.logger.warning("%s", message)
            notes.append(message)
            feeds = make_feeds(to_proto(model), None, 1, ctx.shapes, random_count=4)
        try:
            influence, reasons = block_influence(model, candidates, feeds,
                                                 padding_mask_input(model, options.calib_mask_input),
                                                 options.calib_max_batches)
        except ORT_RUN_ERRORS as error:
            raise BadInputError(f"calibration data does not fit the model: {str(error).splitlines()[0]}") from None
        ranked = []
        for block, value, reason in zip(candidates, influence, reasons, strict=True):
            if value is None:
                decisions.append(_record(block, options.unit, "skipped", reason))
            else:
                ranked.append((value, block))
        ranked.sort(key=lambda item: item[0])
        snapshot = model.copy()
        chosen = self._choose(snapshot, ranked, ctx, options, stats, notes)
        chosen_ids = {id(block) for block in chosen}
        for value, block in ranked:
            removed = id(block) in chosen_ids
            record = _record(block, options.unit, "removed" if removed else "kept",
                             "" if removed else "more influential than the removed ones or over the budget")
            record["block_influence"] = value
            decisions.append(record)
        stats["decisions"] = decisions
        stats["removed"] = len(chosen)
        if not chosen:
            return PassResult(False, stats, notes)
        bypass(model.graph, _same_objects(model, chosen))
        if options.measure_latency:
            record_latency(snapshot, model, next(iter(feeds), None), options.latency_threads, stats, notes)
        return PassResult(True, stats, notes)

    @staticmethod
    def _validate(options: PruneLayersOptions) -> None:
        check_choice("prune-layers", "unit", options.unit, UNITS)
        check_choice("prune-layers", "error_metric", options.error_metric, ERROR_METRICS)
        if options.count < 0 or options.max_error < 0 or options.budget_batches < 1:
            raise BadInputError("prune-layers: count and max_error must be >= 0, budget_batches >= 1")
        if options.count == 0 and options.max_error == 0:
            raise BadInputError("prune-layers: give count > 0 or max_error > 0")

    @staticmethod
    def _choose(snapshot: Model, ranked: list[tuple[float, Block]], ctx: PassContext, options: PruneLayersOptions,
                stats: dict[str, Any], notes: list[str]) -> list[Block]:
        """The least influential blocks: ``count`` of them, or as many as ``max_error`` allows."""
        limit = options.count if options.count > 0 else len(ranked)
        order = [block for _, block in ranked][:limit]
        if options.max_error <= 0:
            return order
        feeds = [feed for _, feed in zip(range(options.budget_batches), ctx.data if ctx.data is not None else
                                         make_feeds(to_proto(snapshot), None, 1, ctx.shapes, random_count=2),
                                         strict=False)]
        references = run_outputs(snapshot, feeds)
        error_of = error_function(options.error_metric, options.metric)
        kept: list[Block] = []
        errors = []
        for block in order:
            trial = snapshot.copy()
            bypass(trial.graph, _same_objects(trial, [*kept, block]))
            error = float(error_of(references, run_outputs(trial, feeds)))
            errors.append(error)
            if error > options.max_error:
                notes.append(f"stopped at {len(kept)} {options.unit}(s): the next one brings the output error to "
                             f"{error:.3g} > {options.max_error:g}")
                break
            kept.append(block)
        stats["budget_errors"] = errors
        return kept


def _excluded(block: Block, patterns: tuple[str, ...]) -> str:
    for pattern in patterns:
        if re.search(pattern, block.start.name) or re.search(pattern, block.end.name):
            return f"excluded by {pattern!r}"
    return ""


def _same_objects(model: Model, blocks: list[Block]) -> list[Block]:
    """The blocks re-found by tensor names in ``model`` (a copy of the model they were found in)."""
    tensors = model.graph.tensors()
    return [Block(tensors[block.start.name], tensors[block.end.name], []) for block in blocks]


def _record(block: Block, unit: str, decision: str, reason: str) -> dict[str, Any]:
    compute = [node.name for node in block.nodes if node.op in ("MatMul", "Gemm", "Conv")]
    return {"node": block.label, "op": unit, "decision": decision, "reason": reason,
            "start": block.start.name, "end": block.end.name, "weighted_nodes": len(compute)}

