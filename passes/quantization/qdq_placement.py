"""Where Q/DQ go: which nodes are quantized, which tensors get a Q/DQ pair, which share scales.

The placement is a pure plan over the main graph; ``onnxopt.passes.quantization.qdq_rewrite`` applies it.
Rules, and why:

* Compute ops (Conv, ConvTranspose, MatMul, Gemm; optionally Add, Mul, AveragePool,
  GlobalAveragePool, Concat) get Q/DQ on their float activation inputs; constant weights
  become int8 initializers read through a ``DequantizeLinear`` (per channel on the output
  axis); biases of Conv/ConvTranspose/Gemm become int32 at input scale × weight scale.
* Shared scales through data-movement ops: an activation that reaches a quantized op
  through Reshape/Transpose/Slice/MaxPool/... is quantized at the start of the chain too,
  with one scale for the whole chain. Runtimes then move the data in int8 and drop the
  inner DQ→op→Q pairs (they only do so when the scales are equal).
* onnxruntime fuses ``DQ → Conv → Q`` into QLinearConv only when the Conv's output is
  quantized, so for ort targets the output of each quantized Conv/ConvTranspose (or of the
  Relu/Clip right after it, which onnxruntime then folds into the Q) is quantized as well,
  read in dequantized form by all its consumers. TensorRT prefers float outputs of
  weighted ops and instead wants the *residual* input of an Add after a quantized
  Conv quantized, so that Conv + Add fuse (``residual_qdq``).
* Never on graph outputs: a graph output stays the float tensor the model computed;
  only its in-graph consumers read the dequantized copy.
* A tensor that carried mask sentinels (see ``onnxopt.calibration``) is never quantized;
  the op reading it stays float.
* Other float consumers of a quantized activation keep reading the float tensor unless
  the producer needs the Q for fusion: precision for the residual stream of transformers,
  at no speed cost.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import onnx_graphsurgeon as gs

from onnxopt.weight_axes import weight_axis

COMPUTE_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")
OPTIONAL_OPS = ("Add", "Mul", "AveragePool", "GlobalAveragePool", "Concat")
QUANTIZABLE_OPS = COMPUTE_OPS + OPTIONAL_OPS
DEFAULT_OP_TYPES = ("Conv", "MatMul", "Gemm")
# Ops that only move or select values: their output range lies inside their input range.
DATA_MOVEMENT_OPS = frozenset({
    "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Identity", "Slice", "Gather",
    "MaxPool", "GlobalMaxPool", "DepthToSpace", "SpaceToDepth", "Expand", "Tile",
})
# Activations that onnxruntime folds into the following QuantizeLinear.
FOLDABLE_ACTIVATIONS = frozenset({"Relu", "Clip"})
# Ops whose quantized form needs a quantized output to exist at all (QLinear* kernels).
OUTPUT_Q_OPS_ORT = frozenset({"Conv", "ConvTranspose", "Add", "Mul", "AveragePool", "GlobalAveragePool", "Concat"})
WEIGHTED_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})
ALL_CONSUMERS = None


@dataclass(frozen=True)
class Exclusions:
    """Nodes the user keeps in float: by exact name, by op type, or by a name regex."""

    names: frozenset[str] = frozenset()
    op_types: frozenset[str] = frozenset()
    regex: str = ""

    def excludes(self, node: gs.Node) -> bool:
        if node.name in self.names or node.op in self.op_types:
            return True
        return bool(self.regex) and re.search(self.regex, node.name or "") is not None


@dataclass(frozen=True)
class WeightSpec:
    """A constant input of a quantized node, stored int8 (``axis`` None: per tensor)."""

    node: str
    index: int
    axis: int | None


@dataclass(frozen=True)
class BiasSpec:
    """A constant bias stored as int32 at (activation input scale × weight scale)."""

    node: str
    index: int
    activation: str  # the tensor whose scale is the input scale
    weight_index: int
    groups: int = 1  # ConvTranspose with groups repeats the per-channel weight scale


@dataclass
class ActivationSpec:
    """A float tensor that gets one Q/DQ pair; ``consumers`` None means all of them."""

    name: str
    consumers: set[str] | None = field(default_factory=set)


@dataclass
class Placement:
    """The plan for one set of quantized nodes."""

    nodes: list[str]
    activations: dict[str, ActivationSpec]
    weights: list[WeightSpec]
    biases: list[BiasSpec]
    groups: dict[str, str]  # tensor name -> representative name of its shared-scale group

    def group_members(self) -> dict[str, list[str]]:
        members: dict[str, list[str]] = {}
        for name in self.activations:
            members.setdefault(self.groups.get(name, name), []).append(name)
        return members


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, name: str) -> str:
        self.parent.setdefault(name, name)
        while self.parent[name] != name:
            self.parent[name] = self.parent[self.parent[name]]
            name = self.parent[name]
        return name

    def union(self, first: str, second: str) -> None:
        a, b = self.find(first), self.find(second)
        if a != b:
            self.parent[b] = a


def _is_float_variable(tensor: gs.Tensor) -> bool:
    if isinstance(tensor, gs.Constant) or not tensor.name:
        return False
    return tensor.dtype is None or np.dtype(tensor.dtype) == np.float32


def _is_float_constant(tensor: gs.Tensor) -> bool:
    return isinstance(tensor, gs.Constant) and np.dtype(tensor.dtype) == np.float32


@dataclass(frozen=True)
class NodeRole:
    """How one node is quantized: activation slots, weight slot, bias slot, output Q."""

    activations: tuple[int, ...]
    weights: tuple[int, ...]
    bias: int | None
    output_q: bool


def node_role(node: gs.Node, target: str) -> NodeRole | None:
    """The quantization role of a node, or None when it cannot be quantized as is."""
    ort = target != "tensorrt"
    inputs = node.inputs
    if node.op in ("Conv", "ConvTranspose"):
        if len(inputs) < 2 or not _is_float_variable(inputs[0]) or not _is_float_constant(inputs[1]):
            return None
        bias = 2 if len(inputs) > 2 and _is_float_constant(inputs[2]) else None
        return NodeRole((0,), (1,), bias, ort)
    if node.op == "MatMul":
        if not _is_float_variable(inputs[0]):
            return None
        if _is_float_constant(inputs[1]):
            return NodeRole((0,), (1,), None, False)
        if _is_float_variable(inputs[1]):
            return NodeRole((0, 1), (), None, False)
        return None
    if node.op == "Gemm":
        if int(node.attrs.get("transA", 0)) or not _is_float_variable(inputs[0]) or not _is_float_constant(inputs[1]):
            return None
        plain = float(node.attrs.get("alpha", 1.0)) == 1.0 and float(node.attrs.get("beta", 1.0)) == 1.0
        bias = 2 if plain and len(inputs) > 2 and _is_float_constant(inputs[2]) and len(inputs[2].shape) == 1 else None
        # onnxruntime runs DQ -> Gemm as QGemm with a float output, except when a Relu follows:
        # then its float Gemm+Relu fusion fires first and the Gemm stays float. A Q after the
        # Relu makes it QGemm again (the Relu folds into the Q).
        return NodeRole((0,), (1,), bias, ort and _feeds_foldable_activation(node))
    if node.op in ("Add", "Mul"):
        acts = tuple(i for i, t in enumerate(inputs) if _is_float_variable(t))
        consts = tuple(i for i, t in enumerate(inputs) if _is_float_constant(t))
        if not acts or len(acts) + len(consts) != len(inputs):
            return None
        return NodeRole(acts, consts, None, ort)
    if node.op in ("AveragePool", "GlobalAveragePool"):
        return NodeRole((0,), (), None, ort) if _is_float_variable(inputs[0]) else None
    if node.op == "Concat":
        if not all(_is_float_variable(t) for t in inputs):
            return None
        return NodeRole(tuple(range(len(inputs))), (), None, ort)
    return None


def _feeds_foldable_activation(node: gs.Node) -> bool:
    consumers = list(node.outputs[0].outputs) if node.outputs else []
    return len(consumers) == 1 and consumers[0].op in FOLDABLE_ACTIVATIONS


def find_candidates(graph: gs.Graph, op_types: Iterable[str], exclusions: Exclusions, target: str) -> list[str]:
    """Names of the main-graph nodes that the options allow and that can be quantized."""
    wanted = set(op_types)
    names = []
    for node in graph.nodes:
        if node.op not in wanted or not node.name or exclusions.excludes(node):
            continue
        if node_role(node, target) is not None:
            names.append(node.name)
    return names


def _producer(tensor: gs.Tensor) -> gs.Node | None:
    return tensor.inputs[0] if len(tensor.inputs) == 1 else None


def plan_placement(graph: gs.Graph, selected: Iterable[str], target: str,
                   blocked: set[str] | None = None) -> Placement:
    """The Q/DQ plan when exactly the ``selected`` nodes are quantized.

    ``blocked`` names tensors that must stay float (mask sentinels); a selected node that
    would need one of them is left out of the plan.
    """
    blocked = blocked or set()
    by_name = {node.name: node for node in graph.nodes if node.name}
    graph_outputs = {tensor.name for tensor in graph.outputs}
    chosen = [name for name in dict.fromkeys(selected) if name in by_name]
    roles = {name: node_role(by_name[name], target) for name in chosen}
    chosen = [name for name in chosen if roles[name] is not None
              and not any(by_name[name].inputs[i].name in blocked for i in roles[name].activations)]
    activations: dict[str, ActivationSpec] = {}
    unions = _UnionFind()
    weights: list[WeightSpec] = []
    biases: list[BiasSpec] = []

    def want(tensor_name: str, consumer: str | None) -> None:
        spec = activations.setdefault(tensor_name, ActivationSpec(tensor_name))
        if consumer is None:
            spec.consumers = ALL_CONSUMERS
        elif spec.consumers is not ALL_CONSUMERS:
            spec.consumers.add(consumer)

    def walk_back(tensor: gs.Tensor) -> None:
        """Share the scale of ``tensor`` with the data-movement chain that produced it."""
        current = tensor
        seen = set()
        while True:
            producer = _producer(current)
            if producer is None or producer.op not in DATA_MOVEMENT_OPS or not producer.name:
                return
            source = producer.inputs[0] if producer.inputs else None
            if source is None or not _is_float_variable(source) or source.name in blocked or source.name in seen:
                return
            seen.add(source.name)
            want(source.name, producer.name)
            unions.union(current.name, source.name)
            current = source

    for name in chosen:
        node = by_name[name]
        role = roles[name]
        for index in role.activations:
            tensor = node.inputs[index]
            want(tensor.name, name)
            walk_back(tensor)
        if node.op == "Concat":
            for index in role.activations:
                unions.union(node.inputs[0].name, node.inputs[index].name)
        for index in role.weights:
            constant = node.inputs[index]
            per_channel_axis = weight_axis(node, index, len(constant.shape))
            weights.append(WeightSpec(name, index, per_channel_axis))
        if role.bias is not None and target != "tensorrt":  # TensorRT quantizes biases itself; keep them float
            groups = int(node.attrs.get("group", 1)) if node.op == "ConvTranspose" else 1
            biases.append(BiasSpec(name, role.bias, node.inputs[0].name, role.weights[0], groups))
        if role.output_q:
            output = output_q_tensor(node, graph_outputs)
            if output is not None and output.name not in blocked:
                want(output.name, ALL_CONSUMERS)
                if node.op == "Concat":
                    unions.union(node.inputs[0].name, output.name)
    if target == "tensorrt":
        _residual_qdq(graph, set(chosen), activations, want, blocked)
    groups = {name: unions.find(name) for name in activations}
    return Placement(nodes=chosen, activations=activations, weights=weights, biases=biases, groups=groups)


def output_q_tensor(node: gs.Node, graph_outputs: set[str]) -> gs.Tensor | None:
    """The tensor whose Q lets a runtime fuse ``node``: its output, or that of a Relu/Clip after it."""
    if len(node.outputs) != 1:
        return None
    output = node.outputs[0]
    if output.name in graph_outputs:
        return None
    consumers = list(output.outputs)
    if len(consumers) == 1 and consumers[0].op in FOLDABLE_ACTIVATIONS and consumers[0].outputs:
        after = consumers[0].outputs[0]
        clip_ok = consumers[0].op == "Relu" or all(isinstance(t, gs.Constant) or not t.name
                                                    for t in consumers[0].inputs[1:])
        if clip_ok:
            return None if after.name in graph_outputs else after
    return output


def _residual_qdq(graph: gs.Graph, chosen: set[str], activations: dict[str, ActivationSpec], want,
                  blocked: set[str]) -> None:
    """TensorRT: quantize the residual input of an Add that follows a quantized weighted op."""
    for node in graph.nodes:
        if node.op != "Add" or node.name in chosen or len(node.inputs) != 2:
            continue
        if not all(_is_float_variable(t) for t in node.inputs):
            continue
        from_weighted = [_fed_by_quantized_weighted(t, chosen) for t in node.inputs]
        if not any(from_weighted):
            continue
        # Quantize the input that is not the fused conv's output (the second one if both are).
        residual = node.inputs[1] if from_weighted[0] else node.inputs[0]
        if residual.name in blocked or (residual.name in activations and activations[residual.name].consumers is None):
            continue
        want(residual.name, node.name)


def _fed_by_quantized_weighted(tensor: gs.Tensor, chosen: set[str]) -> bool:
    producer = _producer(tensor)
    if producer is not None and producer.op == "BatchNormalization" and producer.inputs:
        producer = _producer(producer.inputs[0])
    return producer is not None and producer.name in chosen and producer.op in WEIGHTED_OPS - {"MatMul"}


def activation_tensors(placement: Placement) -> list[str]:
    """Tensors whose ranges calibration must measure for this placement."""
    return list(placement.activations)
