"""fp16: convert a model to half precision (float16, or bfloat16 with ``bf16``) without NaN.

Weights, Constant/ConstantOfShape values, Cast targets and typed attributes become half;
Casts appear only at the boundaries between half and fp32 regions. What stays fp32, and
why, is decided before anything changes (``onnxopt.passes.precision.plan``): the model's inputs and
outputs (``keep_io_types``), inputs that ops need in fp32 (Resize scales/roi, ...), ops
that must stay fp32, index arithmetic, weights beyond the half range, and every node whose
activations on the calibration data (or random feeds) — or whose internal partial sums
(reductions, normalizations, matmuls) — exceed ``activation_limit_fraction`` of the half
range, measured on the fp32 model itself. ``keep_fp32`` pins more nodes: ``op:TYPE``,
``name:PREFIX`` (node names starting with PREFIX) or ``re:REGEX`` (``re.search`` on names).

Unsafe when: the calibration data do not represent real inputs (ranges outside what was
measured can still overflow); inside If/Loop/Scan bodies and local functions only static
rules apply, since their activations cannot be observed. Judge the result with fp16
semantics (``onnxopt.fp16_judge``): onnxruntime on CPU computes many fp16 ops in fp32.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import ml_dtypes
import numpy as np
import onnx_graphsurgeon as gs
from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

from onnxopt.data import make_feeds
from onnxopt.decisions import decision
from onnxopt.errors import BadInputError
from onnxopt.model_io import Model, read_constant, to_proto
from onnxopt.pass_api import Contract, Pass, PassContext, PassOptions, PassResult, SearchSpec
from onnxopt.passes.precision.op_rules import BFLOAT16, FLOAT, FLOAT16, half_type_name
from onnxopt.passes.precision.plan import Plan, Planner, PlanOptions, WeightStats, parse_selectors, weight_stats
from onnxopt.passes.precision.ranges import RangeStats, collect_ranges
from onnxopt.passes.precision.rewrite import Rewriter, half_numpy_dtype
from onnxopt.passes.precision.tensor_types import ScopedGraph, TypeTable, infer_types, scoped_graphs, type_conflict

logger = logging.getLogger(__name__)

MIN_OPSET = 6  # Cast takes a numeric "to" from opset 6
MIN_OPSET_BF16 = 13  # Cast and most arithmetic ops accept bfloat16 from opset 13
MAX_NOTES = 40
# What onnxruntime raises when the fp32 model cannot run on the feeds (bad ids, shapes...).
_ORT_RUN_ERRORS = (ort_state.Fail, ort_state.InvalidArgument, ort_state.RuntimeException, ort_state.InvalidGraph)


@dataclass(frozen=True)
class Fp16Options(PassOptions):
    """Options of the fp16 pass (names carry their units)."""

    bf16: bool = False  # convert to bfloat16 instead of float16
    keep_io_types: bool = True  # model inputs and outputs stay fp32
    keep_fp32: tuple[str, ...] = ()  # selectors: op:TYPE, name:PREFIX, re:REGEX
    activation_limit_fraction: float = 0.5  # fraction of the half range that activations may reach
    check_activations: bool = True  # measure activation ranges by running the fp32 model
    calibration_batches: int = 8  # at most this many batches of DATA (or random feeds)
    random_feeds: int = 2  # random feeds used when no DATA is given


class Fp16Pass(Pass):
    """Convert weights and compute to float16/bfloat16, keeping overflow-prone nodes in fp32."""

    name = "fp16"
    contract = Contract.LOSSY
    cleanup = False
    walks_subgraphs = True
    walks_functions = True
    Options = Fp16Options

    @classmethod
    def search_space(cls) -> SearchSpec:
        """For ``onnxopt tune``: float16 or bfloat16, an alternative to the int8/int4 passes."""
        return SearchSpec(group="precision", stage=60, options={"bf16": (False, True)})

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        options: Fp16Options = self.options  # type: ignore[assignment]
        half = BFLOAT16 if options.bf16 else FLOAT16
        self._check_options(model, options)
        half_np = half_numpy_dtype(half)
        plan_options = PlanOptions(
            half=half,
            keep_io_types=options.keep_io_types,
            selectors=parse_selectors(options.keep_fp32),
            activation_limit=options.activation_limit_fraction * float(ml_dtypes.finfo(half_np).max),
            half_max=float(ml_dtypes.finfo(half_np).max),
        )
        types = infer_types(model)
        graphs = scoped_graphs(model.graph)
        constants = _constant_stats(graphs, half_np)
        ranges = self._ranges(model, ctx, graphs, types, options) if options.check_activations else None
        plan = Planner(graphs, types, plan_options, model.opset, constants, ranges).build()
        rewrite = Rewriter(model, plan).run()
        conflict = type_conflict(model)
        if conflict is not None:  # a bug in the typing rules, never a property of the input
            raise RuntimeError(f"fp16 left inconsistent types: {conflict}")
        return _result(plan, rewrite, ranges, half)

    @staticmethod
    def _check_options(model: Model, options: Fp16Options) -> None:
        if options.bf16 and model.opset < MIN_OPSET_BF16:
            raise BadInputError(
                f"bf16 needs opset >= {MIN_OPSET_BF16} (Cast to bfloat16); the model has opset {model.opset}: "
                "upgrade it first (onnx.version_converter) or use fp16"
            )
        if model.opset < MIN_OPSET:
            raise BadInputError(f"fp16 needs opset >= {MIN_OPSET}; the model has opset {model.opset}")
        if not 0.0 < options.activation_limit_fraction <= 1.0:
            raise BadInputError("activation_limit_fraction must be in (0, 1]")
        if options.calibration_batches < 1:
            raise BadInputError("calibration_batches must be at least 1")

    @staticmethod
    def _ranges(model: Model, ctx: PassContext, graphs: list[ScopedGraph], types: TypeTable,
                options: Fp16Options) -> RangeStats:
        main = graphs[0]
        names = [t.name for t in main.graph.inputs if types.get(None, t.name) == FLOAT]
        names += [t.name for node in main.graph.nodes for t in node.outputs
                  if t.name and types.get(None, t.name) == FLOAT]
        try:
            if ctx.data is not None:
                feeds, source = ctx.data, "calibration data"
            else:
                feeds = make_feeds(to_proto(model), shapes=ctx.shapes, random_count=options.random_feeds)
                source = "random feeds"
            return collect_ranges(model, names, list(main.graph.nodes), feeds, options.calibration_batches, source)
        except (BadInputError, *_ORT_RUN_ERRORS) as error:
            raise BadInputError(
                f"fp16: cannot run the fp32 model to measure activation ranges ({error}); "
                "give DATA or --shape, or set check_activations=false"
            ) from None


def _constant_stats(graphs: list[ScopedGraph], half_np: np.dtype) -> dict[int, WeightStats]:
    """Magnitude of every float32 constant (initializers and Constant values), read one at a time."""
    stats: dict[int, WeightStats] = {}

    def visit(constant: gs.Constant) -> None:
        if id(constant) in stats or np.dtype(constant.dtype) != np.float32:
            return
        stats[id(constant)] = weight_stats(read_constant(constant), half_np)

    for graph in graphs:
        for node in graph.graph.nodes:
            for tensor in node.inputs:
                if isinstance(tensor, gs.Constant):
                    visit(tensor)
            value = node.attrs.get("value") if node.op in ("Constant", "ConstantOfShape") else None
            if isinstance(value, gs.Constant):
                visit(value)
    return stats


def _result(plan: Plan, rewrite, ranges: RangeStats | None, half: int) -> PassResult:
    kept = plan.kept_nodes()
    relevant = len(plan.relevant)
    kept_rows = [decision(node.name, node.op, "fp32", reason) for node, reason in kept]
    stats = {
        "half_type": half_type_name(half),
        "nodes_half": relevant - len(kept),
        "nodes_fp32": len(kept),
        "nodes_fp32_forced": sum(1 for node, _ in kept if id(node) in plan.reasons),
        "decisions": kept_rows,  # nodes kept in fp32 and why; every other relevant node is half
        "constants_converted": rewrite.constants_converted,
        "constants_duplicated": rewrite.constants_duplicated,
        "attributes_converted": rewrite.attributes_converted,
        "casts_inserted": rewrite.casts_inserted,
        "casts_bypassed": rewrite.casts_removed,
        "tensors_retyped": rewrite.tensors_retyped,
        "weight_bytes_before": rewrite.weight_bytes_before,
        "weight_bytes_after": rewrite.weight_bytes_after,
        "weights_flushed_to_zero": dict(rewrite.flushed_to_zero),
        "activation_limit": plan.options.activation_limit,
        "activation_ranges": f"{ranges.batches} batch(es) of {ranges.source}" if ranges else "not measured",
    }
    notes = []
    forced = [(node, reason) for node, reason in kept if id(node) in plan.reasons]
    for node, reason in forced[:MAX_NOTES]:
        notes.append(f"kept fp32: {node.name or '(unnamed)'} ({node.op}): {reason}")
    if len(forced) > MAX_NOTES:
        notes.append(f"... and {len(forced) - MAX_NOTES} more nodes kept in fp32 (see stats.decisions)")
    for name, count in list(rewrite.flushed_to_zero.items())[:MAX_NOTES]:
        notes.append(f"weight {name!r}: {count} non-zero value(s) flush to zero in {half_type_name(half)}")
    modified = bool(rewrite.constants_converted or rewrite.casts_inserted or rewrite.attributes_converted
                    or rewrite.casts_removed or rewrite.tensors_retyped)
    return PassResult(modified=modified, stats=stats, notes=notes)


