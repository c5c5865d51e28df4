"""Decide which nodes run in half precision and which stay fp32, and why.

Every node starts in half unless something forces fp32: a ``keep_fp32`` selector, an op
that needs fp32 (``op_rules``), unknown tensor types, a weight beyond the half range, an
activation or internal value beyond a safe fraction of it (``ranges``), or "index
arithmetic" (float values computed from integers, such as positions, sizes and masks,
which half cannot represent exactly past 2048). A forced control-flow node keeps its
bodies in fp32 too; a local function runs in half only if all its calls do.

Then cheap nodes follow their neighbours so that the graph is not full of casts:
source-like nodes (Cast, Constant, ConstantOfShape, Random*) run in half only if all
their consumers want half, and data-movement nodes (Reshape, Transpose, Gather, ...) run
in fp32 when their inputs are all fp32 or their consumers all want fp32. These rules
only ever move nodes from half to fp32, so they reach a fixed point.
"""

from __future__ import annotations

import math
import re
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

import ml_dtypes
import numpy as np
import onnx
import onnx_graphsurgeon as gs

from onnxopt.errors import BadInputError
from onnxopt.passes.precision.op_rules import (
    CONTROL_FLOW_OPS,
    DATA_MOVEMENT_OPS,
    FLOAT,
    FOLLOW_CONSUMERS_OPS,
    OpTyping,
    half_type_name,
    op_typing,
)
from onnxopt.passes.precision.ranges import RangeStats
from onnxopt.passes.precision.tensor_types import NON_TENSOR, ScopedGraph, TypeTable

HALF, FP32, ANY = "half", "fp32", "any"


@dataclass(frozen=True)
class Selector:
    """A ``keep_fp32`` selector: ``op:Type`` (exact op type), ``name:PREFIX`` (node names
    starting with PREFIX) or ``re:REGEX`` (node names matched by ``re.search``)."""

    kind: str
    pattern: str

    def matches(self, node: gs.Node) -> bool:
        if self.kind == "op":
            return node.op == self.pattern
        if self.kind == "name":
            return (node.name or "").startswith(self.pattern)
        return re.search(self.pattern, node.name or "") is not None

    def __str__(self) -> str:
        return f"{self.kind}:{self.pattern}"


def parse_selectors(items: Iterable[str]) -> list[Selector]:
    """Parse ``op:X``, ``name:PREFIX`` and ``re:REGEX`` selectors; BadInputError otherwise."""
    selectors = []
    for item in items:
        kind, sep, pattern = item.partition(":")
        if not sep or kind not in ("op", "name", "re") or not pattern:
            raise BadInputError(f"keep_fp32 selector {item!r}: expected op:TYPE, name:PREFIX or re:REGEX")
        if kind == "re":
            try:
                re.compile(pattern)
            except re.error as error:
                raise BadInputError(f"keep_fp32 selector {item!r}: bad regular expression ({error})") from None
        selectors.append(Selector(kind, pattern))
    return selectors


@dataclass
class WeightStats:
    """Magnitudes of one constant: largest finite |w|, and how many non-zeros flush to zero in half."""

    max_abs: float
    flushed: int
    count: int


def weight_stats(values: np.ndarray, half_np: np.dtype) -> WeightStats:
    data = np.asarray(values)
    if data.size == 0:
        return WeightStats(0.0, 0, 0)
    magnitudes = np.abs(data.astype(np.float32, copy=False))
    max_abs = float(np.max(magnitudes, where=np.isfinite(magnitudes), initial=0.0))
    smallest = float(ml_dtypes.finfo(half_np).smallest_subnormal)
    flushed = int(np.count_nonzero((magnitudes > 0) & (magnitudes < smallest / 2)))
    return WeightStats(max_abs, flushed, int(data.size))


@dataclass
class PlanOptions:
    half: int
    keep_io_types: bool
    selectors: list[Selector]
    activation_limit: float
    half_max: float


@dataclass
class Plan:
    """The decision: each node's mode, its slot typing, and why fp32 nodes stay fp32."""

    graphs: list[ScopedGraph]
    types: TypeTable
    options: PlanOptions
    half: dict[int, bool] = field(default_factory=dict)
    typing: dict[int, OpTyping] = field(default_factory=dict)
    reasons: dict[int, str] = field(default_factory=dict)  # forced fp32 reasons
    followers: set[int] = field(default_factory=set)  # moved to fp32 to follow neighbours
    function_half: dict[tuple[str, str], bool] = field(default_factory=dict)
    node_graph: dict[int, ScopedGraph] = field(default_factory=dict)
    graph_io: dict[int, list[tuple[ScopedGraph, str]]] = field(default_factory=dict)
    relevant: set[int] = field(default_factory=set)

    # ---- types -------------------------------------------------------------------------
    def orig_type(self, graph: ScopedGraph, tensor: gs.Tensor) -> int | None:
        """The element type the tensor had before conversion (None when unknown)."""
        if isinstance(tensor, gs.Constant):
            return _onnx_dtype(tensor.dtype)
        found = self.types.get(graph.scope, tensor.name)
        if found is not None:
            return found
        if getattr(tensor, "type", "tensor_type") != "tensor_type":
            return NON_TENSOR
        return _onnx_dtype(tensor.dtype)

    def is_float(self, graph: ScopedGraph, tensor: gs.Tensor) -> bool:
        return bool(tensor.name) and self.orig_type(graph, tensor) == FLOAT

    # ---- modes -------------------------------------------------------------------------
    def io_half(self, graph: ScopedGraph) -> bool:
        """Whether the float32 inputs/outputs of ``graph`` are half after conversion."""
        if graph.owner is not None:
            return self.half.get(id(graph.owner), False)
        if graph.is_function_body:
            return self.function_half.get(_function_key(graph.function), False)
        return not self.options.keep_io_types

    def input_want(self, node: gs.Node, index: int) -> str:
        typing = self.typing.get(id(node))
        if typing is None or index in typing.any_inputs:
            return ANY
        if self.half.get(id(node)) and index in typing.half_inputs:
            return HALF
        return FP32

    def output_half(self, node: gs.Node, index: int) -> bool:
        typing = self.typing.get(id(node))
        return bool(typing and self.half.get(id(node)) and index in typing.half_outputs)

    def produced(self, tensor: gs.Tensor) -> str | None:
        """HALF/FP32 for a float32 Variable after conversion; None for constants (either)."""
        if isinstance(tensor, gs.Constant):
            return None
        if tensor.inputs:
            producer = tensor.inputs[0]
            index = next(i for i, out in enumerate(producer.outputs) if out is tensor)
            return HALF if self.output_half(producer, index) else FP32
        for graph, role in self.graph_io.get(id(tensor), []):
            if role == "in":
                return HALF if self.io_half(graph) else FP32
        return FP32

    def consumer_wants(self, tensor: gs.Tensor) -> list[str]:
        """What every reader of ``tensor`` wants: node input slots and graph outputs."""
        wants = []
        for consumer in tensor.outputs:
            for index, candidate in enumerate(consumer.inputs):
                if candidate is tensor:
                    wants.append(self.input_want(consumer, index))
        for graph, role in self.graph_io.get(id(tensor), []):
            if role == "out":
                wants.append(HALF if self.io_half(graph) else FP32)
        return wants

    def kept_nodes(self) -> list[tuple[gs.Node, str]]:
        """Nodes kept in fp32 with float work to do, and why."""
        kept = []
        for graph in self.graphs:
            for node in graph.graph.nodes:
                key = id(node)
                if key not in self.relevant or self.half.get(key):
                    continue
                if key not in self.reasons and node.op in FOLLOW_CONSUMERS_OPS:
                    continue  # a cast or constant feeding fp32 readers: not compute kept in fp32
                kept.append((node, self.reasons.get(key) or "follows its fp32 neighbours (avoids casts)"))
        return kept


def _function_key(function: gs.Function | None) -> tuple[str, str]:
    assert function is not None
    return (function.domain or "", function.name)


def _onnx_dtype(dtype) -> int | None:
    if dtype is None:
        return None
    if isinstance(dtype, int):
        return dtype
    try:
        return int(onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dtype)))
    except (TypeError, KeyError, ValueError):
        return None


def _fmt(value: float) -> str:
    return "inf" if math.isinf(value) else f"{value:.4g}"


class Planner:
    """Builds a Plan from types, weight magnitudes and activation ranges."""

    def __init__(
        self,
        graphs: list[ScopedGraph],
        types: TypeTable,
        options: PlanOptions,
        opset: int,
        constant_stats: dict[int, WeightStats],
        ranges: RangeStats | None,
    ) -> None:
        self.plan = Plan(graphs=graphs, types=types, options=options)
        self.opset = opset
        self.constant_stats = constant_stats
        self.ranges = ranges
        self.functions = {
            _function_key(sg.function): sg for sg in graphs if sg.is_function_body
        }
        self.calls: dict[tuple[str, str], list[gs.Node]] = {key: [] for key in self.functions}

    # ---- public ------------------------------------------------------------------------
    def build(self) -> Plan:
        plan = self.plan
        self._index()
        self._type_nodes()
        self._force_static()
        self._force_ranges()
        self._force_index_arithmetic()
        for key in self.functions:
            plan.function_half[key] = key not in plan.types.untyped_functions and bool(self.calls[key])
        self._force_bodies()
        for graph in plan.graphs:
            for node in graph.graph.nodes:
                plan.half[id(node)] = id(node) in plan.relevant and id(node) not in plan.reasons
        while True:
            self._refine(self._all_nodes())
            if not self._functions_consistent():
                continue
            break
        return plan

    # ---- setup -------------------------------------------------------------------------
    def _all_nodes(self) -> list[gs.Node]:
        return [node for graph in self.plan.graphs for node in graph.graph.nodes]

    def _index(self) -> None:
        plan = self.plan
        for graph in plan.graphs:
            for node in graph.graph.nodes:
                plan.node_graph[id(node)] = graph
                key = (node.domain or "", node.op)
                if key in self.calls:
                    self.calls[key].append(node)
            for tensor in graph.graph.inputs:
                plan.graph_io.setdefault(id(tensor), []).append((graph, "in"))
            for tensor in graph.graph.outputs:
                plan.graph_io.setdefault(id(tensor), []).append((graph, "out"))

    def _type_nodes(self) -> None:
        plan = self.plan
        for graph in plan.graphs:
            for node in graph.graph.nodes:
                float_in = [plan.is_float(graph, t) for t in node.inputs]
                float_out = [plan.is_float(graph, t) for t in node.outputs]
                is_call = (node.domain or "", node.op) in self.functions
                typing = op_typing(node, float_in, float_out, self.opset, plan.options.half, is_call)
                plan.typing[id(node)] = typing
                structural = is_call or node.op in CONTROL_FLOW_OPS
                if structural or ((typing.changes_anything or typing.refusal) and (any(float_in) or any(float_out))):
                    plan.relevant.add(id(node))

    def _force(self, node: gs.Node, reason: str) -> None:
        self.plan.reasons.setdefault(id(node), reason)

    # ---- forced fp32 -------------------------------------------------------------------
    def _force_static(self) -> None:
        plan = self.plan
        half_name = half_type_name(plan.options.half)
        for graph in plan.graphs:
            for node in graph.graph.nodes:
                key = id(node)
                if key not in plan.relevant:
                    continue
                for selector in plan.options.selectors:
                    if selector.matches(node):
                        self._force(node, f"pinned by keep_fp32 selector {selector}")
                        break
                typing = plan.typing[key]
                if typing.refusal:
                    self._force(node, typing.refusal)
                for tensor in list(node.inputs) + list(node.outputs):
                    if not tensor.name:
                        continue
                    elem = plan.orig_type(graph, tensor)
                    if elem is None:
                        self._force(node, f"unknown type of tensor {tensor.name!r}")
                    elif elem == NON_TENSOR:
                        self._force(node, f"{tensor.name!r} is a sequence/optional value")
                fkey = (node.domain or "", node.op)
                if fkey in plan.types.untyped_functions:
                    self._force(node, f"local function {fkey[1]} stays fp32: {plan.types.untyped_functions[fkey]}")
                for index in typing.half_inputs:
                    stats = self._constant_stats(node.inputs[index])
                    if stats is not None and stats.max_abs > plan.options.half_max:
                        self._force(node, f"weight {node.inputs[index].name!r} exceeds the {half_name} range "
                                          f"(max |w| = {_fmt(stats.max_abs)})")
                if node.op in ("Constant", "ConstantOfShape"):
                    stats = self._attribute_stats(node)
                    if stats is not None and stats.max_abs > plan.options.half_max:
                        self._force(node, f"value exceeds the {half_name} range (max |w| = {_fmt(stats.max_abs)})")

    def _constant_stats(self, tensor: gs.Tensor) -> WeightStats | None:
        if isinstance(tensor, gs.Constant):
            return self.constant_stats.get(id(tensor))
        if tensor.inputs and tensor.inputs[0].op in ("Constant", "ConstantOfShape"):
            return self._attribute_stats(tensor.inputs[0])
        return None

    def _attribute_stats(self, node: gs.Node) -> WeightStats | None:
        value = node.attrs.get("value")
        if isinstance(value, gs.Constant):
            return self.constant_stats.get(id(value))
        return None

    def _force_ranges(self) -> None:
        plan = self.plan
        if self.ranges is None:
            return
        limit = plan.options.activation_limit
        observed = self.ranges.tensor_max
        for graph in plan.graphs:
            if graph.scope is not None:
                continue
            for node in graph.graph.nodes:
                key = id(node)
                if key not in plan.relevant:
                    continue
                typing = plan.typing[key]
                slots = [node.inputs[i] for i in sorted(typing.half_inputs)]
                slots += [node.outputs[i] for i in sorted(typing.half_outputs)]
                for tensor in slots:
                    if isinstance(tensor, gs.Constant):
                        continue
                    peak = observed.get(tensor.name)
                    if peak is not None and peak > limit:
                        self._force(node, f"activation {tensor.name!r} reaches {_fmt(peak)} (limit {_fmt(limit)})")
                        break
                internal = self.ranges.internal_max.get(key)
                if internal is not None and internal[0] > limit and typing.half_inputs:
                    self._force(node, f"{internal[1]} reach {_fmt(internal[0])} (limit {_fmt(limit)})")

    def _force_index_arithmetic(self) -> None:
        """Float computations fed only by integers (and constants) stay fp32."""
        plan = self.plan
        derived: set[int] = set()
        neutral_ops = ("Constant", "ConstantOfShape")
        for graph in plan.graphs:
            for node in graph.graph.nodes:
                float_outs = [t for t in node.outputs if plan.is_float(graph, t)]
                if not float_outs:
                    continue
                if node.op in ("Cast", "CastLike") and node.inputs and node.inputs[0].name:
                    source = plan.orig_type(graph, node.inputs[0])
                    if source is not None and source not in (FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16,
                                                             onnx.TensorProto.BFLOAT16, NON_TENSOR):
                        derived.update(id(t) for t in float_outs)
                    continue
                if node.op == "Range":
                    derived.update(id(t) for t in float_outs)
                    continue
                if node.op in neutral_ops or id(node) not in plan.relevant:
                    continue
                statuses = []
                for tensor in node.inputs:
                    if not plan.is_float(graph, tensor):
                        continue
                    if isinstance(tensor, gs.Constant) or (tensor.inputs and tensor.inputs[0].op in neutral_ops):
                        continue
                    statuses.append(id(tensor) in derived)
                if statuses and all(statuses):
                    derived.update(id(t) for t in float_outs)
                    self._force(node, "index arithmetic: float values computed from integers")

    def _force_bodies(self) -> None:
        """Bodies of forced control-flow nodes, and functions that cannot convert, stay fp32."""
        plan = self.plan
        for graph in plan.graphs:
            owner = graph.owner
            if owner is not None and id(owner) in plan.reasons:
                for node in graph.graph.nodes:
                    self._force(node, f"inside fp32 {owner.op} node {owner.name!r}")
        for key in self.functions:
            if not plan.function_half[key]:
                self._force_function(key, plan.types.untyped_functions.get(key, "it is never called"))

    def _force_function(self, key: tuple[str, str], why: str) -> None:
        plan = self.plan
        plan.function_half[key] = False
        for graph in plan.graphs:
            if graph.function is not None and _function_key(graph.function) == key:
                for node in graph.graph.nodes:
                    self._force(node, f"inside function {key[1]}, which stays fp32")
                    plan.half[id(node)] = False
        for call in self.calls[key]:
            self._force(call, f"local function {key[1]} stays fp32: {why}")
            plan.half[id(call)] = False

    def _functions_consistent(self) -> bool:
        plan = self.plan
        consistent = True
        for key, calls in self.calls.items():
            if plan.function_half.get(key) and any(not plan.half.get(id(call)) for call in calls):
                self._force_function(key, "another of its calls runs in fp32")
                consistent = False
        return consistent

    # ---- neighbours --------------------------------------------------------------------
    def _should_follow_fp32(self, node: gs.Node) -> bool:
        plan = self.plan
        typing = plan.typing[id(node)]
        outputs = [node.outputs[i] for i in typing.half_outputs]
        consumer_wants = [want for out in outputs for want in plan.consumer_wants(out)]
        if node.op in FOLLOW_CONSUMERS_OPS and not node.domain:
            return FP32 in consumer_wants
        produced = [plan.produced(node.inputs[i]) for i in typing.half_inputs]
        reads_constants = None in produced
        produced = [p for p in produced if p is not None]
        all_fp32_in = bool(produced) and HALF not in produced
        all_fp32_out = bool(consumer_wants) and all(want == FP32 for want in consumer_wants)
        if node.op in CONTROL_FLOW_OPS or (node.domain or "", node.op) in self.calls:
            return False
        if (node.op in DATA_MOVEMENT_OPS and not node.domain) or (not typing.half_outputs and typing.half_inputs):
            return all_fp32_in or all_fp32_out
        # Compute between fp32 neighbours on both sides would only add a cast in and out;
        # nodes with weights still convert (the weights halve).
        return all_fp32_in and all_fp32_out and not reads_constants

    def _refine(self, nodes: list[gs.Node]) -> None:
        plan = self.plan
        queue = deque(nodes)
        queued = {id(node) for node in nodes}
        while queue:
            node = queue.popleft()
            queued.discard(id(node))
            if not plan.half.get(id(node)) or node.op in ("If", "Loop", "Scan"):
                continue
            if not self._should_follow_fp32(node):
                continue
            plan.half[id(node)] = False
            plan.followers.add(id(node))
            neighbours = [producer for t in node.inputs for producer in t.inputs]
            neighbours += [consumer for t in node.outputs for consumer in t.outputs]
            for neighbour in neighbours:
                if id(neighbour) not in queued:
                    queued.add(id(neighbour))
                    queue.append(neighbour)
