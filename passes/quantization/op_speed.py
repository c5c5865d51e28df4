"""Is int8 faster here? Paired timing of model variants, robust on a small shared machine.

Why paired ratios: on a 2-core machine shared with other work, absolute times drift by
tens of percent within seconds. We time the two variants in alternation (the order
flipping every round), each round long enough to dwarf timer resolution, and take the
median of the per-round ratios: a burst of noise lands on both variants of a round, and
one bad round cannot move the median. We also keep the ratio of the fastest rounds
(noise only ever adds time, so the minimum is each variant's least disturbed run) and
judge by the larger of the two: a win must show in both. Sessions run with onnxruntime's graph optimizations
on, as deployed, because the int8 speed-up only exists after onnxruntime fuses the Q/DQ
pairs into integer kernels.

Why several thread counts: a decision holds for the threads it was timed under. int8
kernels and float kernels scale differently across cores (EfficientNet-B0 in int8 ran 1.08x
faster than float on one thread and 0.88x slower on two), so unless the user says how the
model will run (``--threads``), the whole-model comparison is made under one thread *and*
under onnxruntime's default (all cores), and the worse of the two counts. Islands (below)
only pre-select which variants the whole-model check times, so they are timed once, under
the last of those counts.

Why islands: a quantized node is judged by a one-node model — the node alone in float
versus the node with its Q/DQ, float in and float out. The island pays for quantizing its
input and dequantizing its output, so a node that wins as an island also wins inside an
int8 chain; the whole-model check afterwards catches what islands cannot see.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs
import onnxruntime as ort

from onnxopt.model_io import Model
from onnxopt.passes.quantization.qdq_placement import output_q_tensor
from onnxopt.runtime import create_session, model_on_disk

logger = logging.getLogger(__name__)

ISLAND_OUTPUT = "island_output"
DEFAULT_ROUNDS = 15
# Slow models get fewer rounds (never below MIN_ROUNDS): about this many seconds of timing per comparison.
TIMING_BUDGET_SECONDS = 1.5
MIN_ROUNDS = 5
MIN_ROUND_SECONDS = 0.003
MAX_RUNS_PER_ROUND = 2000


@dataclass(frozen=True)
class SpeedComparison:
    """Candidate time over baseline time (below 1: candidate faster)."""

    ratio: float
    baseline_ms: float
    candidate_ms: float
    rounds: int
    min_ratio: float = math.nan  # fastest candidate round over fastest baseline round

    @property
    def pessimistic_ratio(self) -> float:
        """The larger of the median paired ratio and the ratio of best times: both must show a win."""
        return self.ratio if math.isnan(self.min_ratio) else max(self.ratio, self.min_ratio)


def timing_threads(requested: int) -> tuple[int, ...]:
    """Thread counts to time under: the user's, else 1 and onnxruntime's default (0: all cores)."""
    if requested > 0:
        return (requested,)
    return (1,) if (os.cpu_count() or 1) <= 1 else (1, 0)


def describe_threads(counts: Sequence[int]) -> str:
    """``1 thread and onnxruntime's default (2 cores)``, for reports and metadata."""
    parts = [f"onnxruntime's default ({os.cpu_count()} cores)" if count == 0 else
             f"{count} thread{'s' if count > 1 else ''}" for count in counts]
    return " and ".join(parts)


def optimized_session(model: Model | bytes | str, threads: int) -> ort.InferenceSession:
    return create_session(model, optimize=True, threads=threads)


def _time_runs(session: ort.InferenceSession, feed: dict[str, np.ndarray], runs: int) -> float:
    started = time.perf_counter()
    for _ in range(runs):
        session.run(None, feed)
    return (time.perf_counter() - started) / runs


def paired_ratio(baseline: ort.InferenceSession, candidate: ort.InferenceSession,
                 feed: dict[str, np.ndarray], rounds: int = DEFAULT_ROUNDS) -> SpeedComparison:
    """Median over rounds of (candidate time / baseline time) on one feed."""
    for session in (baseline, candidate):
        _time_runs(session, feed, 2)  # warm-up: allocations, thread pools, first-run caches
    probes = (_time_runs(baseline, feed, 1), _time_runs(candidate, feed, 1))
    runs = int(min(MAX_RUNS_PER_ROUND, max(1, math.ceil(MIN_ROUND_SECONDS / max(min(probes), 1e-7)))))
    rounds = _affordable_rounds(rounds, runs * sum(probes))
    ratios, base_times, cand_times = [], [], []
    for index in range(rounds):
        if index % 2:
            cand = _time_runs(candidate, feed, runs)
            base = _time_runs(baseline, feed, runs)
        else:
            base = _time_runs(baseline, feed, runs)
            cand = _time_runs(candidate, feed, runs)
        ratios.append(cand / base)
        base_times.append(base)
        cand_times.append(cand)
    return SpeedComparison(float(np.median(ratios)), 1e3 * float(np.median(base_times)),
                           1e3 * float(np.median(cand_times)), rounds, float(min(cand_times) / min(base_times)))


def relative_times(baseline: Model | bytes | str, candidates: Sequence[Model | bytes | str],
                   feed: dict[str, np.ndarray],
                   threads: int = 1, rounds: int = DEFAULT_ROUNDS) -> list[SpeedComparison]:
    """Each candidate's time over the baseline's, all timed round-robin in the same rounds.

    The order of the models rotates every round so that no model always runs right after
    another; each ratio is the median over rounds of (candidate / baseline in that round).
    Models may be given serialized, or as paths (see ``worst_relative_times``).
    """
    sessions = [optimized_session(baseline, threads)] + [optimized_session(c, threads) for c in candidates]
    for session in sessions:
        _time_runs(session, feed, 1)  # warm-up (the probe below is a second warm run)
    probes = [_time_runs(session, feed, 1) for session in sessions]
    runs = int(min(MAX_RUNS_PER_ROUND, max(1, math.ceil(MIN_ROUND_SECONDS / max(min(probes), 1e-7)))))
    rounds = _affordable_rounds(rounds, runs * sum(probes))
    times = [[0.0] * rounds for _ in sessions]
    for index in range(rounds):
        shift = index % len(sessions)
        for position in range(len(sessions)):
            which = (position + shift) % len(sessions)
            times[which][index] = _time_runs(sessions[which], feed, runs)
    base = np.asarray(times[0])
    result = []
    for series in times[1:]:
        cand = np.asarray(series)
        result.append(SpeedComparison(float(np.median(cand / base)), 1e3 * float(np.median(base)),
                                      1e3 * float(np.median(cand)), rounds, float(cand.min() / base.min())))
    return result


def _affordable_rounds(rounds: int, seconds_per_round: float) -> int:
    """``rounds``, or fewer (not below MIN_ROUNDS) when that many would pass the timing budget."""
    affordable = math.ceil(TIMING_BUDGET_SECONDS / max(seconds_per_round, 1e-9))
    return max(min(rounds, MIN_ROUNDS), min(rounds, affordable))


def worst_relative_times(baseline: Model, candidates: Sequence[Model], feed: dict[str, np.ndarray],
                         thread_counts: Sequence[int], rounds: int = DEFAULT_ROUNDS,
                         ) -> tuple[list[SpeedComparison], dict[int, list[float]]]:
    """``relative_times`` under each thread count; per candidate the comparison with the worst ratio.

    Each model is exported and serialized once (seconds for a whole model), and every
    thread count's sessions open that payload. Also returns the pessimistic ratio of every
    candidate under every count (for the report).
    """
    with contextlib.ExitStack() as stack:
        sources = [stack.enter_context(model_on_disk(model)) for model in (baseline, *candidates)]
        by_count = {count: relative_times(sources[0], sources[1:], feed, count, rounds) for count in thread_counts}
    worst = []
    for index in range(len(candidates)):
        worst.append(max((by_count[count][index] for count in thread_counts), key=lambda c: c.pessimistic_ratio))
    ratios = {count: [round(c.pessimistic_ratio, 3) for c in comparisons] for count, comparisons in by_count.items()}
    return worst, ratios


def compare_models(baseline: Model, candidate: Model, feed: dict[str, np.ndarray], threads: int = 1,
                   rounds: int = DEFAULT_ROUNDS) -> SpeedComparison:
    """Paired timing of two whole models on one feed."""
    return paired_ratio(optimized_session(baseline, threads), optimized_session(candidate, threads), feed, rounds)


def island(model: Model, node_name: str, shapes: dict[str, tuple[int, ...]],
           fold_activation: bool) -> tuple[Model, dict[str, np.ndarray]] | None:
    """A one-node model of ``node_name`` (plus the Relu/Clip it fuses with) and a random feed.

    Tensor names are kept, so ranges and quantization parameters of the full model apply;
    so is the model's folder, which its (possibly external) weights are read from.
    None when an input's shape is unknown.
    """
    graph = model.graph
    by_name = {node.name: node for node in graph.nodes}
    node = by_name[node_name]
    members = [node]
    if fold_activation:
        after = output_q_tensor(node, {t.name for t in graph.outputs})
        if after is not None and after is not node.outputs[0]:
            members.append(after.inputs[0])
    inputs: dict[str, gs.Variable] = {}
    tensors: dict[str, gs.Tensor] = {}
    copies = []
    rng = np.random.default_rng(0)
    feed = {}
    for member in members:
        new_inputs = []
        for tensor in member.inputs:
            if isinstance(tensor, gs.Constant) or not tensor.name:
                new_inputs.append(tensor)
                continue
            if tensor.name not in tensors:
                shape = shapes.get(tensor.name)
                if shape is None:
                    return None
                variable = gs.Variable(tensor.name, dtype=np.float32, shape=list(shape))
                inputs[tensor.name] = variable
                tensors[tensor.name] = variable
                feed[tensor.name] = rng.standard_normal(shape).astype(np.float32)
            new_inputs.append(tensors[tensor.name])
        new_outputs = []
        for tensor in member.outputs:
            variable = gs.Variable(tensor.name, dtype=np.float32)
            tensors[tensor.name] = variable
            new_outputs.append(variable)
        copies.append(gs.Node(member.op, member.name, attrs=dict(member.attrs), inputs=new_inputs,
                              outputs=new_outputs, domain=member.domain))
    final = gs.Variable(ISLAND_OUTPUT, dtype=np.float32)
    copies.append(gs.Node("Identity", f"{node_name}_island_Identity", inputs=[copies[-1].outputs[0]], outputs=[final]))
    mini = gs.Graph(nodes=copies, inputs=list(inputs.values()), outputs=[final], opset=graph.opset,
                    import_domains=graph.import_domains)
    return Model(graph=mini, base_dir=model.base_dir, had_external_data=model.had_external_data), feed


def signature(node: gs.Node, shapes: dict[str, tuple[int, ...]]) -> tuple:
    """Nodes with equal signatures run the same kernels at the same sizes: time them once."""
    parts: list[object] = [node.op, tuple(sorted((k, repr(v)) for k, v in node.attrs.items()))]
    for tensor in node.inputs:
        if isinstance(tensor, gs.Constant):
            parts.append(("const", tuple(tensor.shape)))
        else:
            parts.append(("var", shapes.get(tensor.name)))
    consumers = node.outputs[0].outputs if node.outputs else []
    parts.append(tuple(consumer.op for consumer in consumers))
    return tuple(parts)


def island_ratios(model: Model, nodes: Sequence[str], shapes: dict[str, tuple[int, ...]],
                  quantize_island: Callable[[Model, str], Model], thread_counts: Sequence[int],
                  fold_activation: bool, rounds: int = DEFAULT_ROUNDS) -> dict[str, float]:
    """int8/fp32 time ratio of each node's island, the worst over ``thread_counts``.

    Nodes with one signature share a result.
    """
    by_name = {node.name: node for node in model.graph.nodes}
    measured: dict[tuple, float] = {}
    result: dict[str, float] = {}
    for name in nodes:
        key = signature(by_name[name], shapes)
        if key not in measured:
            built = island(model, name, shapes, fold_activation)
            if built is None:
                measured[key] = math.inf
            else:
                mini, feed = built
                quantized = quantize_island(mini, name)
                worst = 0.0
                for threads in thread_counts:
                    comparison = compare_models(mini, quantized, feed, threads, rounds)
                    worst = max(worst, comparison.pessimistic_ratio)
                    logger.debug("island %s (%s), %d threads: int8/fp32 %.2f (%.3f ms fp32)", name,
                                 by_name[name].op, threads, comparison.ratio, comparison.baseline_ms)
                measured[key] = worst
        result[name] = measured[key]
    return result
