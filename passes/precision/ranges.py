"""Activation ranges of the fp32 model, for deciding what may run in half precision.

A tensor whose values exceed the half range becomes Inf in fp16, and a reduction can
overflow inside even when its inputs and output are small: ReduceSumSquare of values
that are each below 65504 still sums squares past it, a LayerNormalization computes a
variance from squared deviations, a MatMul accumulates products. We therefore run the
*fp32* model on calibration data (streaming, one batch at a time, keeping only running
maxima) and record, per tensor, the largest finite magnitude seen and, per reducing node,
a conservative estimate of its largest internal value: the partial sums an fp16 kernel
that accumulates in fp16 could reach. Estimates err on the large side (sum of absolute
values, not the signed sum) because a node kept in fp32 costs speed, while a node that
overflows costs correctness.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice

import numpy as np
import onnx_graphsurgeon as gs
import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

from onnxopt.activations import with_extra_outputs
from onnxopt.errors import BadInputError
from onnxopt.model_io import Model, read_constant
from onnxopt.runtime import model_on_disk, providers_for, session_options

logger = logging.getLogger(__name__)

# Constants up to this many elements are read whole (axes, scalars); larger ones are summarised.
SMALL_CONSTANT_ELEMENTS = 4096


@dataclass
class RangeStats:
    """Running maxima collected over the calibration batches."""

    tensor_max: dict[str, float] = field(default_factory=dict)
    # id(node) -> (largest internal value, what it is)
    internal_max: dict[int, tuple[float, str]] = field(default_factory=dict)
    batches: int = 0
    source: str = ""


def finite_max_abs(values: np.ndarray) -> float:
    """Largest finite |x| (infinities in fp32 stay infinities in half: not an overflow)."""
    if values.size == 0:
        return 0.0
    peak = float(np.max(np.abs(values)))
    if math.isfinite(peak):
        return peak
    finite = values[np.isfinite(values)]
    return float(np.max(np.abs(finite.astype(np.float64)))) if finite.size else 0.0


class InputValues:
    """Values of a node's inputs: activations of this batch, or constants (small ones read
    whole, large ones summarised once and cached)."""

    def __init__(self, node: gs.Node, activations: dict[str, np.ndarray], cache: ConstantCache) -> None:
        self.node = node
        self.activations = activations
        self.cache = cache

    def present(self, index: int) -> bool:
        return index < len(self.node.inputs) and bool(self.node.inputs[index].name)

    def is_constant(self, index: int) -> bool:
        return self.present(index) and isinstance(self.node.inputs[index], gs.Constant)

    def array(self, index: int) -> np.ndarray | None:
        """The full array of an activation or a small constant; None if unavailable."""
        if not self.present(index):
            return None
        tensor = self.node.inputs[index]
        if isinstance(tensor, gs.Constant):
            return self.cache.small(tensor)
        return self.activations.get(tensor.name)

    def summary(self, index: int, kind: str, axis: int = 0) -> float | None:
        """A cached summary of a constant, or computed from the activation."""
        if not self.present(index):
            return None
        tensor = self.node.inputs[index]
        if isinstance(tensor, gs.Constant):
            return self.cache.summary(tensor, kind, axis)
        values = self.activations.get(tensor.name)
        return None if values is None else summarise(values, kind, axis)


def summarise(values: np.ndarray, kind: str, axis: int) -> float:
    """``max_abs``, ``max_abs_sum`` (largest sum of |x| along ``axis``) or ``max_abs_sum_rest``
    (largest sum over every axis but ``axis``: a Conv weight per output channel).

    Works on one float32 copy of |x| (weights can be hundreds of MB); sums accumulate in
    float64 without materialising a float64 array; infinities count as zero.
    """
    if values.size == 0:
        return 0.0
    data = np.abs(values.astype(np.float32, copy=False))
    data[~np.isfinite(data)] = 0.0
    if kind == "max_abs":
        return float(data.max())
    if kind == "max_abs_sum":
        if data.ndim == 0:
            return float(data)
        return float(data.sum(axis=axis, dtype=np.float64).max())
    if kind == "max_abs_sum_rest":
        moved = np.moveaxis(data, axis, 0).reshape(data.shape[axis], -1)
        return float(moved.sum(axis=1, dtype=np.float64).max())
    raise ValueError(kind)


class ConstantCache:
    """Reads each constant once (through ``read_constant``) for the summaries estimators need."""

    def __init__(self) -> None:
        self._small: dict[int, np.ndarray] = {}
        self._summaries: dict[tuple[int, str, int], float] = {}

    def small(self, constant: gs.Constant) -> np.ndarray | None:
        key = id(constant)
        if key not in self._small:
            shape = constant.shape or ()
            if math.prod(int(d) for d in shape) > SMALL_CONSTANT_ELEMENTS:
                return None
            self._small[key] = np.asarray(read_constant(constant))
        return self._small[key]

    def summary(self, constant: gs.Constant, kind: str, axis: int) -> float:
        key = (id(constant), kind, axis)
        if key not in self._summaries:
            values = np.asarray(read_constant(constant))
            self._summaries[key] = summarise(values, kind, axis % max(values.ndim, 1))
        return self._summaries[key]


Estimate = tuple[float, str] | None
Estimator = Callable[[gs.Node, InputValues, int], Estimate]


def _axes(node: gs.Node, inputs: InputValues, rank: int) -> tuple[int, ...] | None:
    """Reduced axes of a Reduce* node; None = all (also when they are only known at run time)."""
    axes = None
    if inputs.present(1):
        values = inputs.array(1)
        if values is None:
            return None
        axes = [int(a) for a in np.asarray(values).ravel()]
    elif node.attrs.get("axes") is not None:
        axes = [int(a) for a in node.attrs["axes"]]
    if not axes:
        return () if node.attrs.get("noop_with_empty_axes", 0) else None
    return tuple(sorted({a % rank for a in axes})) if rank else None


def _reduce(transform: Callable[[np.ndarray], np.ndarray], what: str) -> Estimator:
    def estimate(node: gs.Node, inputs: InputValues, opset: int) -> Estimate:
        data = inputs.array(0)
        if data is None or data.size == 0:
            return None
        values = transform(data.astype(np.float64))
        axes = _axes(node, inputs, data.ndim)
        if axes == ():
            return finite_max_abs(values), what
        with np.errstate(over="ignore", invalid="ignore"):
            total = values.sum(axis=axes)
        return float(np.nanmax(np.abs(total))), what

    return estimate


def _reduce_prod(node: gs.Node, inputs: InputValues, opset: int) -> Estimate:
    data = inputs.array(0)
    if data is None or data.size == 0:
        return None
    axes = _axes(node, inputs, data.ndim)
    with np.errstate(divide="ignore", over="ignore"):
        logs = np.log(np.abs(data.astype(np.float64)))
        total = logs if axes == () else logs.sum(axis=axes)
        return float(np.exp(np.nanmax(total))), "running product"


def _cumsum(node: gs.Node, inputs: InputValues, opset: int) -> Estimate:
    data = inputs.array(0)
    axis = inputs.array(1)
    if data is None or data.size == 0:
        return None
    axes = None if axis is None else (int(np.asarray(axis).ravel()[0]) % data.ndim,)
    return float(np.abs(data.astype(np.float64)).sum(axis=axes).max()), "cumulative sum of |x|"


def _softmax(node: gs.Node, inputs: InputValues, opset: int) -> Estimate:
    data = inputs.array(0)
    if data is None or data.size == 0:
        return None
    axis = int(node.attrs.get("axis", -1 if opset >= 13 else 1)) % data.ndim
    axes = (axis,) if opset >= 13 else tuple(range(axis, data.ndim))
    count = math.prod(data.shape[a] for a in axes)
    return float(count), "softmax denominator (sum of exp(x - max))"


def _normalization(axes_of: Callable[[gs.Node, np.ndarray], tuple[int, ...] | None], what: str) -> Estimator:
    def estimate(node: gs.Node, inputs: InputValues, opset: int) -> Estimate:
        data = inputs.array(0)
        if data is None or data.size == 0:
            return None
        values = data.astype(np.float64)
        grouped, axes = _grouped(node, values, axes_of)
        if axes is None:
            return None
        with np.errstate(over="ignore", invalid="ignore"):
            count = math.prod(grouped.shape[a] for a in axes) or 1
            mean = grouped.sum(axis=axes, keepdims=True) / count
            sums = max(float(np.abs(grouped).sum(axis=axes).max()), float(((grouped - mean) ** 2).sum(axis=axes).max()),
                       float((grouped**2).sum(axis=axes).max()))
        return sums, what

    return estimate


def _grouped(node: gs.Node, values: np.ndarray, axes_of) -> tuple[np.ndarray, tuple[int, ...] | None]:
    if node.op == "GroupNormalization" and values.ndim >= 2:
        groups = int(node.attrs.get("num_groups", 1))
        if groups <= 0 or values.shape[1] % groups:
            return values, None
        reshaped = values.reshape(values.shape[0], groups, -1)
        return reshaped, (2,)
    return values, axes_of(node, values)


def _layer_norm_axes(node: gs.Node, values: np.ndarray) -> tuple[int, ...]:
    axis = int(node.attrs.get("axis", -1)) % values.ndim
    return tuple(range(axis, values.ndim))


def _spatial_axes(node: gs.Node, values: np.ndarray) -> tuple[int, ...]:
    return tuple(range(2, values.ndim))


def _mvn_axes(node: gs.Node, values: np.ndarray) -> tuple[int, ...]:
    return tuple(int(a) % values.ndim for a in node.attrs.get("axes", [0, 2, 3]))


def _lp_norm(node: gs.Node, inputs: InputValues, opset: int) -> Estimate:
    data = inputs.array(0)
    if data is None or data.size == 0:
        return None
    axis = int(node.attrs.get("axis", -1)) % data.ndim
    p = int(node.attrs.get("p", 2))
    values = np.abs(data.astype(np.float64)) ** (2 if p == 2 else 1)
    return float(values.sum(axis=axis).max()), "norm accumulation"


def _global_average(node: gs.Node, inputs: InputValues, opset: int) -> Estimate:
    data = inputs.array(0)
    if data is None or data.ndim < 3 or data.size == 0:
        return None
    return float(np.abs(data.astype(np.float64)).sum(axis=tuple(range(2, data.ndim))).max()), "pooling sum of |x|"


def _average_pool(node: gs.Node, inputs: InputValues, opset: int) -> Estimate:
    data = inputs.array(0)
    kernel = node.attrs.get("kernel_shape")
    if data is None or not kernel or data.size == 0:
        return None
    return float(math.prod(int(k) for k in kernel) * finite_max_abs(data)), "pooling window sum bound"


def _matmul_bound(inputs: InputValues, a_index: int, b_index: int, trans_a: bool, trans_b: bool) -> float | None:
    """Largest partial sum of A @ B: exact |A| @ |B| for activations, a bound for weights."""
    if not inputs.is_constant(a_index) and not inputs.is_constant(b_index):
        a, b = inputs.array(a_index), inputs.array(b_index)
        if a is None or b is None:
            return None
        a = np.abs(a.astype(np.float32))
        b = np.abs(b.astype(np.float32))
        if trans_a:
            a = np.swapaxes(a, -1, -2)
        if trans_b:
            b = np.swapaxes(b, -1, -2)
        if a.ndim == 1 or b.ndim == 1:
            return float(np.nan_to_num(np.abs(a @ b), posinf=np.inf).max()) if a.size and b.size else 0.0
        with np.errstate(over="ignore", invalid="ignore"):
            product = np.matmul(a, b)
        return float(np.nanmax(product)) if product.size else 0.0
    # Reduction axis of A is its last (first if transposed), of B its second-to-last (last).
    a_axis = -2 if trans_a else -1
    b_axis = -1 if trans_b else -2
    a_sum = inputs.summary(a_index, "max_abs_sum", a_axis)
    b_max = inputs.summary(b_index, "max_abs")
    a_max = inputs.summary(a_index, "max_abs")
    b_sum = inputs.summary(b_index, "max_abs_sum", b_axis)
    bounds = [x * y for x, y in ((a_sum, b_max), (a_max, b_sum)) if x is not None and y is not None]
    return min(bounds) if bounds else None


def _matmul(node: gs.Node, inputs: InputValues, opset: int) -> Estimate:
    bound = _matmul_bound(inputs, 0, 1, False, False)
    return None if bound is None else (bound, "matmul partial sums of |a*b|")


def _gemm(node: gs.Node, inputs: InputValues, opset: int) -> Estimate:
    bound = _matmul_bound(inputs, 0, 1, bool(node.attrs.get("transA", 0)), bool(node.attrs.get("transB", 0)))
    if bound is None:
        return None
    bound *= abs(float(node.attrs.get("alpha", 1.0)))
    bias = inputs.summary(2, "max_abs")
    if bias is not None:
        bound += abs(float(node.attrs.get("beta", 1.0))) * bias
    return bound, "gemm partial sums of |a*b|"


def _conv(node: gs.Node, inputs: InputValues, opset: int) -> Estimate:
    x_max = inputs.summary(0, "max_abs")
    w_sum = inputs.summary(1, "max_abs_sum_rest", 0)
    if x_max is None or w_sum is None:
        return None
    bias = inputs.summary(2, "max_abs") or 0.0
    return x_max * w_sum + bias, "convolution partial sums bound"


ESTIMATORS: dict[str, Estimator] = {
    "ReduceSum": _reduce(np.abs, "partial sums of |x|"),
    "ReduceMean": _reduce(np.abs, "partial sums of |x|"),
    "ReduceL1": _reduce(np.abs, "partial sums of |x|"),
    "ReduceLogSum": _reduce(np.abs, "partial sums of |x|"),
    "ReduceSumSquare": _reduce(np.square, "partial sums of x^2"),
    "ReduceL2": _reduce(np.square, "partial sums of x^2"),
    "ReduceLogSumExp": _reduce(np.exp, "partial sums of exp(x)"),
    "ReduceProd": _reduce_prod,
    "CumSum": _cumsum,
    "Softmax": _softmax,
    "LogSoftmax": _softmax,
    "LayerNormalization": _normalization(_layer_norm_axes, "mean/variance sums over the normalized axes"),
    "GroupNormalization": _normalization(_spatial_axes, "mean/variance sums over each group"),
    "InstanceNormalization": _normalization(_spatial_axes, "mean/variance sums over the spatial axes"),
    "MeanVarianceNormalization": _normalization(_mvn_axes, "mean/variance sums over the normalized axes"),
    "LpNormalization": _lp_norm,
    "GlobalAveragePool": _global_average,
    "AveragePool": _average_pool,
    "MatMul": _matmul,
    "Gemm": _gemm,
    "Conv": _conv,
}


def estimate_internal(node: gs.Node, inputs: InputValues, opset: int) -> Estimate:
    """Largest internal magnitude of ``node`` on this batch, or None if it has no estimator."""
    estimator = ESTIMATORS.get(node.op) if not node.domain else None
    if estimator is None:
        return None
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        return estimator(node, inputs, opset)


def _iter_activations(model: Model, names: list[str], feeds: Iterable[dict[str, np.ndarray]]
                      ) -> Iterator[dict[str, np.ndarray]]:
    """Like ``onnxopt.activations.iter_activations``, with onnxruntime's weight prepacking off.

    Prepacking copies every MatMul/Conv weight into a packed buffer, doubling the memory of
    a model whose external weights onnxruntime would otherwise just memory-map; range
    calibration runs a few batches and does not need the speed.
    """
    probe = with_extra_outputs(model, names)
    options = session_options(optimize=False)
    options.add_session_config_entry("session.disable_prepacking", "1")
    with model_on_disk(probe) as source:
        try:
            session = ort.InferenceSession(source, options, providers=providers_for("cpu"))
        except (ort_state.Fail, ort_state.InvalidGraph, ort_state.NotImplemented, ort_state.InvalidArgument) as error:
            first = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise BadInputError(f"onnxruntime cannot load the model: {first}") from None
    wanted = [output.name for output in session.get_outputs() if output.name in set(names)]
    for feed in feeds:
        # Nothing to expose (no float32 tensor besides the inputs): session.run([]) would return every
        # output instead of none, so there is nothing to run.
        yield dict(zip(wanted, session.run(wanted, feed), strict=True)) if wanted else {}


def collect_ranges(
    model: Model,
    float_tensors: Iterable[str],
    nodes: list[gs.Node],
    feeds: Iterable[dict[str, np.ndarray]],
    max_batches: int,
    source: str,
) -> RangeStats:
    """Run the fp32 ``model`` on ``feeds`` and keep running maxima of ``float_tensors`` (the
    main graph's float32 tensors) and of the internal values of ``nodes`` (main-graph nodes
    with an estimator)."""
    stats = RangeStats(source=source)
    estimated = [node for node in nodes if node.op in ESTIMATORS and not node.domain]
    # Only float32 tensors are exposed (exposing needs a declared type; the others are not
    # candidates anyway); estimators treat a missing input as unknown.
    wanted = set(float_tensors)
    graph_inputs = {tensor.name for tensor in model.graph.inputs}
    exposed = sorted(wanted - graph_inputs)
    cache = ConstantCache()
    opset = model.opset
    current: dict[str, dict[str, np.ndarray]] = {}

    def tap() -> Iterator[dict[str, np.ndarray]]:
        for feed in islice(feeds, max_batches):
            # numpy scalars (a random 0-d bool is np.bool_) are not arrays to onnxruntime
            feed = {name: np.asarray(value) for name, value in feed.items()}
            current["feed"] = feed
            yield feed

    # Summarise the weights estimators need before onnxruntime maps the model: reading a
    # large weight while the runtime holds every page of the model would add to its peak.
    for node in estimated:
        estimate_internal(node, InputValues(node, {}, cache), opset)
    for activations in _iter_activations(model, exposed, tap()):
        stats.batches += 1
        batch = dict(activations)
        batch.update({name: value for name, value in current["feed"].items() if name in wanted})
        for name, value in batch.items():
            if name in wanted and np.issubdtype(np.asarray(value).dtype, np.floating):
                peak = finite_max_abs(np.asarray(value))
                if peak > stats.tensor_max.get(name, -1.0):
                    stats.tensor_max[name] = peak
        for node in estimated:
            result = estimate_internal(node, InputValues(node, batch, cache), opset)
            if result is None:
                continue
            value, what = result
            value = 0.0 if math.isnan(value) else float(value)
            previous = stats.internal_max.get(id(node))
            if previous is None or value > previous[0]:
                stats.internal_max[id(node)] = (value, what)
        del batch, activations
    return stats
