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

Correct on every CPU: for ``ort-cpu`` the int8 weights stay within ±64, so that
onnxruntime's u8×s8 kernels on AVX2 / AVX-512 CPUs without VNNI cannot saturate their
int16 pair sums (``onnxopt.int8_kernels``); the pass checks every node it emits against
that bound before returning. ``cpu=vnni`` (``--target ort-cpu:vnni``) uses the full ±127
for CPUs that never saturate, and writes that requirement into the model's metadata.
Timing decisions are made under the thread counts the model will run with (``--threads``,
else 1 thread and onnxruntime's default: one-node islands pre-select under the last of
these, the whole model is checked under each); ``decide_by=rules`` decides by fixed shape rules
instead (``speed_rules.py``), the same on every machine. The metadata records which.

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
import time
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs
import onnxruntime as ort

from onnxopt import decisions
from onnxopt.calibration import METHODS, calibrate
from onnxopt.cpu_features import host_cpu
from onnxopt.data import Feeds, graph_input_specs, random_feed
from onnxopt.error_budget import ERROR_METRICS, error_function, run_outputs, sensitivity_fallback
from onnxopt.errors import BadInputError
from onnxopt.int8_kernels import (
    CPU_ANY,
    CPU_KINDS,
    FULL_WEIGHT_LIMIT,
    REQUIRES_KEY,
    requirement_of,
    saturation_risks,
    weight_limit,
)
from onnxopt.model_io import Model
from onnxopt.model_stats import count_model
from onnxopt.paired_timing import describe_threads, timing_threads, worst_relative_times
from onnxopt.pass_api import Contract, ErrorBudget, Pass, PassContext, PassOptions, PassResult, SearchSpec
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
from onnxopt.passes.quantization.smoothing import SmoothingPlan, choose_smoothing, smoothing_candidates
from onnxopt.passes.quantization.speed_rules import rule_verdict
from onnxopt.runtime_errors import ORT_RUN_ERRORS
from onnxopt.targets import TARGET_KEY, join_target

logger = logging.getLogger(__name__)
# Per-channel QuantizeLinear/DequantizeLinear (the axis attribute) arrived in opset 13.
MIN_QDQ_OPSET = 13

TARGETS = ("ort-cpu", "ort-cuda", "tensorrt")
MODES = ("auto", "static", "dynamic")
ACTIVATION_TYPES = ("auto", "uint8", "int8")
DECIDE_BY = ("timing", "rules")
QUANTIZED_OPS = frozenset({
    "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "MatMulInteger", "ConvInteger",
    "QLinearConv", "QLinearMatMul", "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "QGemm",
})
# Whole-model variants: nodes whose one-node (island) int8/fp32 time ratio is at most these.
VARIANT_ISLAND_RATIOS = (0.95, 1.1, 1.3)
# The int8 model must run in at most this fraction of the float time: a 5% margin, so that timing
# noise here, or another CPU, does not turn a marginal win into a loss.
MAX_WHOLE_MODEL_RATIO = 0.95
# Timing whole variants holds the float session and int8 sessions at once; above this many weight
# bytes that would cost more memory than running the model, so the island timings decide alone.
WHOLE_MODEL_TIMING_MAX_BYTES = 1 << 30
# Metadata written on the output model (``onnxopt check`` reads REQUIRES_KEY and TARGET_KEY).
WEIGHT_LIMIT_KEY = "onnxopt.int8.weight_limit"
DECIDED_BY_KEY = "onnxopt.int8.decided_by"
TIMED_ON_KEY = "onnxopt.int8.timed_on"


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
    cpu: str = ""  # ort-cpu: any (weights within ±64, right on every CPU) | vnni (±127); empty: from --target
    calibration_batches: int = 0  # 0: every batch of DATA
    max_error: float = 0.0  # output error budget for the sensitivity fallback; 0: no fallback
    error_metric: str = "rel_l2"  # rel_l2 | cosine | max_abs
    metric: str = ""  # a user metric "module:function" (overrides error_metric)
    sensitivity_batches: int = 4
    only_if_faster: bool = True  # ort-cpu: quantize only nodes that run faster in int8
    decide_by: str = "timing"  # how only_if_faster decides: timing (on this host) | rules (shape rules, no timing)
    benchmark_threads: int = 0  # threads to time under (--threads); 0: under 1 thread and onnxruntime's default
    smooth_alpha: float = 0.5  # move MatMul input outliers into the weights (needs DATA); 0: off


def has_real_data(data: object) -> bool:
    """True when ``data`` holds user DATA (a Feeds over a path, or any other iterable of feeds)."""
    if data is None:
        return False
    if isinstance(data, Feeds):
        return data.path is not None
    return True


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


class _Smoothed:
    """The model as the builders see it: smoothing (if any) applied to the nodes being quantized."""

    def __init__(self, model: Model, plan: SmoothingPlan | None, candidates: list[str]) -> None:
        self.model = model
        self.plan = plan
        # Every candidate smoothed: where placements are planned and islands are cut from.
        self.full = plan.apply(model, candidates) if plan else model
        # The original plus the smoothed inputs, computed but unread: what calibration runs.
        self.probe = plan.probe(model) if plan else model

    def with_nodes(self, nodes: list[str]) -> Model:
        return self.plan.apply(self.model, nodes) if self.plan else self.model


class _StaticBuilder:
    """Calibrates once, then builds any subset of quantized nodes from the same ranges."""

    def __init__(self, smoothed: _Smoothed, candidates: list[str], options: QdqOptions, target: str,
                 fmt: ActivationFormat, feeds: Iterable[dict[str, np.ndarray]], limit: int) -> None:
        self.smoothed, self.target, self.fmt = smoothed, target, fmt
        full = plan_placement(smoothed.full.graph, candidates, target)
        calibrator = calibrate(smoothed.probe, list(full.activations), feeds, options.method,
                               options.calibration_batches)
        self.calibrator = calibrator
        self.ranges = calibrator.ranges(fmt.symmetric, options.percentile)
        self.blocked = {name for name, r in self.ranges.items() if r.sentinels}
        # Tensors never seen (not float, or not computed) cannot be quantized either.
        self.blocked |= {name for name in full.activations if name not in self.ranges or not self.ranges[name].count}
        self.candidates = plan_placement(smoothed.full.graph, candidates, target, self.blocked).nodes
        self.shapes = calibrator.shapes()
        self.weights = WeightCache(per_channel=options.per_channel, weight_limit=limit)

    def build(self, nodes: list[str]) -> Model:
        return self._apply(self.smoothed.with_nodes(nodes), nodes)

    def quantize_island(self, mini: Model, name: str) -> Model:
        return self._apply(mini, [name])

    def _apply(self, model: Model, nodes: list[str]) -> Model:
        placement = plan_placement(model.graph, nodes, self.target, self.blocked)
        return apply_static(model, placement, activation_params(placement, self.ranges, self.fmt), self.weights)


class _DynamicBuilder:
    """Rewrites any subset of MatMul/Gemm nodes to dynamic int8."""

    def __init__(self, smoothed: _Smoothed, candidates: list[str], options: QdqOptions,
                 feeds: Iterable[dict[str, np.ndarray]], limit: int, need_shapes: bool,
                 known_shapes: dict[str, tuple[int, ...]]) -> None:
        self.smoothed = smoothed
        self.candidates = candidates
        self.per_channel = options.per_channel
        self.limit = limit
        self.cache: dict = {}
        self.shapes: dict[str, tuple[int, ...]] = dict(known_shapes)
        chosen = set(candidates)
        wanted = {node.inputs[0].name for node in smoothed.full.graph.nodes if node.name in chosen}
        missing = sorted(wanted - set(self.shapes))
        if need_shapes and missing:  # one batch through the model, unless smoothing streamed them already
            probe = calibrate(smoothed.probe, missing, feeds, "minmax", max_batches=1)
            self.shapes.update(probe.shapes())

    def build(self, nodes: list[str]) -> Model:
        return apply_dynamic(self.smoothed.with_nodes(nodes), set(nodes), self.per_channel, self.cache, self.limit)

    def quantize_island(self, mini: Model, name: str) -> Model:
        return apply_dynamic(mini, {name}, self.per_channel, self.cache, self.limit)


@dataclass(frozen=True)
class _Settings:
    """What one run of the pass resolved from its options and the pipeline."""

    target: str
    cpu: str
    mode: str
    limit: int
    decide_by: str  # timing | rules | none
    thread_counts: tuple[int, ...]


class _PhaseClock:
    """Seconds spent in each phase of one run, recorded in the stats (where the optimizer's time goes)."""

    def __init__(self, stats: dict[str, object]) -> None:
        self.phases: dict[str, float] = {}
        stats["seconds_by_phase"] = self.phases
        self.last = time.perf_counter()

    def done(self, phase: str) -> None:
        now = time.perf_counter()
        self.phases[phase] = round(self.phases.get(phase, 0.0) + now - self.last, 2)
        self.last = now


class QdqPass(Pass):
    """int8 quantization (static calibrated QDQ or dynamic), only where the target runs it faster."""

    name = "qdq"
    contract = Contract.LOSSY
    cleanup = False
    walks_subgraphs = False  # If/Loop/Scan bodies and local functions stay float
    walks_functions = False
    Options = QdqOptions

    @classmethod
    def search_space(cls) -> SearchSpec:
        """For ``onnxopt tune``: static (auto, with DATA) or dynamic, per-channel, whether to keep float the
        nodes not timed faster (the tuner times the whole model), smoothing, S8S8, calibration, and the
        user's error budget handed to the sensitivity fallback (``max_error``)."""
        static = {"mode": ("auto", "static")}
        return SearchSpec(
            group="precision", stage=60,
            options={"mode": ("auto", "dynamic"), "per_channel": (True, False), "only_if_faster": (True, False),
                     "smooth_alpha": (0.5, 0.0), "activation_type": ("auto", "int8"),
                     "method": ("percentile", "minmax", "entropy", "mse"), "percentile": (99.999, 99.99)},
            conditions={"activation_type": static, "method": static, "percentile": {"method": ("percentile",)}},
            error_budget=ErrorBudget(option="max_error", metric_option="error_metric", metrics=ERROR_METRICS,
                                     user_metric_option="metric", fractions=(1.0, 0.5), proxy_values=(0.05, 0.02)),
        )

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        options: QdqOptions = self.options  # type: ignore[assignment]
        target = options.target or ctx.target
        cpu = options.cpu or ctx.cpu or CPU_ANY
        _validate(options, target, cpu)
        present = {node.op for node in model.graph.nodes} & QUANTIZED_OPS
        if present:
            return PassResult(False, {"skipped": "already quantized"},
                              [f"model already holds quantized ops ({', '.join(sorted(present))}); left unchanged"])
        if model.opset < MIN_QDQ_OPSET:
            return PassResult(False, {"skipped": f"opset {model.opset}"}, [
                f"opset {model.opset} is below {MIN_QDQ_OPSET}, which per-channel QuantizeLinear/DequantizeLinear "
                "need; convert the model to a newer opset first (onnx.version_converter)"])
        real_data = has_real_data(ctx.data)
        settings = _settings(options, target, cpu, _resolve_mode(options.mode, target, real_data))
        mode = settings.mode
        original = model
        model = _with_node_names(model)
        feeds, token_ids = (ctx.data, False) if real_data else _random_feeds(model, ctx)
        first = _first_feeds(feeds, 1)
        if not first:
            raise BadInputError("calibration data holds no batches")
        _check_feed_names(model.graph, first[0])
        notes: list[str] = []
        stats: dict[str, object] = {"mode": mode, "target": target, "cpu": cpu, "weight_limit": settings.limit,
                                    "decided_by": settings.decide_by}

        candidates = _candidates(model, mode, options, target, cpu, notes)
        if not candidates:
            return PassResult(False, stats, [*notes, "no node of the requested op types can be quantized"])
        # Random inputs are fit for smoothing only when they enter through the model's own
        # learned tables (token ids into embeddings): random float inputs misplace outliers.
        smooth_feeds = feeds if real_data or token_ids else None
        if token_ids:
            notes.append("no DATA: outlier smoothing measured on random token ids")
        shapes: dict[str, tuple[int, ...]] = {}
        clock = _PhaseClock(stats)
        plan = self._smoothing(model, candidates, smooth_feeds, mode, options, settings.limit, stats, shapes)
        clock.done("smoothing")
        smoothed = _Smoothed(model, plan, candidates)
        builder = self._builder(smoothed, candidates, options, settings, feeds, stats, notes, shapes)
        clock.done("calibration" if mode == "static" else "shapes")
        selected = list(builder.candidates)
        stats["candidates"] = len(selected)
        decisions.start(stats, zip(candidates, _ops(model, candidates), strict=True), "float",
                        "input range unusable (mask sentinels, or never computed in calibration)")
        decisions.mark(stats, selected, "int8", "quantized")

        ratios: dict[str, float] = {}
        by_rules: list[str] | None = None
        if settings.decide_by == "timing":
            stats["timing_threads"] = describe_threads(settings.thread_counts)
            if mode == "dynamic" and count_model(model).weight_bytes <= WHOLE_MODEL_TIMING_MAX_BYTES:
                # Dynamic MatMul/Gemm: the shape rules agree with island timings on every sample node
                # (bench.int8_rules), so they pre-select and the whole-model check decides: no islands.
                by_rules = [name for name in selected if rule_verdict(_node(smoothed.full, name))[0]]
                stats["preselected_by_rules"] = len(by_rules)
            else:
                # Islands pre-select variants under the count the model most likely runs with (the user's,
                # else onnxruntime's default); the whole-model check below decides under all of them.
                ratios = island_ratios(smoothed.full, selected, builder.shapes, builder.quantize_island,
                                       settings.thread_counts[-1:], fold_activation=mode == "static")
                decisions.set_field(stats, "time_ratio", {name: round(value, 3) for name, value in ratios.items()})
                clock.done("island_timing")
        elif settings.decide_by == "rules":
            selected = self._by_rules(smoothed.full, selected, stats, notes)
        if options.max_error > 0 and selected:
            selected = self._sensitivity(model, builder, selected, feeds, options, stats, notes)
            clock.done("sensitivity")
        if not selected:
            notes.append("nothing quantized")
            return PassResult(False, stats, notes)
        if settings.decide_by == "timing":
            quantized, selected = self._fastest_variant(model, selected, ratios, builder, first[0], settings,
                                                        stats, notes, by_rules)
            if quantized is None:
                return PassResult(False, stats, notes)
        else:
            quantized = builder.build(selected)
        clock.done("whole_model_timing" if settings.decide_by == "timing" else "build")
        _check_no_saturation(quantized, settings)
        stats["quantized_nodes"] = len(selected)
        stats["quantized_by_op"] = dict(collections.Counter(_ops(model, selected)))
        original.graph = quantized.graph
        _record_assumptions(original, settings)
        return PassResult(True, _outcome_first(stats), notes)

    @staticmethod
    def _builder(smoothed: _Smoothed, candidates: list[str], options: QdqOptions, settings: _Settings, feeds,
                 stats: dict[str, object], notes: list[str],
                 shapes: dict[str, tuple[int, ...]]) -> _StaticBuilder | _DynamicBuilder:
        """Calibrate (static) or probe shapes (dynamic): what every later variant is built from."""
        if settings.mode == "dynamic":
            return _DynamicBuilder(smoothed, candidates, options, feeds, settings.limit,
                                   need_shapes=settings.decide_by == "timing", known_shapes=shapes)
        fmt = ActivationFormat.named(_activation_type(options.activation_type, settings.target))
        builder = _StaticBuilder(smoothed, candidates, options, settings.target, fmt, feeds, settings.limit)
        stats.update(method=options.method, activation_type=np.dtype(fmt.dtype).name,
                     calibration_batches=builder.calibrator.batches,
                     calibration_statistics_bytes=builder.calibrator.nbytes)
        masked = sorted(name for name in builder.blocked if builder.ranges.get(name) and builder.ranges[name].sentinels)
        if masked:
            stats["mask_sentinel_tensors"] = masked
            notes.append(f"{len(masked)} tensor(s) carry mask sentinels (|x| >= 1e30) and stay float")
        return builder

    @staticmethod
    def _by_rules(full: Model, selected: list[str], stats: dict[str, object], notes: list[str]) -> list[str]:
        """The nodes the shape rules expect to run faster in int8 (no timing: the same on every machine)."""
        by_name = {node.name: node for node in full.graph.nodes}
        kept = []
        for name in selected:
            faster, reason = rule_verdict(by_name[name])
            decisions.mark(stats, [name], "int8" if faster else "float", reason)
            if faster:
                kept.append(name)
        left = [name for name in selected if name not in set(kept)]
        if left:
            stats["float_by_rule"] = len(left)
            notes.append(f"kept float by the speed rules: {_by_op(full, left)}")
        return kept

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
            budget = f"{options.max_error:g} {options.metric or options.error_metric}"
            stats["sensitivity_fallback"] = len(fallback.fallback)
            decisions.mark(stats, fallback.fallback, "float", f"kept float for accuracy (error budget {budget})")
            notes.append(f"kept float for accuracy (error budget {budget}): " + ", ".join(fallback.fallback))
        decisions.set_field(stats, "sensitivity", fallback.scores)
        return fallback.kept

    @staticmethod
    def _smoothing(model: Model, candidates: list[str], feeds, mode: str, options: QdqOptions, limit: int,
                   stats: dict[str, object], shapes: dict[str, tuple[int, ...]] | None) -> SmoothingPlan | None:
        """Which MatMul inputs get their outliers moved into the weights (where that helps), if any.

        ``shapes`` (when the smoothing feeds are the pass's own feeds) receives the shapes of
        the streamed inputs, and of their smoothed counterparts.
        """
        if options.smooth_alpha <= 0 or feeds is None:
            return None
        groups = smoothing_candidates(model.graph, candidates)
        chosen = choose_smoothing(model, groups, feeds, dynamic=mode == "dynamic",
                                  max_batches=options.calibration_batches, alpha=options.smooth_alpha,
                                  weight_limit=limit, shapes=shapes)
        if not chosen:
            return None
        stats["smoothed_inputs"] = len(chosen)
        plan = SmoothingPlan(model, chosen)
        if shapes is not None:
            shapes.update({smoothed: shapes[tensor] for tensor, smoothed in plan.smoothed_names().items()
                           if tensor in shapes})
        return plan

    @staticmethod
    def _fastest_variant(model: Model, selected: list[str], ratios: dict[str, float], builder,
                         feed: dict[str, np.ndarray], settings: _Settings, stats: dict, notes: list[str],
                         by_rules: list[str] | None = None):
        """Time a few int8 variants against the original; keep the fastest, or none if all are slower.

        Variants keep the nodes whose island ran at most 0.95x, 1.1x, 1.3x the float time, or
        all of them: inside an int8 chain the Q/DQ conversions an island pays for disappear,
        so nodes that lose as islands can still win in place (tiny CNNs), or not (depthwise
        convolutions between float layers). Without islands (``by_rules``): the nodes the shape
        rules pick, and all of them. Only the whole model's time decides, under every thread
        count the model is timed for (the worst one counts).
        """
        variants: list[list[str]] = []
        if by_rules is not None:
            kept = set(by_rules)
            subsets = [[name for name in selected if name in kept], list(selected)]
        else:
            subsets = [[name for name in selected if ratios.get(name, 1.0) <= threshold]
                       for threshold in (*VARIANT_ISLAND_RATIOS, math.inf)]
        for subset in subsets:
            if subset and subset not in variants:
                variants.append(subset)
        if not variants:
            notes.append("no node runs faster in int8 on this target; left unchanged")
            return None, []
        if count_model(model).weight_bytes > WHOLE_MODEL_TIMING_MAX_BYTES:
            return _island_variant(model, selected, builder, ratios, stats, notes)
        built = [builder.build(subset) for subset in variants]
        comparisons, per_threads = worst_relative_times(model, built, feed, settings.thread_counts)
        scores = [comparison.pessimistic_ratio for comparison in comparisons]
        best = min(range(len(variants)), key=lambda index: scores[index])
        stats["variant_time_ratios"] = {len(v): round(score, 3) for v, score in zip(variants, scores, strict=True)}
        if len(settings.thread_counts) > 1:
            stats["variant_time_ratios_by_threads"] = {
                ("default" if count == 0 else count): values for count, values in per_threads.items()}
        stats["int8_over_fp32_time"] = round(scores[best], 3)
        if scores[best] > MAX_WHOLE_MODEL_RATIO:
            notes.append(f"int8 is not faster than float on this model (best {scores[best]:.2f}x the time under "
                         f"{describe_threads(settings.thread_counts)}, {MAX_WHOLE_MODEL_RATIO:g}x needed); "
                         "left unchanged")
            decisions.mark(stats, selected, "float", f"whole model not faster in int8 ({scores[best]:.2f}x)", "int8")
            return None, []
        kept_float = [name for name in selected if name not in set(variants[best])]
        if kept_float:
            stats["float_not_faster"] = len(kept_float)
            decisions.mark(stats, kept_float, "float", "not faster in int8 in the whole model")
            notes.append(f"kept float, not faster in int8 here: {_by_op(model, kept_float)}")
        faster = {name: ratios.get(name, 1.0) <= 1.0 for name in variants[best]}
        decisions.mark(stats, [n for n, yes in faster.items() if yes], "int8", "faster in int8")
        decisions.mark(stats, [n for n, yes in faster.items() if not yes], "int8",
                       "slower alone, faster within the whole int8 model")
        return built[best], variants[best]


def _island_variant(model: Model, selected: list[str], builder, ratios: dict[str, float], stats: dict,
                    notes: list[str]):
    """Large models: the nodes whose island wins by the margin, without a whole-model timing."""
    faster = [name for name in selected if ratios.get(name, 1.0) <= VARIANT_ISLAND_RATIOS[0]]
    if not faster:
        notes.append("no node runs faster in int8 on this target; left unchanged")
        return None, []
    notes.append(f"whole-model timing skipped: holding the float and int8 sessions of a model over "
                 f"{WHOLE_MODEL_TIMING_MAX_BYTES >> 30} GiB at once would cost more memory than running it; "
                 f"nodes whose island ran at most {VARIANT_ISLAND_RATIOS[0]:g}x the float time are quantized")
    stats["whole_model_timing"] = "skipped (model too large)"
    kept_float = [name for name in selected if name not in set(faster)]
    decisions.mark(stats, faster, "int8", f"island at most {VARIANT_ISLAND_RATIOS[0]:g}x the float time")
    if kept_float:
        stats["float_not_faster"] = len(kept_float)
        decisions.mark(stats, kept_float, "float", "island not faster in int8")
        notes.append(f"kept float, not faster in int8 here: {_by_op(model, kept_float)}")
    return builder.build(faster), faster


def _outcome_first(stats: dict[str, object]) -> dict[str, object]:
    """The same stats with what was quantized first: short reports (the terminal's) show the head of the list."""
    outcome = ("quantized_nodes", "quantized_by_op", "candidates", "int8_over_fp32_time")
    return {**{key: stats[key] for key in outcome if key in stats}, **stats}


def _node(model: Model, name: str) -> gs.Node:
    return next(node for node in model.graph.nodes if node.name == name)


def _settings(options: QdqOptions, target: str, cpu: str, mode: str) -> _Settings:
    limit = weight_limit(cpu) if target == "ort-cpu" else FULL_WEIGHT_LIMIT
    timed = options.only_if_faster and target == "ort-cpu"
    decide_by = options.decide_by if timed else "none"
    threads = timing_threads(options.benchmark_threads) if decide_by == "timing" else ()
    return _Settings(target, cpu, mode, limit, decide_by, threads)


def _check_no_saturation(model: Model, settings: _Settings) -> None:
    """The emitted int8 nodes must respect the weight bound (a failure is a bug here, never bad input)."""
    if settings.target != "ort-cpu":
        return
    risks = saturation_risks(model, settings.limit)
    if risks:
        raise RuntimeError(f"qdq emitted {len(risks)} int8 node(s) beyond ±{settings.limit} "
                           f"for cpu={settings.cpu}: {risks[0]}")


def _record_assumptions(model: Model, settings: _Settings) -> None:
    """Write what the int8 model assumes, and how its nodes were chosen, into its metadata."""
    props = model.metadata_props
    props[TARGET_KEY] = join_target(settings.target, settings.cpu)
    props[WEIGHT_LIMIT_KEY] = str(settings.limit)
    requirement = requirement_of(settings.cpu) if settings.target == "ort-cpu" else None
    if requirement:
        props[REQUIRES_KEY] = requirement
    else:
        props.pop(REQUIRES_KEY, None)
    props[DECIDED_BY_KEY] = settings.decide_by
    if settings.decide_by == "timing":
        props[TIMED_ON_KEY] = (f"{host_cpu().describe()}; onnxruntime {ort.__version__}; "
                               f"{describe_threads(settings.thread_counts)}")
    else:
        props.pop(TIMED_ON_KEY, None)


def _candidates(model: Model, mode: str, options: QdqOptions, target: str, cpu: str, notes: list[str]) -> list[str]:
    exclusions = Exclusions(frozenset(options.exclude_nodes), frozenset(options.exclude_op_types),
                            options.exclude_regex)
    if mode == "static":
        names = find_candidates(model.graph, options.op_types, exclusions, target)
        if target == "ort-cpu" and cpu == CPU_ANY and _activation_type(options.activation_type, target) == "int8":
            # Two int8 activations have no weight to bound: nothing keeps their pairs within int16.
            by_name = {node.name: node for node in model.graph.nodes}
            both = {name for name in names if by_name[name].op == "MatMul"
                    and not any(isinstance(tensor, gs.Constant) for tensor in by_name[name].inputs[:2])}
            if both:
                notes.append(f"{len(both)} activation×activation MatMul(s) kept float: int8 activations on both "
                             "sides can saturate on CPUs without VNNI (use activation_type=uint8)")
            names = [name for name in names if name not in both]
        return names
    allowed = set(options.op_types) & set(DYNAMIC_OPS)
    left_out = set(options.op_types) - allowed
    if any(node.op in left_out for node in model.graph.nodes):
        notes.append("dynamic mode quantizes MatMul/Gemm only (onnxruntime's ConvInteger is slower than float Conv)")
    return find_dynamic_candidates(model.graph, allowed, exclusions.excludes)


def _validate(options: QdqOptions, target: str, cpu: str) -> None:
    if target not in TARGETS:
        raise BadInputError(f"qdq: unknown target {target!r} (choose from {', '.join(TARGETS)})")
    if cpu not in CPU_KINDS:
        raise BadInputError(f"qdq: unknown cpu {cpu!r} (choose from {', '.join(CPU_KINDS)})")
    if options.mode not in MODES:
        raise BadInputError(f"qdq: unknown mode {options.mode!r} (choose from {', '.join(MODES)})")
    if options.method not in METHODS:
        raise BadInputError(f"qdq: unknown method {options.method!r} (choose from {', '.join(METHODS)})")
    if options.activation_type not in ACTIVATION_TYPES:
        raise BadInputError(f"qdq: unknown activation_type {options.activation_type!r} "
                            f"(choose from {', '.join(ACTIVATION_TYPES)})")
    if options.decide_by not in DECIDE_BY:
        raise BadInputError(f"qdq: unknown decide_by {options.decide_by!r} (choose from {', '.join(DECIDE_BY)})")
    if options.benchmark_threads < 0:
        raise BadInputError("qdq: benchmark_threads must be >= 0 (0: 1 thread and onnxruntime's default)")
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


RANDOM_TOKEN_FEEDS = 8


def _random_feeds(model: Model, ctx: PassContext) -> tuple[Iterable[dict[str, np.ndarray]], bool]:
    """Random inputs without DATA, and whether they are token ids entering the model's own tables.

    Random floats are enough to time kernels, never to calibrate or smooth. Token ids that
    span each embedding table (masks all ones) are fit for outlier smoothing: the
    activations then come from the model's learned embeddings.
    """
    specs = graph_input_specs(model.graph, model.initializer_inputs)
    if specs and all(np.issubdtype(spec.dtype, np.integer) for spec in specs) and any(
            spec.index_bound for spec in specs):
        return [random_feed(specs, ctx.shapes, 1, seed) for seed in range(RANDOM_TOKEN_FEEDS)], True
    if isinstance(ctx.data, Feeds):
        return ctx.data, False
    return [random_feed(specs, ctx.shapes, 1, seed) for seed in range(4)], False


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
