"""The ``qdq`` pass: int8 quantization, static (calibrated Q/DQ) or dynamic, per target.

What: Conv/MatMul/Gemm (optionally Add, Mul, average pools, Concat) run in int8 — weights
int8 per output channel, biases int32, activations through QuantizeLinear/DequantizeLinear
pairs whose ranges come from streamed calibration (``static``), or quantized at run time
(``dynamic``, MatMul/Gemm only, onnxruntime CPU).

Why: int8 kernels are 2-4x faster than float ones on CPUs with VNNI, and the weights 4x
smaller — but only where the runtime fuses the Q/DQ pairs into integer kernels and the
layer is large enough to pay for the conversions. So, for ``ort-cpu``, every candidate
node is timed as a one-node model in float and in int8 (onnxruntime optimizations on, as
deployed) and only nodes that run faster are quantized; the finished model is timed
against the original and the pass backs off (or leaves the model unchanged) if it would
be slower. With ``max_error``, the layers that hurt the outputs most go back to float
until the budget holds.

When it is unsafe: it is lossy by nature — accuracy must be judged on real data with a
metric (``max_error``/``metric``); random calibration data gives meaningless ranges,
so static mode requires DATA. Models already holding Q/DQ or integer ops are left alone.

Presets: ``int8`` = ``qdq`` (static when calibration DATA is given, dynamic otherwise on
ort-cpu); ``int8-tensorrt`` = ``qdq:target=tensorrt`` (static, symmetric int8, needs DATA).
"""

from __future__ import annotations

import collections
import logging
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from onnxopt.calibration import METHODS, calibrate
from onnxopt.data import Feeds, InputSpec, input_specs, make_feeds, random_feed
from onnxopt.error_budget import ERROR_METRICS, error_function, run_outputs, sensitivity_fallback
from onnxopt.errors import BadInputError
from onnxopt.model_io import Model, to_proto
from onnxopt.paired_timing import relative_times
from onnxopt.pass_api import Contract, Pass, PassContext, PassOptions, PassResult
from onnxopt.passes.quantization.common import NameScope
from onnxopt.passes.quantization.dynamic import DYNAMIC_OPS, apply_dynamic, find_dynamic_candidates
from onnxopt.passes.quantization.op_speed import island_ratios
from onnxopt.passes.quantization.qdq_placement import (
    DEFAULT_OP_TYPES,
    QUANTIZABLE_OPS,
    Exclusions,
    find_candidates,
    plan_placement,
)
from onnxopt.passes.quantization.qdq_rewrite import ActivationFormat, WeightCache, activation_params, apply_static
from onnxopt.passes.quantization.smoothing import apply_smoothing, choose_smoothing, smoothing_candidates
from onnxopt.runtime_errors import ORT_RUN_ERRORS

logger = logging.getLogger(__name__)
# Per-channel QuantizeLinear/DequantizeLinear (the axis attribute) arrived in opset 13.
MIN_QDQ_OPSET = 13

TARGETS = ("ort-cpu", "ort-cuda", "tensorrt")
MODES = ("auto", "static", "dynamic")
ACTIVATION_TYPES = ("auto", "uint8", "int8")
QUANTIZED_OPS = frozenset({
    "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "MatMulInteger", "ConvInteger",
    "QLinearConv", "QLinearMatMul", "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "QGemm",
})
# Whole-model variants: nodes whose one-node (island) int8/fp32 time ratio is at most these.
VARIANT_ISLAND_RATIOS = (0.95, 1.1, 1.3)
# The int8 model must run in at most this fraction of the float time: a 5% margin, so that timing
# noise here, or another CPU, does not turn a marginal win into a loss.
MAX_WHOLE_MODEL_RATIO = 0.95


@dataclass(frozen=True)
class QdqOptions(PassOptions):
    """Options of the ``qdq`` pass (units in names; tuples are comma-separated on the CLI)."""

    mode: str = "auto"  # auto: static with calibration DATA, else dynamic (ort-cpu only)
    method: str = "percentile"  # minmax | percentile | entropy | mse
    percentile: float = 99.999  # for method=percentile: % of values inside the range
    per_channel: bool = True  # per-output-channel weight scales
    activation_type: str = "auto"  # auto (per target) | uint8 (asymmetric) | int8 (symmetric, zero point 0)
    op_types: tuple[str, ...] = DEFAULT_OP_TYPES
    exclude_nodes: tuple[str, ...] = ()
    exclude_op_types: tuple[str, ...] = ()
    exclude_regex: str = ""
    target: str = ""  # empty: the pipeline's --target
    calibration_batches: int = 0  # 0: every batch of DATA
    max_error: float = 0.0  # output error budget for the sensitivity fallback; 0: no fallback
    error_metric: str = "rel_l2"  # rel_l2 | cosine | max_abs
    metric: str = ""  # a user metric "module:function" (overrides error_metric)
    sensitivity_batches: int = 4
    only_if_faster: bool = True  # ort-cpu: quantize only nodes that run faster in int8
    benchmark_threads: int = 1
    smooth_alpha: float = 0.5  # move MatMul input outliers into the weights (needs DATA); 0: off


def has_real_data(data: object) -> bool:
    """True when ``data`` holds user DATA (a Feeds over a path, or any other iterable of feeds)."""
    if data is None:
        return False
    if isinstance(data, Feeds):
        return data.path is not None
    return True


def graph_input_specs(graph: gs.Graph) -> list[InputSpec]:
    specs = []
    for tensor in graph.inputs:
        shape = tuple(dim if isinstance(dim, int) else (dim or None) for dim in (tensor.shape or []))
        specs.append(InputSpec(tensor.name, np.dtype(tensor.dtype or np.float32), shape))
    return specs


def _first_feeds(feeds: Iterable[dict[str, np.ndarray]], count: int) -> list[dict[str, np.ndarray]]:
    result = []
    try:
        for feed in feeds:
            if len(result) >= count:
                break
            result.append(feed)
    except ORT_RUN_ERRORS as error:  # pragma: no cover - a Feeds never runs a session
        raise BadInputError(f"calibration data: {error}") from None
    return result


def _check_feed_names(graph: gs.Graph, feed: dict[str, np.ndarray]) -> None:
    missing = [tensor.name for tensor in graph.inputs if tensor.name not in feed]
    if missing:
        has = ", ".join(sorted(feed)) or "nothing"
        raise BadInputError(f"DATA is missing input(s) {', '.join(missing)} (has {has})")


class _StaticBuilder:
    """Calibrates once, then builds any subset of quantized nodes from the same ranges."""

    def __init__(self, model: Model, candidates: list[str], options: QdqOptions, target: str,
                 fmt: ActivationFormat, feeds: Iterable[dict[str, np.ndarray]]) -> None:
        self.model, self.target, self.fmt = model, target, fmt
        full = plan_placement(model.graph, candidates, target)
        calibrator = calibrate(model, list(full.activations), feeds, options.method, options.calibration_batches)
        self.calibrator = calibrator
        symmetric = fmt.symmetric
        self.ranges = calibrator.ranges(symmetric, options.percentile)
        self.blocked = {name for name, r in self.ranges.items() if r.sentinels}
        # Tensors never seen (not float, or not computed) cannot be quantized either.
        self.blocked |= {name for name in full.activations if name not in self.ranges or not self.ranges[name].count}
        self.candidates = plan_placement(model.graph, candidates, target, self.blocked).nodes
        self.shapes = calibrator.shapes()
        self.weights = WeightCache(per_channel=options.per_channel)

    def build(self, nodes: list[str]) -> Model:
        return self._apply(self.model, nodes)

    def quantize_island(self, mini: Model, name: str) -> Model:
        return self._apply(mini, [name])

    def _apply(self, model: Model, nodes: list[str]) -> Model:
        placement = plan_placement(model.graph, nodes, self.target, self.blocked)
        return apply_static(model, placement, activation_params(placement, self.ranges, self.fmt), self.weights)


class _DynamicBuilder:
    """Rewrites any subset of MatMul/Gemm nodes to dynamic int8."""

    def __init__(self, model: Model, candidates: list[str], options: QdqOptions,
                 feeds: Iterable[dict[str, np.ndarray]]) -> None:
        self.model = model
        self.candidates = candidates
        self.per_channel = options.per_channel
        self.cache: dict = {}
        self.shapes: dict[str, tuple[int, ...]] = {}
        chosen = set(candidates)
        wanted = {node.inputs[0].name for node in model.graph.nodes if node.name in chosen}
        if options.only_if_faster and wanted:
            probe = calibrate(model, sorted(wanted), feeds, "minmax", max_batches=1)
            self.shapes = probe.shapes()

    def build(self, nodes: list[str]) -> Model:
        return apply_dynamic(self.model, set(nodes), self.per_channel, self.cache)

    def quantize_island(self, mini: Model, name: str) -> Model:
        return apply_dynamic(mini, {name}, self.per_channel, self.cache)


class QdqPass(Pass):
    """int8 quantization (static calibrated QDQ or dynamic), only where the target runs it faster."""

    name = "qdq"
    contract = Contract.LOSSY
    cleanup = False
    walks_subgraphs = False  # If/Loop/Scan bodies and local functions stay float
    walks_functions = False
    Options = QdqOptions

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        options: QdqOptions = self.options  # type: ignore[assignment]
        target = options.target or ctx.target
        _validate(options, target)
        present = {node.op for node in model.graph.nodes} & QUANTIZED_OPS
        if present:
            return PassResult(False, {"skipped": "already quantized"},
                              [f"model already holds quantized ops ({', '.join(sorted(present))}); left unchanged"])
        if model.opset < MIN_QDQ_OPSET:
            return PassResult(False, {"skipped": f"opset {model.opset}"}, [
                f"opset {model.opset} is below {MIN_QDQ_OPSET}, which per-channel QuantizeLinear/DequantizeLinear "
                "need; convert the model to a newer opset first (onnx.version_converter)"])
        real_data = has_real_data(ctx.data)
        mode = _resolve_mode(options.mode, target, real_data)
        original = model
        model = _with_node_names(model)
        feeds = ctx.data if real_data else _random_feeds(model, ctx)
        first = _first_feeds(feeds, 1)
        if not first:
            raise BadInputError("calibration data holds no batches")
        _check_feed_names(model.graph, first[0])
        notes: list[str] = []
        stats: dict[str, object] = {"mode": mode, "target": target}

        candidates = _candidates(model, mode, options, target, notes)
        if not candidates:
            return PassResult(False, stats, [*notes, "no node of the requested op types can be quantized"])
        # Random inputs are fit for smoothing only when they enter through the model's own
        # learned tables (token ids into embeddings): random float inputs misplace outliers.
        smooth_feeds = feeds if real_data else (_random_token_feeds(model, ctx) if _takes_only_ids(model) else None)
        if smooth_feeds is not None and not real_data:
            notes.append("no DATA: outlier smoothing measured on random token ids")
        base = self._smoothed(model, candidates, smooth_feeds, mode, options, stats) if smooth_feeds else model
        builder = self._builder(base, candidates, mode, options, target, feeds, stats, notes)
        selected = list(builder.candidates)
        stats["candidates"] = len(selected)

        measure_speed = options.only_if_faster and target == "ort-cpu"
        ratios: dict[str, float] = {}
        if measure_speed:
            ratios = island_ratios(base.graph, selected, builder.shapes, builder.quantize_island,
                                   options.benchmark_threads, fold_activation=mode == "static")
            stats["island_time_ratios"] = {name: round(value, 3) for name, value in ratios.items()}
        if options.max_error > 0 and selected:
            selected = self._sensitivity(model, builder, selected, feeds, options, stats, notes)
        if not selected:
            notes.append("nothing quantized")
            return PassResult(False, stats, notes)
        if measure_speed:
            quantized, selected = self._fastest_variant(model, selected, ratios, builder, first[0], options,
                                                        stats, notes)
            if quantized is None:
                return PassResult(False, stats, notes)
        else:
            quantized = builder.build(selected)
        stats["quantized_nodes"] = len(selected)
        stats["quantized_by_op"] = dict(collections.Counter(_ops(model, selected)))
        original.graph = quantized.graph
        return PassResult(True, stats, notes)

    @staticmethod
    def _builder(base: Model, candidates: list[str], mode: str, options: QdqOptions, target: str, feeds,
                 stats: dict[str, object], notes: list[str]) -> _StaticBuilder | _DynamicBuilder:
        """Calibrate (static) or probe shapes (dynamic): what every later variant is built from."""
        if mode == "dynamic":
            return _DynamicBuilder(base, candidates, options, feeds)
        fmt = ActivationFormat.named(_activation_type(options.activation_type, target))
        builder = _StaticBuilder(base, candidates, options, target, fmt, feeds)
        stats.update(method=options.method, activation_type=np.dtype(fmt.dtype).name,
                     calibration_batches=builder.calibrator.batches,
                     calibration_statistics_bytes=builder.calibrator.nbytes)
        masked = sorted(name for name in builder.blocked if builder.ranges.get(name) and builder.ranges[name].sentinels)
        if masked:
            stats["mask_sentinel_tensors"] = masked
            notes.append(f"{len(masked)} tensor(s) carry mask sentinels (|x| >= 1e30) and stay float")
        return builder

    @staticmethod
    def _sensitivity(model: Model, builder, selected: list[str], feeds, options: QdqOptions,
                     stats: dict[str, object], notes: list[str]) -> list[str]:
        """Selected nodes minus the most sensitive ones, until the output error meets ``max_error``."""
        error_of = error_function(options.error_metric, options.metric)
        eval_feeds = _first_feeds(feeds, max(1, options.sensitivity_batches))
        references = run_outputs(model, eval_feeds)
        fallback = sensitivity_fallback(builder.build, selected, eval_feeds, references, error_of, options.max_error)
        stats["output_error"] = fallback.error
        stats["output_error_all_quantized"] = fallback.full_error
        if fallback.fallback:
            stats["sensitivity_fallback"] = fallback.fallback
            stats["sensitivity_scores"] = {name: fallback.scores[name] for name in fallback.fallback}
            budget = f"{options.max_error:g} {options.metric or options.error_metric}"
            notes.append(f"kept float for accuracy (error budget {budget}): " + ", ".join(fallback.fallback))
        return fallback.kept

    @staticmethod
    def _smoothed(model: Model, candidates: list[str], feeds, mode: str, options: QdqOptions,
                  stats: dict[str, object]) -> Model:
        """The model with MatMul input outliers moved into the weights (where that helps)."""
        if options.smooth_alpha <= 0:
            return model
        groups = smoothing_candidates(model.graph, candidates)
        chosen = choose_smoothing(model, groups, feeds, dynamic=mode == "dynamic",
                                  max_batches=options.calibration_batches, alpha=options.smooth_alpha)
        if not chosen:
            return model
        stats["smoothed_inputs"] = len(chosen)
        return apply_smoothing(model, chosen)

    @staticmethod
    def _fastest_variant(model: Model, selected: list[str], ratios: dict[str, float], builder,
                         feed: dict[str, np.ndarray], options: QdqOptions, stats: dict, notes: list[str]):
        """Time a few int8 variants against the original; keep the fastest, or none if all are slower.

        Variants keep the nodes whose island ran at most 0.95x, 1.1x, 1.3x the float time, or
        all of them: inside an int8 chain the Q/DQ conversions an island pays for disappear,
        so nodes that lose as islands can still win in place (tiny CNNs), or not (depthwise
        convolutions between float layers). Only the whole model's time decides.
        """
        variants: list[list[str]] = []
        for threshold in (*VARIANT_ISLAND_RATIOS, math.inf):
            subset = [name for name in selected if ratios.get(name, 1.0) <= threshold]
            if subset and subset not in variants:
                variants.append(subset)
        if not variants:
            notes.append("no node runs faster in int8 on this target; left unchanged")
            return None, []
        built = [builder.build(subset) for subset in variants]
        comparisons = relative_times(model, built, feed, options.benchmark_threads)
        scores = [comparison.pessimistic_ratio for comparison in comparisons]
        best = min(range(len(variants)), key=lambda index: scores[index])
        stats["variant_time_ratios"] = {len(v): round(score, 3) for v, score in zip(variants, scores, strict=True)}
        stats["int8_over_fp32_time"] = round(scores[best], 3)
        if scores[best] > MAX_WHOLE_MODEL_RATIO:
            notes.append(f"int8 is not faster than float on this model (best {scores[best]:.2f}x the time, "
                         f"{MAX_WHOLE_MODEL_RATIO:g}x needed); left unchanged")
            return None, []
        kept_float = [name for name in selected if name not in set(variants[best])]
        if kept_float:
            stats["float_not_faster"] = kept_float
            notes.append(f"kept float, not faster in int8 here: {_by_op(model, kept_float)}")
        return built[best], variants[best]


def _candidates(model: Model, mode: str, options: QdqOptions, target: str, notes: list[str]) -> list[str]:
    exclusions = Exclusions(frozenset(options.exclude_nodes), frozenset(options.exclude_op_types),
                            options.exclude_regex)
    if mode == "static":
        return find_candidates(model.graph, options.op_types, exclusions, target)
    allowed = set(options.op_types) & set(DYNAMIC_OPS)
    if set(options.op_types) - allowed:
        notes.append("dynamic mode quantizes MatMul/Gemm only (onnxruntime's ConvInteger is slower than float Conv)")
    return find_dynamic_candidates(model.graph, allowed, exclusions.excludes)


def _validate(options: QdqOptions, target: str) -> None:
    if target not in TARGETS:
        raise BadInputError(f"qdq: unknown target {target!r} (choose from {', '.join(TARGETS)})")
    if options.mode not in MODES:
        raise BadInputError(f"qdq: unknown mode {options.mode!r} (choose from {', '.join(MODES)})")
    if options.method not in METHODS:
        raise BadInputError(f"qdq: unknown method {options.method!r} (choose from {', '.join(METHODS)})")
    if options.activation_type not in ACTIVATION_TYPES:
        raise BadInputError(f"qdq: unknown activation_type {options.activation_type!r} "
                            f"(choose from {', '.join(ACTIVATION_TYPES)})")
    unknown = sorted(set(options.op_types) - set(QUANTIZABLE_OPS))
    if unknown:
        raise BadInputError(f"qdq: cannot quantize op type(s) {', '.join(unknown)} "
                            f"(choose from {', '.join(QUANTIZABLE_OPS)})")
    if options.error_metric not in ERROR_METRICS:
        raise BadInputError(f"qdq: unknown error_metric {options.error_metric!r} "
                            f"(choose from {', '.join(ERROR_METRICS)})")
    if not 0 < options.percentile <= 100:
        raise BadInputError("qdq: percentile must be in (0, 100]")
    if options.max_error < 0 or options.calibration_batches < 0 or options.sensitivity_batches < 1:
        raise BadInputError("qdq: max_error and calibration_batches must be >= 0, sensitivity_batches >= 1")
    if options.exclude_regex:
        try:
            re.compile(options.exclude_regex)
        except re.error as error:
            raise BadInputError(f"qdq: exclude_regex {options.exclude_regex!r} is not a valid regex: {error}") from None


def _resolve_mode(mode: str, target: str, real_data: bool) -> str:
    if mode == "auto":
        if real_data:
            return "static"
        if target == "ort-cpu":
            return "dynamic"
        raise BadInputError(f"int8 for {target} needs calibration data (--calib DATA): "
                            f"{target} runs static Q/DQ only")
    if mode == "static" and not real_data:
        raise BadInputError("static int8 needs calibration data (--calib DATA); "
                            "use mode=dynamic for onnxruntime CPU without data")
    if mode == "dynamic" and target != "ort-cpu":
        raise BadInputError(f"dynamic int8 runs on onnxruntime CPU only, not {target}; use static with --calib DATA")
    return mode


def _activation_type(requested: str, target: str) -> str:
    if requested != "auto":
        return requested
    return "int8" if target == "tensorrt" else "uint8"


def _random_feeds(model: Model, ctx: PassContext) -> Iterable[dict[str, np.ndarray]]:
    """Random inputs from the declared shapes: enough to time kernels, never to calibrate."""
    if isinstance(ctx.data, Feeds):
        return ctx.data
    specs = graph_input_specs(model.graph)
    return [random_feed(specs, ctx.shapes, 1, seed) for seed in range(4)]


RANDOM_TOKEN_FEEDS = 8


def _takes_only_ids(model: Model) -> bool:
    """True when every model input is integer and at least one indexes a constant table."""
    specs = input_specs(to_proto(model))
    return bool(specs) and all(np.issubdtype(spec.dtype, np.integer) for spec in specs) and any(
        spec.index_bound for spec in specs)


def _random_token_feeds(model: Model, ctx: PassContext) -> list[dict[str, np.ndarray]]:
    """Random feeds whose ids span each embedding table (masks all ones), for smoothing."""
    return list(make_feeds(to_proto(model), None, 1, ctx.shapes, random_count=RANDOM_TOKEN_FEEDS))


def _with_node_names(model: Model) -> Model:
    """``model``, or a copy whose unnamed main-graph nodes got unique names (plans refer to nodes by name)."""
    if all(node.name for node in model.graph.nodes):
        return model
    named = model.copy()
    names = NameScope(named.graph)
    for index, node in enumerate(named.graph.nodes):
        if not node.name:
            node.name = names.fresh(f"{node.op}_{index}")
    return named


def _ops(model: Model, names: Iterable[str]) -> list[str]:
    by_name = {node.name: node.op for node in model.graph.nodes}
    return [by_name.get(name, "?") for name in names]


def _by_op(model: Model, names: list[str]) -> str:
    counts = collections.Counter(_ops(model, names))
    return ", ".join(f"{count} {op}" for op, count in sorted(counts.items()))
