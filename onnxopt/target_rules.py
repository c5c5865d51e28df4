"""Lint a quantized (Q/DQ) model against what a target runtime accepts.

Why: a QDQ model that onnxruntime runs happily can be rejected by TensorRT, or silently
run in float there. TensorRT's explicit quantization takes Q/DQ pairs only, with
symmetric int8 (zero point 0), constant scales, per-tensor activation scales and
per-channel weight scales only on the output-channel axis, and no Q/DQ on network
outputs. ``check_model`` reports each broken rule as one readable line.

Rules for ``tensorrt``:
- ``quantized-op``: operator-form integer ops (QLinearConv, MatMulInteger,
  DynamicQuantizeLinear, com.microsoft QGemm, ...) — TensorRT reads Q/DQ only;
- ``int8-only``: Q/DQ zero points (or Q output types) other than int8 (uint8 means
  asymmetric activations; int4/float8 are allowed on weight DequantizeLinear only; an
  int32 bias DequantizeLinear is flagged too: TensorRT keeps biases float);
- ``zero-point``: a non-zero zero point (TensorRT is symmetric);
- ``constant-scale``: a scale or zero point that is not a constant;
- ``scale-value``: a scale that is not finite and positive;
- ``activation-per-tensor``: a per-channel QuantizeLinear on an activation;
- ``weight-axis``: a per-channel weight whose axis is not the consumer's output-channel axis;
- ``qdq-pair``: a QuantizeLinear not followed only by DequantizeLinear nodes with the same
  scale and zero point;
- ``output-qdq``: a graph output produced by a QuantizeLinear or DequantizeLinear;
- ``opset``: per-channel Q/DQ below opset 13.
``ort-cpu`` and ``ort-cuda`` keep the rules that make any runtime's Q/DQ model valid
(``constant-scale``, ``scale-value``, ``qdq-pair``'s matching parameters, ``opset``).

CPU rules (``onnxopt.int8_kernels``), checked against the host CPU or one given by flags:
- ``cpu-requirement`` (every target): the model declares it needs a CPU feature
  (``onnxopt.int8.requires``, written for ``--target ort-cpu:vnni``) that this CPU lacks,
  or — declared or not — its int8 weights use a range this CPU's kernels saturate on. One
  line for the whole model: everything that follows from it would be noise;
- ``int8-saturation`` (``ort-cpu``, meaning any CPU): an integer matmul with s8 weights
  beyond ±64, which CPUs without VNNI (AVX2, AVX-512 without VNNI) compute wrongly.

Structured sparsity (``structured_sparsity``, reported by ``check --target tensorrt``, never
a violation): TensorRT's sparse tactics run a Conv/MatMul/Gemm weight faster when every 4
consecutive weights along the reduction axis hold at most 2 non-zeros (2:4) — a Conv's
input channels at each kernel position, MatMul's B axis 0, Gemm's B axis 1 with
``transB`` (else 0); a trailing partial group counts as zero-padded, as TensorRT pads;
weights with fewer than 4 input features are not listed.
Weights behind a DequantizeLinear are read through it (their zeros stay zeros).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from onnxopt.cpu_features import CpuInfo, host_cpu
from onnxopt.errors import BadInputError
from onnxopt.graph_walk import iter_all_graphs
from onnxopt.int8_kernels import REQUIRES_KEY, SAFE_WEIGHT_LIMIT, meets_requirement, saturates_u8s8, saturation_risks
from onnxopt.model_io import Model, load, load_proto, read_constant
from onnxopt.weight_axes import weight_axis

TARGETS = ("tensorrt", "ort-cpu", "ort-cpu:vnni", "ort-cuda")
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
OPERATOR_FORM_OPS = frozenset({
    "QLinearConv", "QLinearMatMul", "MatMulInteger", "ConvInteger", "DynamicQuantizeLinear", "QLinearAdd",
    "QLinearMul", "QLinearAveragePool", "QLinearGlobalAveragePool", "QLinearConcat", "QGemm",
    "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "QLinearLeakyRelu", "QLinearSigmoid", "QLinearSoftmax",
    "MatMulNBits", "QAttention",
})
_LOW_BIT_NAMES = ("int4", "float8_e4m3fn")


@dataclass(frozen=True)
class Violation:
    """One broken rule at one node."""

    rule: str
    node: str
    message: str

    def __str__(self) -> str:
        return f"{self.node}: {self.message} [{self.rule}]"


def _as_model(model_or_path: Model | onnx.ModelProto | str | os.PathLike[str]) -> Model:
    if isinstance(model_or_path, Model):
        return model_or_path
    if isinstance(model_or_path, onnx.ModelProto):
        return load_proto(model_or_path)
    if isinstance(model_or_path, (str, os.PathLike)):
        return load(Path(model_or_path))
    raise BadInputError(f"cannot check a {type(model_or_path).__name__}; give a path or a model")


def _constant_values(tensor: gs.Tensor | None) -> np.ndarray | None:
    """The value of a constant tensor (initializer or Constant node output), else None."""
    if tensor is None:
        return None
    if isinstance(tensor, gs.Constant):
        return np.asarray(read_constant(tensor))
    if len(tensor.inputs) == 1 and tensor.inputs[0].op == "Constant":
        value = tensor.inputs[0].attrs.get("value")
        if isinstance(value, gs.Constant):
            return np.asarray(read_constant(value))
    return None


def _label(node: gs.Node) -> str:
    return f"{node.op} {node.name!r}" if node.name else node.op


def _optional_input(node: gs.Node, index: int) -> gs.Tensor | None:
    if len(node.inputs) > index and node.inputs[index].name:
        return node.inputs[index]
    return None


def _zero_point_dtype(node: gs.Node) -> np.dtype:
    """The integer type a Q produces / a DQ reads."""
    zero = _optional_input(node, 2)
    if zero is not None and zero.dtype is not None:
        return np.dtype(zero.dtype)
    if node.op == "DequantizeLinear" and node.inputs[0].dtype is not None:
        return np.dtype(node.inputs[0].dtype)
    if node.op == "QuantizeLinear" and "output_dtype" in node.attrs and int(node.attrs["output_dtype"]):
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(int(node.attrs["output_dtype"])))
    return np.dtype(np.uint8)  # QuantizeLinear's default output type


def _dtype_name(dtype: np.dtype) -> str:
    return getattr(dtype, "name", str(dtype))




def _normal_axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


class _Checker:
    def __init__(self, model: Model, target: str) -> None:
        self.model = model
        self.target = target
        self.strict = target == "tensorrt"
        self.violations: list[Violation] = []

    def add(self, rule: str, node: gs.Node | str, message: str) -> None:
        self.violations.append(Violation(rule, node if isinstance(node, str) else _label(node), message))

    def run(self) -> list[Violation]:
        graph_outputs = {tensor.name for tensor in self.model.graph.outputs}
        for graph in iter_all_graphs(self.model.graph):
            for node in graph.nodes:
                if node.op in OPERATOR_FORM_OPS and self.strict:
                    self.add("quantized-op", node, f"operator-form int8 op {node.op}; TensorRT reads Q/DQ pairs only")
                if node.op in QDQ_OPS:
                    self._check_qdq(node, graph_outputs if graph is self.model.graph else set())
        return self.violations

    def _check_qdq(self, node: gs.Node, graph_outputs: set[str]) -> None:
        scale_tensor = _optional_input(node, 1)
        zero_tensor = _optional_input(node, 2)
        scale = _constant_values(scale_tensor)
        zero = _constant_values(zero_tensor) if zero_tensor is not None else None
        if scale is None or (zero_tensor is not None and zero is None):
            self.add("constant-scale", node, "scale and zero point must be constants")
        if scale is not None and (not np.all(np.isfinite(scale)) or np.any(scale <= 0)):
            self.add("scale-value", node, "scale must be finite and positive")
        per_channel = scale is not None and scale.size > 1
        if per_channel and self.model.opset < 13:
            self.add("opset", node, f"per-channel Q/DQ needs opset 13+, model has {self.model.opset}")
        if node.outputs and node.outputs[0].name in graph_outputs and self.strict:
            self.add("output-qdq", node, f"produces graph output {node.outputs[0].name!r}; keep outputs float")
        if node.op == "QuantizeLinear":
            self._check_quantize(node, scale, zero, per_channel)
        else:
            self._check_dequantize(node, scale, per_channel)

    def _check_type_and_zero(self, node: gs.Node, zero: np.ndarray | None, weight: bool) -> None:
        if not self.strict:
            return
        dtype = _zero_point_dtype(node)
        allowed_low_bit = weight and _dtype_name(dtype) in _LOW_BIT_NAMES
        if dtype == np.int32:
            self.add("int8-only", node, "int32 (bias) quantization; TensorRT takes float biases, quantizes them itself")
            return
        if dtype != np.int8 and not allowed_low_bit:
            detail = "asymmetric uint8" if dtype == np.uint8 else _dtype_name(dtype)
            self.add("int8-only", node, f"{detail} quantization; TensorRT needs symmetric int8 (zero point 0)")
            return
        if zero is not None and np.any(zero.astype(np.float64) != 0):
            self.add("zero-point", node, "non-zero zero point; TensorRT is symmetric (zero point 0)")

    def _check_quantize(self, node: gs.Node, scale: np.ndarray | None, zero: np.ndarray | None,
                        per_channel: bool) -> None:
        source = node.inputs[0]
        is_weight = _constant_values(source) is not None
        self._check_type_and_zero(node, zero, weight=is_weight)
        if per_channel and not is_weight and self.strict:
            self.add("activation-per-tensor", node, "per-channel scale on an activation; TensorRT takes per-tensor")
        consumers = list(node.outputs[0].outputs) if node.outputs else []
        if not consumers and self.strict:
            self.add("qdq-pair", node, "QuantizeLinear output is not read by a DequantizeLinear")
        for consumer in consumers:
            if consumer.op != "DequantizeLinear":
                if self.strict:
                    self.add("qdq-pair", node,
                             f"QuantizeLinear feeds {consumer.op} {consumer.name!r}, not a DequantizeLinear")
                continue
            other_scale = _constant_values(_optional_input(consumer, 1))
            other_zero = _constant_values(_optional_input(consumer, 2))
            same_scale = scale is not None and other_scale is not None and np.array_equal(scale, other_scale)
            zeros = [z if z is not None else np.zeros(1) for z in (zero, other_zero)]
            same_zero = np.array_equal(zeros[0].astype(np.float64).reshape(-1), zeros[1].astype(np.float64).reshape(-1))
            if not (same_scale and same_zero):
                self.add("qdq-pair", node, f"DequantizeLinear {consumer.name!r} uses a different scale or zero point")
            elif per_channel and int(node.attrs.get("axis", 1)) != int(consumer.attrs.get("axis", 1)):
                self.add("qdq-pair", node, f"DequantizeLinear {consumer.name!r} uses a different axis")

    def _check_dequantize(self, node: gs.Node, scale: np.ndarray | None, per_channel: bool) -> None:
        source = node.inputs[0]
        weight_values = _constant_values(source)
        zero = _constant_values(_optional_input(node, 2))
        producer = source.inputs[0] if len(source.inputs) == 1 else None
        if weight_values is None and producer is not None and producer.op == "QuantizeLinear":
            return  # the pair is checked at its QuantizeLinear
        self._check_type_and_zero(node, zero, weight=weight_values is not None)
        if weight_values is None:
            if self.strict and producer is not None and producer.op not in QDQ_OPS:
                self.add("qdq-pair", node, "DequantizeLinear reads a tensor that no QuantizeLinear produced")
            return
        if not per_channel or not self.strict or ("block_size" in node.attrs and int(node.attrs["block_size"])):
            return
        axis = _normal_axis(int(node.attrs.get("axis", 1)), weight_values.ndim)
        for consumer in node.outputs[0].outputs:
            slots = [index for index, tensor in enumerate(consumer.inputs) if tensor is node.outputs[0]]
            for slot in slots:
                wanted = weight_axis(consumer, slot, weight_values.ndim)
                if wanted is not None and axis != wanted:
                    self.add("weight-axis", node, f"per-channel axis {axis}, but {consumer.op} {consumer.name!r} "
                                                  f"has its output channels on axis {wanted}")


def cpu_violations(model: Model, target: str, cpu: CpuInfo) -> list[Violation]:
    """What the model's int8 nodes assume of the CPU, against ``cpu`` and against ``target``."""
    violations = []
    risks = saturation_risks(model)
    requirement = model.metadata_props.get(REQUIRES_KEY, "")
    where = "this host" if cpu.source == "host" else "the given CPU"
    if requirement and not meets_requirement(requirement, cpu):
        violations.append(Violation("cpu-requirement", "model", (
            f"built for CPUs with {requirement.replace('|', ' or ')} ({REQUIRES_KEY}); {where}, {cpu.describe()}, "
            "has none: its int8 kernels saturate full-range weights, so outputs would be wrong here "
            "(re-quantize with --target ort-cpu to run on any CPU)")))
    elif risks and saturates_u8s8(cpu):
        violations.append(Violation("cpu-requirement", "model", (
            f"{len(risks)} int8 node(s) use weights beyond ±{SAFE_WEIGHT_LIMIT} (e.g. {risks[0]}); {where}, "
            f"{cpu.describe()}, adds u8×s8 products in saturating int16, so outputs would be wrong here")))
    if target == "ort-cpu":
        violations.extend(Violation("int8-saturation", f"{risk.op} {risk.node!r}",
                                    f"{risk}: wrong on CPUs without VNNI; --target ort-cpu means any CPU")
                          for risk in risks)
    return violations


def check_model(model_or_path: Model | onnx.ModelProto | str | os.PathLike[str], target: str,
                cpu: CpuInfo | None = None) -> list[Violation]:
    """Every violation of ``target``'s rules in a model (empty list: the model passes).

    ``cpu``: the CPU the model must run right on (default: this host).
    """
    if target not in TARGETS:
        raise BadInputError(f"unknown target {target!r} (choose from {', '.join(TARGETS)})")
    model = _as_model(model_or_path)
    runtime = target.partition(":")[0]
    violations = cpu_violations(model, target, cpu or host_cpu())
    return violations + _Checker(model, runtime).run()
    return _Checker(_as_model(model_or_path), target).run()


@dataclass(frozen=True)
class WeightSparsity:
    """How one weight stands against an N:M pattern along its reduction axis."""

    node: str
    op: str
    weight: str
    reduction_axis: int
    satisfies: bool
    group_fraction: float  # share of N:M groups that hold at most N non-zeros
    zero_fraction: float

    def __str__(self) -> str:
        verdict = "satisfies" if self.satisfies else f"{self.group_fraction:.0%} of groups"
        return (f"{self.node}: {self.weight} ({self.op}, reduction axis {self.reduction_axis}): {verdict}, "
                f"{self.zero_fraction:.0%} zeros")


def nm_group_fraction(weights_kn: np.ndarray, n: int, m: int) -> float:
    """Share of ``m``-row groups (per column, rows zero-padded to a multiple of ``m``) with at most ``n`` non-zeros."""
    nonzero = np.asarray(weights_kn) != 0
    rows = nonzero.shape[0]
    padded = -rows % m
    if padded:
        nonzero = np.concatenate([nonzero, np.zeros((padded, nonzero.shape[1]), dtype=bool)])
    counts = nonzero.reshape(-1, m, nonzero.shape[1]).sum(axis=1)
    return float(np.mean(counts <= n)) if counts.size else 1.0


def reduction_rows(node: gs.Node, values: np.ndarray) -> tuple[np.ndarray, int] | None:
    """A weight as ``[K, columns]`` with K along the axis N:M groups run on, and that axis (None: not a weight)."""
    if node.op == "MatMul" and values.ndim == 2:
        return values, 0
    if node.op == "Gemm" and values.ndim == 2:
        return (values.T, 1) if int(node.attrs.get("transB", 0)) else (values, 0)
    if node.op == "Conv" and values.ndim >= 3:
        return np.moveaxis(values, 1, 0).reshape(values.shape[1], -1), 1
    return None


def _weight_values(tensor: gs.Tensor) -> tuple[str, np.ndarray] | None:
    values = _constant_values(tensor)
    if values is not None:
        return tensor.name, values
    if len(tensor.inputs) == 1 and tensor.inputs[0].op == "DequantizeLinear":
        source = tensor.inputs[0].inputs[0]
        values = _constant_values(source)
        if values is not None:
            return source.name, values
    return None


def structured_sparsity(model_or_path: Model | onnx.ModelProto | str | os.PathLike[str], n: int = 2,
                        m: int = 4) -> list[WeightSparsity]:
    """Every Conv/MatMul/Gemm constant weight of the main graph against N:M along its reduction axis."""
    model = _as_model(model_or_path)
    entries = []
    for node in model.graph.nodes:
        if node.op not in ("Conv", "MatMul", "Gemm") or len(node.inputs) < 2:
            continue
        found = _weight_values(node.inputs[1])
        if found is None:
            continue
        name, values = found
        view = reduction_rows(node, np.asarray(values))
        if view is None:
            continue
        rows, axis = view
        if rows.shape[0] < m:
            continue  # fewer than m input features: the pattern holds trivially and no sparse kernel applies
        fraction = nm_group_fraction(rows, n, m)
        entries.append(WeightSparsity(_label(node), node.op, name, axis, fraction == 1.0, fraction,
                                      float(np.mean(np.asarray(values) == 0))))
    return entries
