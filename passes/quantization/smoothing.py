"""Outlier smoothing for MatMul inputs: move activation outliers into the weights.

Why: transformer activations have a few channels (hidden dimensions) whose values are
10-100x larger than the rest. With one scale per activation tensor — all that integer
matmul kernels allow — those channels set the scale and every other channel is left with
a handful of integer levels. Measured on MiniLM: quantizing only the weights costs
cosine 0.9996, quantizing only the activations 0.994. Scaling channel k of the
activation down by s_k and row k of the weight up by s_k leaves x @ W unchanged in exact
arithmetic (``x @ W = (x / s) @ (diag(s) W)``) while flattening the activation's channel
profile (SmoothQuant, Xiao et al. 2023); the division becomes one elementwise ``Mul``
feeding the MatMuls that share the input.

How much to move: s_k = max|x_k|^alpha / max|W_k|^(1 - alpha), alpha 0.5 by default
(SmoothQuant's own default). A group is smoothed only when simulating its quantized
matmul in numpy on sampled activation rows shows a smaller error than without smoothing.
We tried choosing alpha per group by that simulated error: it picks alpha 0.8 nearly
everywhere and ends worse on MiniLM (cosine 0.9952 against 0.9967 with 0.5 throughout),
because the sampled rows are dominated by padding positions that never reach the output;
so the simulation only decides *whether*, not *how much*.

The statistics need real data: channel maxima from random token ids describe nothing the
model will see, and smoothing with them wrecked MiniLM (cosine 0.69), so the pass only
smooths with user DATA — or, without DATA, with random token ids entering through the
model's own embedding tables. They are streamed: per-channel min/max over all batches plus a few
sampled rows of the first batches — bounded memory whatever the data size.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnx.numpy_helper
import onnx_graphsurgeon as gs
from onnx_graphsurgeon.ir.tensor import LazyValues

from onnxopt.activations import iter_activations
from onnxopt.blas_threads import single_threaded_blas
from onnxopt.errors import BadInputError
from onnxopt.int8_kernels import SAFE_WEIGHT_LIMIT
from onnxopt.model_io import Model, read_constant
from onnxopt.passes.quantization.common import NameScope, QuantParams, params_from_range, qrange, weight_params
from onnxopt.runtime_errors import ORT_RUN_ERRORS

logger = logging.getLogger(__name__)

DEFAULT_ALPHA = 0.5
SAMPLED_BATCHES = 4
ROWS_PER_BATCH = 32
# Smoothing must cut the simulated error by this factor to be worth a Mul node.
MIN_GAIN = 0.9
SCALE_LIMITS = (1e-4, 1e4)
# Output columns simulated per weight (wider weights are sampled evenly).
SIMULATED_COLUMNS = 4096


@dataclass
class _ChannelStats:
    minimum: np.ndarray | None = None
    maximum: np.ndarray | None = None
    samples: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=list)  # rows, batch min, max

    def update(self, values: np.ndarray, rng: np.random.Generator) -> None:
        rows = np.asarray(values, dtype=np.float32).reshape(-1, values.shape[-1])
        if rows.shape[0] == 0:
            return
        low, high = rows.min(axis=0), rows.max(axis=0)
        self.minimum = low if self.minimum is None else np.minimum(self.minimum, low)
        self.maximum = high if self.maximum is None else np.maximum(self.maximum, high)
        if len(self.samples) < SAMPLED_BATCHES:
            pick = rng.choice(rows.shape[0], size=min(ROWS_PER_BATCH, rows.shape[0]), replace=False)
            self.samples.append((rows[np.sort(pick)].copy(), low, high))


@dataclass(frozen=True)
class SmoothingGroup:
    """MatMuls sharing one activation input, and the per-channel divisor chosen for it."""

    tensor: str
    nodes: tuple[str, ...]
    scale: np.ndarray  # s_k: the activation is divided by it, weight rows multiplied by it
    alpha: float
    error_before: float
    error_after: float


def smoothing_candidates(graph: gs.Graph, nodes: Iterable[str]) -> dict[str, list[str]]:
    """Activation tensor -> MatMul nodes (of ``nodes``) reading it with a 2-D constant weight."""
    wanted = set(nodes)
    groups: dict[str, list[str]] = {}
    for node in graph.nodes:
        if node.name not in wanted or node.op != "MatMul":
            continue
        x, w = node.inputs[0], node.inputs[1]
        if isinstance(x, gs.Constant) or not isinstance(w, gs.Constant) or len(w.shape) != 2:
            continue
        groups.setdefault(x.name, []).append(node.name)
    return groups


def _fake_quantize(values: np.ndarray, params: QuantParams) -> np.ndarray:
    """QuantizeLinear then DequantizeLinear, in float32 throughout (the simulation's hot loop).

    The same numbers as ``dequantize_array(quantize_array(...))`` without their int64 and
    float64 temporaries, which cost more than the matmuls they feed.
    """
    axis = params.axis
    scale = params.scale if params.scale.ndim == 0 or axis is None else params.scale.reshape(
        [-1 if index == axis % values.ndim else 1 for index in range(values.ndim)])
    zero = params.zero_point.astype(np.float32)
    if zero.ndim and axis is not None:
        zero = zero.reshape(scale.shape)
    low, high = qrange(params.dtype)
    codes = np.rint(values / scale)
    codes += zero
    np.clip(codes, low, high, out=codes)
    codes -= zero
    codes *= scale
    return codes.astype(np.float32, copy=False)


def _simulate_error(samples, weights: list[np.ndarray], scale: np.ndarray, dynamic: bool,
                    global_range: tuple[np.ndarray, np.ndarray], references: list[np.ndarray],
                    weight_limit: int) -> float:
    """Relative squared error of the sampled rows' quantized products (all samples in one matmul per weight)."""
    inverse = (1.0 / scale).astype(np.float32)
    if not dynamic:
        low = float(np.min(global_range[0] * inverse))
        high = float(np.max(global_range[1] * inverse))
    blocks = []
    for rows, batch_low, batch_high in samples:
        if dynamic:
            low = float(np.min(batch_low * inverse))
            high = float(np.max(batch_high * inverse))
        blocks.append(_fake_quantize(rows * inverse, params_from_range(low, high, np.uint8, False)))
    x = np.concatenate(blocks)
    total, norm = 0.0, 0.0
    for w, ref in zip(weights, references, strict=True):
        scaled = w * scale[:, None]
        w_q = _fake_quantize(scaled, weight_params(scaled, 1, limit=weight_limit))
        total += float(np.sum((x @ w_q - ref) ** 2))
        norm += float(np.sum(ref**2))
    return total / max(norm, 1e-30)


def choose_smoothing(model: Model, groups: dict[str, list[str]], feeds: Iterable[dict[str, np.ndarray]],
                     dynamic: bool, max_batches: int = 0, alpha: float = DEFAULT_ALPHA,
                     weight_limit: int = SAFE_WEIGHT_LIMIT,
                     shapes: dict[str, tuple[int, ...]] | None = None) -> list[SmoothingGroup]:
    """Stream ``feeds`` for channel statistics, then decide per group whether smoothing helps.

    The simulation quantizes the weights within ±``weight_limit``, as the pass will: smoothing
    moves range into the weights, so the decision must see the weight grid really used.
    ``shapes``, when given, receives the shape of every streamed tensor (first batch), so
    the caller need not run the model again to learn them.
    """
    if not groups:
        return []
    stats = {name: _ChannelStats() for name in groups}
    rng = np.random.default_rng(0)
    try:
        for index, activations in enumerate(iter_activations(model, list(groups), feeds)):
            if max_batches and index >= max_batches:
                break
            for name, values in activations.items():
                if shapes is not None and name in stats:
                    shapes.setdefault(name, tuple(int(dim) for dim in values.shape))
                if name in stats and np.issubdtype(values.dtype, np.floating) and values.ndim >= 1:
                    stats[name].update(values, rng)
    except ORT_RUN_ERRORS as error:
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise BadInputError(f"calibration data does not fit the model: {first}") from None
    with single_threaded_blas():  # hundreds of medium products: BLAS threads cost more than they save
        return _decide(model, groups, stats, dynamic, alpha, weight_limit)


def _decide(model: Model, groups: dict[str, list[str]], stats: dict[str, _ChannelStats], dynamic: bool,
            alpha: float, weight_limit: int) -> list[SmoothingGroup]:
    """Per group: smooth when the simulated quantized product gets enough better."""
    by_name = {node.name: node for node in model.graph.nodes}
    chosen = []
    for tensor, names in groups.items():
        entry = stats[tensor]
        if entry.maximum is None or not entry.samples:
            continue
        full_weights = [np.asarray(read_constant(by_name[name].inputs[1]), dtype=np.float32) for name in names]
        if any(w.shape[0] != entry.maximum.shape[0] for w in full_weights):
            continue
        weight_max = np.max([np.abs(w).max(axis=1) for w in full_weights], axis=0)
        # Per-column scales make every column its own experiment: a fixed sample of them judges a
        # vocabulary-wide head (768 x 50257) as well as all of them, at a twelfth of the cost.
        weights = [w if w.shape[1] <= SIMULATED_COLUMNS else
                   w[:, np.linspace(0, w.shape[1] - 1, SIMULATED_COLUMNS).astype(np.int64)] for w in full_weights]
        del full_weights
        sampled = np.concatenate([rows for rows, _, _ in entry.samples])
        references = [sampled @ w for w in weights]
        global_range = (entry.minimum, entry.maximum)
        ones = np.ones_like(entry.maximum)
        baseline = _simulate_error(entry.samples, weights, ones, dynamic, global_range, references, weight_limit)
        activation_max = np.maximum(np.abs(entry.minimum), np.abs(entry.maximum))
        scale = activation_max**alpha / np.maximum(weight_max, 1e-8) ** (1.0 - alpha)
        scale = np.where((activation_max > 0) & (weight_max > 0), scale, 1.0)
        # Normalised to a geometric mean of 1 (a common factor changes nothing), then bounded.
        scale = np.clip(scale / np.exp(np.mean(np.log(np.maximum(scale, 1e-30)))), *SCALE_LIMITS)
        error = _simulate_error(entry.samples, weights, scale, dynamic, global_range, references, weight_limit)
        if error <= MIN_GAIN * baseline:
            chosen.append(SmoothingGroup(tensor, tuple(names), scale.astype(np.float32), alpha, baseline, error))
            logger.debug("smoothing %s: alpha %.1f, simulated error %.3g -> %.3g", tensor, alpha, baseline, error)
    return chosen


class ScaledRows(LazyValues):
    """A weight ``W * scale[:, None]`` computed from ``W`` when read, never stored.

    Smoothing multiplies every smoothed weight; storing those products would hold a float
    copy of the model (2.5 GB for the large MLP) before a single weight is quantized. The
    pass reads each product once, to quantize it (``read_constant`` calls ``load``), and a
    one-node timing island exports one (``tensor``); whole float models are never built
    from these (``SmoothingPlan.apply`` leaves float nodes unsmoothed).
    """

    def __init__(self, source: np.ndarray | LazyValues, row_scale: np.ndarray) -> None:
        # LazyValues.__init__ wants a TensorProto; there is none until someone exports this.
        self.source = source
        self.row_scale = np.asarray(row_scale, dtype=np.float32)
        self.shape = tuple(int(dim) for dim in source.shape)
        self.dtype = np.dtype(np.float32)
        self.nbytes = int(np.prod(self.shape, dtype=np.int64)) * 4

    def load(self) -> np.ndarray:
        values = self.source.load() if isinstance(self.source, LazyValues) else np.asarray(self.source)
        return (np.asarray(values, dtype=np.float32) * self.row_scale[:, None]).astype(np.float32)

    @property
    def tensor(self) -> onnx.TensorProto:  # what graph-surgeon exports
        return onnx.numpy_helper.from_array(self.load())

    def __str__(self) -> str:
        return f"ScaledRows (shape={self.shape})"


@dataclass(frozen=True)
class _GroupNames:
    smoothed: str
    divisor: str
    mul: str
    weights: dict[str, str]  # node -> name of its smoothed weight


class SmoothingPlan:
    """Chosen smoothing groups, applicable to any subset of nodes of one model.

    Names are fixed once, on the original graph, so every model built from the plan uses
    the same tensor names (calibrated ranges and cached int8 weights are keyed on them).
    ``apply`` smooths only the nodes that will be quantized: smoothing is exact in float,
    so a node that stays float keeps its original input and its original (lazy, possibly
    external) weight, and no float copy of a smoothed weight ever enters a model.
    """

    def __init__(self, model: Model, groups: Iterable[SmoothingGroup]) -> None:
        self.groups = list(groups)
        names = NameScope(model.graph)
        by_name = {node.name: node for node in model.graph.nodes}
        self.names: dict[str, _GroupNames] = {}
        for group in self.groups:
            weights = {node: names.fresh(f"{by_name[node].inputs[1].name}_smoothed_for_{node}") for node in group.nodes}
            self.names[group.tensor] = _GroupNames(names.fresh(f"{group.tensor}_smoothed"),
                                                   names.fresh(f"{group.tensor}_smooth_inverse_scale"),
                                                   names.fresh(f"{group.tensor}_smooth_Mul"), weights)

    @property
    def nodes(self) -> set[str]:
        return {node for group in self.groups for node in group.nodes}

    def smoothed_names(self) -> dict[str, str]:
        """Original input tensor -> its smoothed counterpart (same shape)."""
        return {tensor: names.smoothed for tensor, names in self.names.items()}

    def _add_mul(self, graph: gs.Graph, group: SmoothingGroup, tensors: dict[str, gs.Tensor]) -> gs.Variable:
        names = self.names[group.tensor]
        source = tensors[group.tensor]
        smoothed = gs.Variable(names.smoothed, dtype=np.float32, shape=source.shape)
        divisor = gs.Constant(names.divisor, (1.0 / group.scale).astype(np.float32))
        graph.nodes.append(gs.Node("Mul", names.mul, inputs=[source, divisor], outputs=[smoothed]))
        return smoothed

    def probe(self, model: Model) -> Model:
        """A copy of ``model`` that also computes every smoothed input (read by nothing): for calibration."""
        work = model.copy()
        tensors = work.graph.tensors()
        for group in self.groups:
            self._add_mul(work.graph, group, tensors)
        work.graph.toposort()
        return work

    def apply(self, model: Model, nodes: Iterable[str]) -> Model:
        """A copy of ``model`` in which the given nodes (of the plan) read smoothed inputs and weights."""
        wanted = set(nodes)
        work = model.copy()
        graph = work.graph
        tensors = graph.tensors()
        by_name = {node.name: node for node in graph.nodes}
        for group in self.groups:
            members = [name for name in group.nodes if name in wanted and name in by_name]
            if not members:
                continue
            smoothed = self._add_mul(graph, group, tensors)
            for name in members:
                node = by_name[name]
                weight = node.inputs[1]
                node.inputs[0] = smoothed
                # One product per node: a weight tied between groups gets its own scaled copy.
                node.inputs[1] = gs.Constant(self.names[group.tensor].weights[name],
                                             ScaledRows(weight._values, group.scale))
        graph.toposort()
        return work


def apply_smoothing(model: Model, groups: Iterable[SmoothingGroup]) -> Model:
    """A copy of ``model`` where each group's input is divided by its scale and its weights multiplied."""
    plan = SmoothingPlan(model, groups)
    return plan.apply(model, plan.nodes)
