"""``cluster-weights``: each weight as a small codebook plus packed indices (palettization).

What: the float weights of MatMul, Gemm, Conv, and tables read by Gather or Slice
(embeddings) are replaced by
``2^bits`` values per group of output channels (k-means, k-means++ seeds) and a ``bits``-wide
index per element, stored packed; standard ONNX ops rebuild the dense weight, and
onnxruntime folds them into a constant when the session loads.

Why: the file shrinks to about ``bits/32`` of float32 (plus the codebooks) while inference
runs the float model's kernels at the float model's speed — a size win with no runtime
support needed. With DATA, errors are weighted by the energy of the inputs each weight
multiplies and MatMul/Gemm indices are chosen with error feedback on the inputs' ``XᵀX``.

When unsafe: it is lossy — judge it with a metric (``--verify`` checks finiteness only).
Memory at session load is that of the float model (the rebuilt weights are dense), so it
does not help RAM-bound deployments; with onnxruntime's graph optimizations off the
rebuild runs on every inference. Weights read by other ops, inside subgraphs, graph
outputs and overridable graph inputs stay float (reported with the reason).
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import dataclass, replace

import numpy as np
import onnx_graphsurgeon as gs

from onnxopt.errors import BadInputError
from onnxopt.external_data import ExternalLazyValues, external_array_view
from onnxopt.graph_edit import all_tensor_names, replace_uses
from onnxopt.input_statistics import collect_channel_energy, collect_hessians, padding_mask_input
from onnxopt.model_io import Model, constant_nbytes, read_constant
from onnxopt.pass_api import Contract, Pass, PassContext, PassOptions, PassResult, check_choice
from onnxopt.passes.sharing.cluster_emit import CODEBOOK_DTYPES, MIN_OPSET, PLANES, emit_palette, stored_bytes
from onnxopt.passes.sharing.cluster_plan import WEIGHT_SLOT, ClusterPlan, PlanRequest, plan_clusters
from onnxopt.passes.sharing.importance import (
    element_importance,
    energy_requests,
    hessian_requests,
    plan_hessian,
)
from onnxopt.passes.sharing.palette_fit import FitSettings, fit_palette

logger = logging.getLogger(__name__)

METHODS = ("auto", "kmeans", "feedback")
# With group_channels=0, groups grow until the codebooks cost at most this many bits per weight.
AUTO_CODEBOOK_BITS_PER_WEIGHT = 1.0


@dataclass(frozen=True)
class ClusterWeightsOptions(PassOptions):
    """Options of cluster-weights (the single source of truth for CLI, pipelines and API).

    ``bits``: index width, 2–8 (a codebook holds ``2^bits`` values). ``group_channels``:
    output channels sharing one codebook (0 = auto: the fewest whose codebook costs at
    most 1 bit per weight; a large number = one codebook per tensor). ``group_rows``: for
    2-D weights, consecutive rows of the reduction axis sharing a codebook (0 = all).
    ``codebook_dtype``: auto (float16 for float32/float16 weights) | float32 | float16 |
    int8 (integer levels with one float16 scale per codebook). ``method``: auto (error
    feedback with DATA for MatMul/Gemm weights, else k-means) | kmeans | feedback.
    ``keep_zero``: groups with ≥ 1 % exact zeros (pruned weights) keep 0.0 as an exact entry.
    ``op_types``: readers whose weights are clustered. ``exclude``: weight or node names /
    regular expressions (full match) to keep float. ``min_weight_elements``: smaller
    weights stay float. ``iterations``: Lloyd iterations. ``seed``: k-means++ seed.
    ``calib_max_batches``: batches of DATA read (0 = all). ``calib_mask_input``: input whose
    zeros mark padding ("auto": an ``attention_mask``-like input; "" = none).
    ``stats_memory_bytes``: most bytes of ``XᵀX`` held at once. ``damp_ratio``: diagonal
    damping of error feedback, as a fraction of mean(diag H) (0.2: calibration sets of a
    few hundred tokens leave ``XᵀX`` far from full rank; see ``palette_fit``).
    """

    bits: int = 4
    group_channels: int = 0
    group_rows: int = 0
    codebook_dtype: str = "auto"
    method: str = "auto"
    keep_zero: bool = True
    op_types: tuple[str, ...] = ("MatMul", "Gemm", "Conv", "Gather", "Slice")
    exclude: tuple[str, ...] = ()
    min_weight_elements: int = 1024
    iterations: int = 30
    seed: int = 0
    calib_max_batches: int = 0
    calib_mask_input: str = "auto"
    stats_memory_bytes: int = 1 << 30
    damp_ratio: float = 0.2


def validate_options(options: ClusterWeightsOptions) -> None:
    """One-line BadInputErrors for options that cannot work."""
    if options.bits not in PLANES or options.bits < 2:
        raise BadInputError(f"cluster-weights: bits must be 2..8, got {options.bits}")
    if options.codebook_dtype not in CODEBOOK_DTYPES:
        raise BadInputError(f"cluster-weights: codebook_dtype {options.codebook_dtype!r} unknown "
                            f"(choose from {', '.join(CODEBOOK_DTYPES)})")
    check_choice("cluster-weights", "method", options.method, METHODS)
    unknown = sorted(set(options.op_types) - set(WEIGHT_SLOT))
    if unknown:
        raise BadInputError(f"cluster-weights: op_types {', '.join(unknown)} not supported "
                            f"({', '.join(WEIGHT_SLOT)})")
    if options.group_channels < 0 or options.group_rows < 0:
        raise BadInputError("cluster-weights: group_channels and group_rows must be ≥ 0")
    if options.iterations < 1:
        raise BadInputError("cluster-weights: iterations must be ≥ 1")


def _codebook_dtype(options: ClusterWeightsOptions) -> np.dtype:
    return np.dtype(np.float16) if options.codebook_dtype == "auto" else np.dtype(options.codebook_dtype)


def _auto_channels(plan: ClusterPlan, options: ClusterWeightsOptions) -> ClusterPlan:
    """With group_channels=0: the fewest channels whose codebook costs ≤ 1 bit per weight (a divisor)."""
    if options.group_channels:
        return plan
    layout = plan.layout
    entry_bits = 8 if options.codebook_dtype == "int8" else 8 * _codebook_dtype(options).itemsize
    codebook_bits = (1 << options.bits) * entry_bits
    per_channel = layout.group_size // layout.channels
    wanted = math.ceil(codebook_bits / AUTO_CODEBOOK_BITS_PER_WEIGHT / per_channel)
    channels_total = layout.shape[layout.out_axis]
    divisors = [d for d in range(1, channels_total + 1) if channels_total % d == 0 and d >= wanted]
    channels = min(divisors) if divisors else channels_total
    return ClusterPlan(plan.constant, plan.uses, replace(layout, channels=channels), plan.notes)


def _read_once(weight: gs.Constant) -> np.ndarray:
    """The weight's values; an external tensor as a read-only memory map (read once, never held twice)."""
    values = weight._values
    if isinstance(values, ExternalLazyValues):
        view = external_array_view(values.tensor, values.path)
        if view is not None:
            return view
    return np.asarray(read_constant(weight))


class ClusterWeights(Pass):
    """Weights as per-group k-means codebooks plus packed indices, rebuilt by standard ONNX ops (lossy)."""

    name = "cluster-weights"
    contract = Contract.LOSSY
    cleanup = False
    walks_subgraphs = False  # weights read inside If/Loop/Scan bodies stay float (declared, not forgotten)
    walks_functions = False  # local functions hold no initializers
    Options = ClusterWeightsOptions

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        options: ClusterWeightsOptions = self.options  # type: ignore[assignment]
        validate_options(options)
        if options.method == "feedback" and ctx.data is None:
            raise BadInputError("cluster-weights: method=feedback needs calibration data (--calib DATA)")
        if model.opset < MIN_OPSET:
            return PassResult(False, {"skipped": {"opset below 11 (BitShift)": 1}},
                              [f"cluster-weights needs opset ≥ {MIN_OPSET} (BitShift); the model has {model.opset}"])
        request = PlanRequest(tuple(options.op_types), tuple(options.exclude), options.min_weight_elements,
                              options.group_channels, options.group_rows)
        plans, skipped = plan_clusters(model.graph, request, set(model.initializer_inputs))
        plans = [_auto_channels(plan, options) for plan in plans]
        notes = [f"kept float: {name} ({reason})" for name, reason in sorted(skipped.items())]
        stats: dict[str, object] = {"bits": options.bits, "skipped": dict(Counter(skipped.values()))}
        if not plans:
            return PassResult(False, stats, notes)

        feedback = options.method == "feedback" or (options.method == "auto" and ctx.data is not None)
        hessians, energies = self._statistics(model, plans, ctx, options, feedback)
        settings = FitSettings(options.bits, _codebook_dtype(options), options.keep_zero, options.iterations,
                               options.seed, options.damp_ratio)
        taken = all_tensor_names(model.graph)
        decisions: list[dict[str, object]] = []
        float_bytes = clustered_bytes = 0
        for plan in plans:
            decision = self._cluster_one(model, plan, settings, hessians, energies, feedback, taken)
            decisions.append(decision)
            float_bytes += int(decision["bytes_before"])
            clustered_bytes += int(decision["bytes_after"])
        model.graph.cleanup(remove_unused_graph_inputs=False)
        model.graph.toposort()
        stats.update({"weights_clustered": len(plans), "float_weight_bytes": float_bytes,
                      "clustered_weight_bytes": clustered_bytes,
                      "methods": dict(Counter(str(d["method"]) for d in decisions)),
                      "max_relative_error": max(float(d["relative_error"]) for d in decisions),
                      "decisions": decisions})
        logger.info("cluster-weights: %d weights, %d -> %d bytes", len(plans), float_bytes, clustered_bytes)
        return PassResult(True, stats, notes)

    @staticmethod
    def _statistics(model: Model, plans: list[ClusterPlan], ctx: PassContext, options: ClusterWeightsOptions,
                    feedback: bool) -> tuple[dict, dict]:
        """Input statistics over DATA: ``XᵀX`` for error-feedback weights, per-channel energy for the rest."""
        if ctx.data is None:
            return {}, {}
        mask = padding_mask_input(model, options.calib_mask_input)
        with_feedback = [plan for plan in plans if feedback and plan.error_feedback_capable]
        others = [plan for plan in plans if plan not in with_feedback]
        hessians = collect_hessians(model, hessian_requests(with_feedback), ctx.data, options.stats_memory_bytes,
                                    options.calib_max_batches, mask_input=mask) if with_feedback else {}
        requests = energy_requests(others)
        energies = collect_channel_energy(model, requests, ctx.data, options.calib_max_batches,
                                          mask_input=mask) if requests else {}
        return hessians, energies

    @staticmethod
    def _cluster_one(model: Model, plan: ClusterPlan, settings: FitSettings, hessians: dict, energies: dict,
                     feedback: bool, taken: set[str]) -> dict[str, object]:
        weight = plan.constant
        values = _read_once(weight)
        hessian = plan_hessian(plan, hessians) if feedback and plan.error_feedback_capable else None
        if hessian is not None:
            view = [1] * values.ndim
            view[plan.layout.in_axis] = values.shape[plan.layout.in_axis]  # type: ignore[index]
            importance = np.broadcast_to(np.diag(hessian).astype(np.float32).reshape(view), values.shape)
        else:
            importance = element_importance(plan, energies)
        palette, errors = fit_palette(values, plan.layout, settings, importance, hessian)
        del values
        bytes_before = constant_nbytes(weight)
        dense, constants = emit_palette(model.graph, weight, palette, taken)
        replace_uses(model.graph, weight, dense)
        method = "feedback" if hessian is not None else "kmeans-weighted" if importance is not None else "kmeans"
        decision: dict[str, object] = {
            "pass": "cluster-weights", "tensor": weight.name, "op": plan.op,
            "shape": "x".join(map(str, plan.layout.shape)),
            "bits": settings.bits, "codebook_size": 1 << settings.bits, "codebooks": plan.layout.groups,
            "group_channels": plan.layout.channels, "group_rows": plan.layout.rows,
            "codebook_dtype": str(settings.codebook_dtype), "method": method,
            "relative_error": errors.relative, "bytes_before": bytes_before, "bytes_after": stored_bytes(constants),
        }
        if errors.weighted is not None:
            decision["weighted_error"] = errors.weighted
        if errors.output is not None:
            decision["output_error"] = errors.output
        return decision
