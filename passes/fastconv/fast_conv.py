"""fast-conv: replace convolutions by Winograd or FFT kernels where they are measurably faster.

For every eligible Conv of the main graph (with the residual Add and Relu/Clip fused after it), the pass
times the original against each candidate - Winograd F(2x2,3x3), F(4x4,3x3), F(6x6,3x3) and FFT - with
the node's real shapes and weights on the target's provider and the user's thread count, measures each
candidate's error against a float64 reference, and substitutes the fastest candidate that beats the
original by ``min_speedup`` within ``max_rel_error``. ``mode=rules`` decides without timing, the same way
on every machine. The custom ops carry their standard bodies as model-local functions, so the output
model runs anywhere; only a runtime with onnxopt's kernels gets the speed.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from onnxopt import kernels
from onnxopt.errors import BadInputError
from onnxopt.graph_edit import all_tensor_names, use_counts
from onnxopt.model_io import Model
from onnxopt.pass_api import Contract, Pass, PassContext, PassOptions, PassResult
from onnxopt.runtime import run_session
from onnxopt.shape_info import infer_tensor_infos

from .accuracy import reference_output, relative_error
from .islands import candidate_island, island_feed, original_island
from .match import ConvPattern, Refused, algorithms_for, find_convs, match_conv
from .rewrite import replace_pattern
from .rules import rule_choice
from .timing import TimingConfig, VariantTime, make_sessions, time_variants

logger = logging.getLogger(__name__)

ALGORITHMS = ("winograd2", "winograd4", "winograd6", "fft")
GPU_TARGETS = ("ort-cuda", "tensorrt")
MODES = ("measure", "rules")
METADATA_KEY = "onnxopt.fast-conv"
# Candidates whose pessimistic ratios are within this fraction of the fastest count as tied (noise).
TIE_MARGIN = 0.05


@dataclass(frozen=True)
class FastConvOptions(PassOptions):
    target: str = ""  # empty: the pipeline's --target; GPU targets leave convolutions alone
    mode: str = "measure"  # measure (time each candidate here) | rules (deterministic, no timing)
    algorithms: tuple[str, ...] = ALGORITHMS
    threads: int = 0  # threads to time with, as the model will run (0: onnxruntime's default, all cores)
    min_speedup: float = 1.15  # pessimistic speed-up a candidate must reach to replace the original
    max_rel_error: float = 1e-4  # per conv, relative max error vs float64 on a random input
    fft_min_taps: int = 25  # FFT is tried only for kernels with at least this many taps
    rounds: int = 15  # timing rounds per shape (more: steadier decisions on a noisy machine)
    fuse: bool = True  # take the residual Add and the Relu/Clip after the Conv into the kernel
    batch: int = 1  # batch size to time with when the model's batch dimension is symbolic


class FastConv(Pass):
    """Replace convolutions by Winograd (3x3) or FFT (large kernels) custom ops where measured faster.

    Candidates per Conv (stride 1, no dilation, float32, constant weights, static spatial shape): Winograd
    F(2x2,3x3), F(4x4,3x3), F(6x6,3x3) for 3x3 kernels with group 1; FFT for 1-D and 2-D kernels of at
    least ``fft_min_taps`` taps, group 1 or depthwise. A following residual Add (same shape) and Relu or
    Clip are fused. Each substitution is a ``com.onnxopt`` node with a model-local function whose body
    is the original Conv/Add/activation, so the model runs unchanged without onnxopt's kernels.
    Measured mode needs the kernel library; GPU targets leave every convolution alone (cuDNN and TensorRT
    already choose Winograd/FFT themselves). Unsafe when the deployment machine differs from the one
    measuring (use ``mode=rules`` there) or without the kernels (the function bodies are no faster).
    ``stats["decisions"]`` lists every Conv: shape, candidates' times and errors, decision and why.
    Skips If/Loop/Scan bodies and local functions (their shapes are not known statically).
    """

    name = "fast-conv"
    contract = Contract.TOLERANCE
    # Whole-model bound: per-conv errors (<= max_rel_error, ~1e-6..1e-5 for F(4,3)) accumulate over depth.
    tolerance_rel = 1e-3
    cleanup = False
    walks_subgraphs = False
    walks_functions = False
    Options = FastConvOptions

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        options: FastConvOptions = self.options  # type: ignore[assignment]
        _check_options(options)
        target = options.target or ctx.target
        infos = infer_tensor_infos(model)
        counts = use_counts(model.graph)
        claimed: set[int] = set()
        matched: list[ConvPattern | dict] = []  # graph order: a pattern to decide, or a refusal already decided
        for conv in find_convs(model):
            if id(conv) in claimed:
                continue
            try:
                pattern = match_conv(conv, model, infos, counts, _batch(model, options, ctx), options.fuse)
            except Refused as reason:
                matched.append(_kept(conv, str(reason)))
                continue
            if any(id(node) in claimed for node in pattern.nodes):
                matched.append(_kept(conv, "its Add/activation belongs to another fused pattern"))
                continue
            claimed.update(id(node) for node in pattern.nodes)
            matched.append(pattern)
        chooser = _Chooser(options, target)
        taken = all_tensor_names(model.graph)
        replaced: dict[str, int] = {}
        decisions: list[dict] = []
        for item in matched:
            if isinstance(item, dict):
                decisions.append(item)
                continue
            decision = chooser.decide(item)
            decisions.append(decision)
            if decision["decision"] != "keep":
                replace_pattern(model, item, decision["decision"], taken)
                replaced[decision["decision"]] = replaced.get(decision["decision"], 0) + 1
        if replaced:
            model.graph.toposort()
            # What the decisions assumed of the hardware, for a later check against the deploying host.
            model.metadata_props[METADATA_KEY] = json.dumps(
                {"mode": options.mode, "target": target, "threads": options.threads, "isa": kernels.isa(),
                 "onnxruntime": ort.__version__, "replaced": replaced}, sort_keys=True)
        stats = {
            "convs": len(decisions),
            "replaced": sum(replaced.values()),
            "by_algorithm": replaced,
            "mode": options.mode,
            "target": target,
            "threads": options.threads,
            "isa": kernels.isa(),
            "decisions": decisions,
        }
        notes = [chooser.note] if chooser.note else []
        return PassResult(bool(replaced), stats, notes)


def _check_options(options: FastConvOptions) -> None:
    if options.mode not in MODES:
        raise BadInputError(f"fast-conv: mode must be one of {', '.join(MODES)}, got {options.mode!r}")
    unknown = [name for name in options.algorithms if name not in ALGORITHMS]
    if unknown:
        raise BadInputError(f"fast-conv: unknown algorithms {unknown} (known: {', '.join(ALGORITHMS)})")
    if options.min_speedup < 1.0 or options.max_rel_error <= 0 or options.rounds < 3 or options.threads < 0:
        raise BadInputError("fast-conv: min_speedup >= 1, max_rel_error > 0, rounds >= 3 and threads >= 0 needed")


def _batch(model: Model, options: FastConvOptions, ctx: PassContext) -> int:
    """Batch size for symbolic batch dims: --shape of the first input if given, else the option."""
    for tensor in model.graph.inputs:
        shape = ctx.shapes.get(tensor.name)
        if shape:
            return int(shape[0])
    return options.batch


def _kept(conv, reason: str, pattern: ConvPattern | None = None) -> dict:
    entry = {"node": conv.name, "output": conv.outputs[0].name, "decision": "keep", "reason": reason,
             "candidates": {}}
    if pattern is not None:
        entry.update({"fused": pattern.label, "shape": pattern.describe()})
    return entry


class _Chooser:
    """Decides per pattern; caches timings per shape signature (weights do not change speed)."""

    def __init__(self, options: FastConvOptions, target: str) -> None:
        self.options = options
        self.target = target
        self.timing = TimingConfig(threads=options.threads, rounds=options.rounds)
        self.cache: dict[tuple, dict[str, VariantTime]] = {}
        self.note = ""
        self.library = kernels.available()
        if not self.library:
            kernels.warn_unavailable()
            if options.mode == "measure":
                self.note = "kernel library unavailable: nothing measured, nothing replaced (mode=rules rewrites)"

    def candidates(self, pattern: ConvPattern) -> tuple[list[str], dict[str, dict]]:
        fits = algorithms_for(pattern)
        taps = int(np.prod(pattern.kernel))
        table: dict[str, dict] = {}
        allowed = []
        for name in ALGORITHMS:
            reason = fits[name]
            if not reason and name not in self.options.algorithms:
                reason = "not among the pass's algorithms"
            if not reason and name == "fft" and taps < self.options.fft_min_taps:
                reason = f"{taps} taps < fft_min_taps {self.options.fft_min_taps}"
            table[name] = {"eligible": not reason, **({"reason": reason} if reason else {})}
            if not reason:
                allowed.append(name)
        return allowed, table

    def decide(self, pattern: ConvPattern) -> dict:
        entry = _kept(pattern.conv, "", pattern)
        allowed, table = self.candidates(pattern)
        entry["candidates"] = table
        if pattern.notes:
            entry["notes"] = list(pattern.notes)
        if self.target in GPU_TARGETS:
            entry["reason"] = f"{self.target}: cuDNN/TensorRT choose Winograd/FFT themselves; convolutions left alone"
            return entry
        if not allowed:
            entry["reason"] = "no fast algorithm fits this convolution"
            return entry
        feed = island_feed(pattern)
        if self.options.mode == "rules":
            choice, why = rule_choice(pattern, allowed, self.options.max_rel_error)
            if choice and self.library:
                errors = self._errors(pattern, feed, [choice])
                table[choice]["rel_error"] = errors[choice]
                entry["baseline_rel_error"] = errors["original"]
            entry.update(decision=choice or "keep", reason=why)
            if choice:
                entry["rel_error"] = table[choice].get("rel_error")
            return entry
        if not self.library:
            entry["reason"] = "kernel library unavailable: cannot measure"
            return entry
        return self._measure(pattern, feed, allowed, table, entry)

    def _measure(self, pattern: ConvPattern, feed: dict, allowed: list[str], table: dict, entry: dict) -> dict:
        models = {"original": original_island(pattern)}
        models.update({name: candidate_island(pattern, name) for name in allowed})
        sessions = make_sessions(models, self.timing)
        errors = self._errors(pattern, feed, allowed, sessions)
        key = pattern.signature()
        if key not in self.cache:
            self.cache[key] = time_variants(sessions, feed, self.timing)
        times = self.cache[key]
        entry["baseline_ms"] = round(times["original"].median_ms, 4)
        entry["baseline_rel_error"] = errors["original"]
        winners = []
        for name in allowed:
            measured = times[name]
            table[name].update(measured.as_dict(), speedup=round(1.0 / measured.ratio, 3), rel_error=errors[name])
            if errors[name] > self.options.max_rel_error:
                table[name]["rejected"] = f"error {errors[name]:.2e} > max_rel_error {self.options.max_rel_error:g}"
                continue
            if measured.ratio <= 1.0 / self.options.min_speedup:
                winners.append(name)
        best, best_ratio = "", 1.0
        if winners:
            fastest = min(times[name].ratio for name in winners)
            # Within TIE_MARGIN of the fastest, timing noise cannot rank them: take the most accurate.
            close = [name for name in winners if times[name].ratio <= fastest * (1.0 + TIE_MARGIN)]
            best = min(close, key=lambda name: (errors[name], times[name].ratio))
            best_ratio = times[best].ratio
        if best:
            entry.update(decision=best, rel_error=errors[best],
                         reason=f"{1.0 / best_ratio:.2f}x faster (pessimistic of median and best-round ratios; "
                                f"the most accurate within {TIE_MARGIN:.0%} of the fastest)")
        else:
            entry["reason"] = f"no candidate {self.options.min_speedup:g}x faster within the error bound"
        return entry

    def _errors(self, pattern: ConvPattern, feed: dict, names: list[str], sessions: dict | None = None) -> dict:
        """Relative max error vs float64 of the original (onnxruntime's Conv) and of each named candidate."""
        if sessions is None:
            models = {"original": original_island(pattern)}
            models.update({name: candidate_island(pattern, name) for name in names})
            sessions = make_sessions(models, self.timing)
        reference = reference_output(pattern, feed)
        return {name: float(f"{relative_error(run_session(sessions[name], feed)['y'], reference):.3e}")
                for name in ["original", *names]}
