"""Coupled dimensions: every tensor, weight and shape constant that must shrink together.

Removing hidden unit ``j`` of an FFN means removing column ``j`` of the first weight, entry
``j`` of its bias, element ``j`` of every activation on the way, and row ``j`` of the second
weight — and nothing else may still expect the old width. Torch-Pruning and NNCF call this
a dependency graph; here it is traced on the ONNX graph itself. Starting from one *site*
(a tensor and an axis), rules per op say which other tensors carry the same units along
which axis: elementwise ops merge the operands into one group (a per-channel constant is
sliced, a broadcast one is left alone), Transpose moves the axis, Reshape/Flatten merge or
split it (``[B, S, H·D] ↔ [B, S, H, D]``: a head is a run of ``D`` indices), Split/Concat
shift it by an offset (a fused QKV weight holds the heads three times), a depthwise Conv
passes channels through and changes its ``group``. The trace stops at *producers*
(MatMul/Gemm/Conv whose output channels are the units: their weight columns and bias go)
and *consumers* (MatMul/Gemm/Conv that reduce over the units: their weight rows go).

Anything else — an unknown op, the normalised axis of LayerNormalization, a graph input or
output, a Shape that reads the width, a residual Add whose other operand belongs to a
different producer chain that ends in one of those — refuses the whole group with a
reason, so a candidate is either rewritten consistently everywhere or not at all.

A unit is a run of indices along an axis: ``Segment(offset, unit_size)`` puts unit ``u`` at
``offset + u·unit_size … + unit_size``. A site may hold several segments (the input of
GPT-2's QKV Split holds the heads at offsets 0, H·D and 2·H·D).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import onnx_graphsurgeon as gs

from onnxopt.graph_edit import constant_array, constant_shape, is_standard_op, producer
from onnxopt.graph_walk import node_subgraphs
from onnxopt.shape_info import Dim, TensorInfo, known_shape

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Segment:
    """Unit ``u`` occupies indices ``offset + u·unit_size`` up to ``+ unit_size`` along a site's axis."""

    offset: int
    unit_size: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "offset", int(self.offset))
        object.__setattr__(self, "unit_size", int(self.unit_size))

    def indices(self, units: np.ndarray) -> np.ndarray:
        units = np.asarray(units, dtype=np.int64).reshape(-1, 1)
        return (self.offset + units * self.unit_size + np.arange(self.unit_size)).reshape(-1)


def removed_indices(segments: Iterable[Segment], removed_units: np.ndarray) -> np.ndarray:
    """Every index of an axis that belongs to a removed unit, sorted."""
    parts = [segment.indices(removed_units) for segment in segments]
    return np.unique(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.int64)


def kept_indices(length: int, segments: Iterable[Segment], removed_units: np.ndarray) -> np.ndarray:
    """The indices of an axis of ``length`` that stay when ``removed_units`` go."""
    return np.setdiff1d(np.arange(length, dtype=np.int64), removed_indices(segments, removed_units))


@dataclass
class Site:
    """A tensor whose ``axis`` (of ``length``) carries the group's units at ``segments``."""

    tensor: gs.Tensor
    axis: int
    length: int
    segments: set[Segment]


@dataclass(frozen=True)
class ConstantSlice:
    """A constant input of a node loses the removed units' indices along ``axis``."""

    node: gs.Node
    slot: int
    axis: int
    length: int
    segments: frozenset[Segment]


@dataclass
class Consumer:
    """A node that reduces over the units: its weight loses rows (and can be refitted).

    ``rows_per_index``: rows of the ``[K, N]`` weight view per index of the input axis
    (a Conv kernel's ``kh·kw`` positions of one input channel).
    """

    node: gs.Node
    slot: int
    weight_slot: int
    weight_axis: int
    length: int
    segments: frozenset[Segment]
    rows_per_index: int = 1

    @property
    def input(self) -> gs.Tensor:
        return self.node.inputs[self.slot]

    def unit_rows(self, units: int) -> np.ndarray:
        """``[units, rows]``: the rows of the ``[K, N]`` weight view that each unit owns."""
        ordered = sorted(self.segments, key=lambda segment: segment.offset)
        per_unit = []
        for unit in range(units):
            indices = np.concatenate([segment.indices(np.array([unit])) for segment in ordered])
            per_unit.append((indices[:, None] * self.rows_per_index + np.arange(self.rows_per_index)).reshape(-1))
        return np.stack(per_unit)


@dataclass
class Group:
    """One coupled dimension: its units, every site, and every edit that removing units needs."""

    units: int
    sites: dict[int, Site] = field(default_factory=dict)
    slices: dict[tuple[int, int, int], ConstantSlice] = field(default_factory=dict)
    producers: dict[int, gs.Node] = field(default_factory=dict)
    consumers: dict[int, Consumer] = field(default_factory=dict)
    reshapes: dict[int, tuple[gs.Node, int]] = field(default_factory=dict)
    splits: dict[int, tuple[gs.Node, list[int]]] = field(default_factory=dict)
    conv_groups: dict[int, gs.Node] = field(default_factory=dict)
    head_counts: dict[int, tuple[gs.Node, str, int]] = field(default_factory=dict)
    seed: tuple[str, int, frozenset[Segment]] | None = None  # (tensor name, axis, segments) it was traced from

    def claims(self) -> set[tuple]:
        """What no other group may change too: its tensors, sliced (constant, axis) pairs, edited nodes.

        Two groups may slice one weight along different axes (a conv's input channels belong
        to one group, its output channels to the next), never along the same one.
        """
        claimed: set[tuple] = {("tensor", key) for key in self.sites}
        claimed.update(("slice", id(entry.node), entry.slot, entry.axis) for entry in self.slices.values())
        claimed.update(("node", key) for key in [*self.reshapes, *self.splits, *self.conv_groups, *self.head_counts])
        return claimed

    @property
    def residual(self) -> bool:
        """True when outputs of several producers are added together (a residual stream).

        An Add of two of the group's tensors computed from one producer (GELU's
        ``x + 0.044715·x³``) is no residual.
        """
        if len(self.producers) < 2:
            return False
        for site in self.sites.values():
            node = producer(site.tensor)
            if node is not None and node.op in ("Add", "Sub"):
                operands = [tensor for tensor in node.inputs if id(tensor) in self.sites]
                if len(operands) >= 2:
                    return True
        return False

    def label(self) -> str:
        names = [consumer.node.name for consumer in self.consumers.values()]
        return ", ".join(sorted(name for name in names if name)) or "?"


class Refused(Exception):
    """The dimension cannot be removed consistently; ``reason`` says where and why."""


ELEMENTWISE_UNARY = frozenset({
    "Relu", "LeakyRelu", "PRelu", "Elu", "Selu", "Celu", "Gelu", "Erf", "Tanh", "Sigmoid", "HardSigmoid",
    "HardSwish", "Softplus", "Softsign", "Mish", "Exp", "Log", "Sqrt", "Reciprocal", "Neg", "Abs", "Sin", "Cos",
    "Floor", "Ceil", "Round", "Sign", "Cast", "Identity", "Dropout", "ThresholdedRelu", "Shrink", "Clip", "Not",
})
# Elementwise ops whose every input is data broadcast against the output.
ELEMENTWISE_NARY = frozenset({"Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean", "Where", "PRelu",
                              "Equal", "Less", "Greater", "And", "Or", "Mod"})
POOLS = frozenset({"MaxPool", "AveragePool", "LpPool", "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool"})
REDUCES = frozenset({"ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceL1", "ReduceL2", "ReduceProd",
                     "ReduceSumSquare", "ReduceLogSum", "ReduceLogSumExp"})
# com.microsoft attention ops whose ``num_heads`` attribute encodes the head count.
HEAD_ATTENTION_OPS = frozenset({"MultiHeadAttention"})


def _label(node: gs.Node) -> str:
    return f"{node.op} {node.name!r}" if node.name else node.op


def _same_dim(a: Dim, b: Dim) -> bool:
    return a is not None and b is not None and a == b


class Tracer:
    """Grows a Group from a seed site by applying each op's rule until nothing new appears."""

    def __init__(self, graph: gs.Graph, infos: dict[str, TensorInfo], units: int) -> None:
        self.graph = graph
        self.infos = infos
        self.group = Group(units=units)
        self.graph_inputs = {id(tensor) for tensor in graph.inputs}
        self.graph_outputs = {id(tensor) for tensor in graph.outputs}
        self.subgraph_reads = _names_read_in_subgraphs(graph)
        self.pending: list[gs.Node] = []

    # --- shapes -----------------------------------------------------------------------
    def shape(self, tensor: gs.Tensor) -> tuple[Dim, ...]:
        shape = known_shape(tensor, self.infos)
        if shape is None:
            raise Refused(f"the rank of {tensor.name!r} is unknown (shape inference found nothing)")
        return tuple(shape)

    def rank(self, tensor: gs.Tensor) -> int:
        return len(self.shape(tensor))

    def dim(self, tensor: gs.Tensor, axis: int) -> Dim:
        return self.shape(tensor)[axis]

    # --- growing the group ------------------------------------------------------------
    def site(self, tensor: gs.Tensor) -> Site | None:
        return self.group.sites.get(id(tensor))

    def add(self, tensor: gs.Tensor, axis: int, segments: Iterable[Segment]) -> None:
        """``tensor`` carries the units along ``axis`` at ``segments`` (a constant is refused: slice it instead)."""
        segments = set(segments)
        if isinstance(tensor, gs.Constant) or constant_shape(tensor) is not None:
            raise Refused(f"constant {tensor.name!r} reached as data")
        if id(tensor) in self.graph_inputs:
            raise Refused(f"the dimension reaches graph input {tensor.name!r}")
        if id(tensor) in self.graph_outputs:
            raise Refused(f"the dimension reaches graph output {tensor.name!r}")
        if tensor.name in self.subgraph_reads:
            raise Refused(f"{tensor.name!r} is read inside a subgraph")
        rank = self.rank(tensor)
        axis = axis + rank if axis < 0 else axis
        existing = self.site(tensor)
        if existing is not None:
            if existing.axis != axis:
                raise Refused(f"{tensor.name!r} would lose units along two axes ({existing.axis} and {axis})")
            if segments <= existing.segments:
                return
            existing.segments |= segments
            _check_disjoint(existing, self.group.units)
        else:
            length = self.dim(tensor, axis)
            if not isinstance(length, int):
                raise Refused(f"the pruned axis {axis} of {tensor.name!r} has no static size")
            site = Site(tensor, axis, length, segments)
            _check_disjoint(site, self.group.units)
            self.group.sites[id(tensor)] = site
        self._touch(tensor)

    def _touch(self, tensor: gs.Tensor) -> None:
        node = producer(tensor)
        if node is not None:
            self.pending.append(node)
        self.pending.extend(tensor.outputs)

    def slice_constant(self, node: gs.Node, slot: int, axis: int, length: int, segments: Iterable[Segment]) -> None:
        tensor = node.inputs[slot]
        shape = constant_shape(tensor)
        if shape is None:
            raise Refused(f"input {slot} of {_label(node)} should be a constant")
        axis = axis + len(shape) if axis < 0 else axis
        if shape[axis] != length:
            raise Refused(f"constant {tensor.name!r} of {_label(node)} has {shape[axis]} entries along axis {axis}, "
                          f"not {length}")
        key = (id(node), slot, axis)
        previous = self.group.slices.get(key)
        merged = frozenset(segments) | (previous.segments if previous else frozenset())
        self.group.slices[key] = ConstantSlice(node, slot, axis, length, merged)

    def run(self) -> Group:
        visited_state: dict[int, tuple] = {}
        while self.pending:
            node = self.pending.pop()
            state = tuple(sorted((id(t), frozenset(s.segments)) for t in [*node.inputs, *node.outputs]
                                 if (s := self.site(t)) is not None))
            if visited_state.get(id(node)) == state:
                continue
            visited_state[id(node)] = state
            apply_rule(self, node)
        if not self.group.consumers:
            raise Refused("no MatMul/Gemm/Conv reduces over the dimension")
        if not self.group.producers:
            raise Refused("no MatMul/Gemm/Conv produces the dimension")
        return self.group


def _check_disjoint(site: Site, units: int) -> None:
    """Segments of one site must not share an index and must fit inside the axis."""
    every = np.concatenate([segment.indices(np.arange(units)) for segment in site.segments])
    if every.size and (every.max() >= site.length or np.unique(every).size != every.size):
        raise Refused(f"{site.tensor.name!r}: units overlap or overflow axis {site.axis}")


def _names_read_in_subgraphs(graph: gs.Graph) -> set[str]:
    names: set[str] = set()

    def visit(sub: gs.Graph) -> None:
        for node in sub.nodes:
            names.update(tensor.name for tensor in node.inputs if tensor.name)
            for inner in node_subgraphs(node):
                visit(inner)

    for node in graph.nodes:
        for sub in node_subgraphs(node):
            visit(sub)
    return names


def complete_infos(graph: gs.Graph, infos: dict[str, TensorInfo]) -> dict[str, TensorInfo]:
    """``infos`` plus the output shapes onnx's inference leaves unknown for the contrib attention ops.

    com.microsoft MultiHeadAttention writes ``[batch, query length, value hidden]``.
    """
    completed = dict(infos)
    for node in graph.nodes:
        if node.domain == "com.microsoft" and node.op in HEAD_ATTENTION_OPS and len(node.inputs) > 2:
            query, value = (completed.get(node.inputs[i].name) for i in (0, 2))
            if query and value and query.shape and value.shape and len(query.shape) == len(value.shape) == 3:
                completed.setdefault(node.outputs[0].name,
                                     TensorInfo(query.elem_type, (*query.shape[:2], value.shape[2])))
    return completed


def trace_group(graph: gs.Graph, infos: dict[str, TensorInfo], tensor: gs.Tensor, axis: int, units: int,
                segments: Iterable[Segment]) -> Group:
    """The group of everything coupled to ``tensor``'s ``axis`` (units at ``segments``); raises Refused."""
    segments = frozenset(segments)
    tracer = Tracer(graph, infos, units)
    tracer.add(tensor, axis, segments)
    group = tracer.run()
    group.seed = (tensor.name, axis, segments)
    return group


def retrace(graph: gs.Graph, infos: dict[str, TensorInfo], group: Group) -> Group:
    """The group traced again from its seed on ``graph`` as it is now.

    Earlier rewrites may have added what the first trace could not see (a refit that gave
    a Conv a bias, an Add inserted after a MatMul); the group must cover them too.
    """
    if group.seed is None:
        return group
    name, axis, segments = group.seed
    tensor = graph.tensors().get(name)
    if tensor is None:
        raise Refused(f"{name!r} no longer exists")
    return trace_group(graph, infos, tensor, axis, group.units, segments)


# --- op rules ---------------------------------------------------------------------------

def apply_rule(tr: Tracer, node: gs.Node) -> None:
    """Add what ``node`` implies about its tensors, given the sites already known."""
    op = node.op
    if not is_standard_op(node):
        if node.domain == "com.microsoft" and op in HEAD_ATTENTION_OPS:
            return _multi_head_attention(tr, node)
        raise Refused(f"unknown op {node.domain}::{op} ({_label(node)}) stops propagation")
    if any(True for _ in node_subgraphs(node)):
        raise Refused(f"{_label(node)} holds a subgraph")
    rule = _RULES.get(op)
    if rule is None:
        if op in ELEMENTWISE_UNARY:
            rule = _unary
        elif op in ELEMENTWISE_NARY:
            rule = _nary
        elif op in POOLS:
            rule = _pool
        elif op in REDUCES:
            rule = _reduce
        else:
            raise Refused(f"op {op} ({_label(node)}) stops propagation")
    rule(tr, node)


def _known(tr: Tracer, tensors: Iterable[gs.Tensor]) -> list[Site]:
    return [site for tensor in tensors if (site := tr.site(tensor)) is not None]


def _unused_extra_outputs(node: gs.Node) -> None:
    for extra in node.outputs[1:]:
        if extra.name and extra.outputs:
            raise Refused(f"{_label(node)}: its output {extra.name!r} is used")


def _data_inputs(node: gs.Node) -> list[int]:
    if node.op == "Clip":
        return [0]
    if node.op == "Dropout":
        return [0]
    return [index for index, tensor in enumerate(node.inputs) if tensor.name]


def _unary(tr: Tracer, node: gs.Node) -> None:
    _unused_extra_outputs(node)
    if node.op == "Clip":
        for slot in (1, 2):
            if len(node.inputs) > slot and node.inputs[slot].name and tr.site(node.inputs[slot]) is not None:
                raise Refused(f"{_label(node)}: the dimension reaches a bound of Clip")
    _broadcast(tr, node, _data_inputs(node))


def _nary(tr: Tracer, node: gs.Node) -> None:
    _broadcast(tr, node, _data_inputs(node))


def _broadcast(tr: Tracer, node: gs.Node, slots: list[int]) -> None:
    """Operands broadcast against the output: full-width ones join the group, size-1 ones stay."""
    out = node.outputs[0]
    out_rank = tr.rank(out)
    members = [(node.inputs[slot], slot) for slot in slots] + [(out, None)]
    known = _known(tr, [tensor for tensor, _ in members])
    if not known:
        return
    reference = known[0]
    out_axis = reference.axis + out_rank - tr.rank(reference.tensor)
    segments: set[Segment] = set()
    for site in known:
        if site.axis + out_rank - tr.rank(site.tensor) != out_axis:
            raise Refused(f"{_label(node)} mixes two pruned axes")
        segments |= site.segments
    for tensor, slot in members:
        rank = tr.rank(tensor)
        axis = out_axis - (out_rank - rank)
        if axis < 0:
            continue
        size = tr.dim(tensor, axis)
        if size == 1 and slot is not None:
            continue
        if size != reference.length:
            raise Refused(f"{_label(node)}: {tensor.name!r} has {size!r} entries along the pruned axis, "
                          f"not {reference.length} (cannot prove it broadcasts)")
        if slot is not None and constant_shape(tensor) is not None:
            tr.slice_constant(node, slot, axis, reference.length, segments)
        else:
            tr.add(tensor, axis, segments)


def _pass_through(tr: Tracer, node: gs.Node, axis_map: dict[int, int]) -> None:
    """Input 0 axis ``a`` ↔ output 0 axis ``axis_map[a]``; an axis not in the map is refused."""
    data, out = node.inputs[0], node.outputs[0]
    inverse = {value: key for key, value in axis_map.items()}
    site = tr.site(data)
    if site is not None:
        if site.axis not in axis_map:
            raise Refused(f"{_label(node)} mixes the pruned axis {site.axis} of {data.name!r}")
        tr.add(out, axis_map[site.axis], site.segments)
    site = tr.site(out)
    if site is not None:
        if site.axis not in inverse:
            raise Refused(f"{_label(node)} produces the pruned axis {site.axis} of {out.name!r} from a mixed one")
        tr.add(data, inverse[site.axis], site.segments)


def _channel_only(tr: Tracer, node: gs.Node) -> None:
    _unused_extra_outputs(node)
    _pass_through(tr, node, {1: 1})


def _pool(tr: Tracer, node: gs.Node) -> None:
    _channel_only(tr, node)


def _batch_norm(tr: Tracer, node: gs.Node) -> None:
    _channel_only(tr, node)
    site = tr.site(node.inputs[0])
    if site is not None:
        for slot in range(1, min(5, len(node.inputs))):
            tr.slice_constant(node, slot, 0, site.length, site.segments)


def _instance_norm(tr: Tracer, node: gs.Node) -> None:
    _batch_norm(tr, node)


def _layer_norm(tr: Tracer, node: gs.Node) -> None:
    _unused_extra_outputs(node)
    rank = tr.rank(node.inputs[0])
    start = int(node.attrs.get("axis", -1))
    start = start + rank if start < 0 else start
    _pass_through(tr, node, {axis: axis for axis in range(start)})


def _softmax(tr: Tracer, node: gs.Node) -> None:
    rank = tr.rank(node.inputs[0])
    default = -1 if _opset_at_least(tr, 13) else 1
    axis = int(node.attrs.get("axis", default))
    axis = axis + rank if axis < 0 else axis
    kept = range(rank) if _opset_at_least(tr, 13) else range(axis)
    _pass_through(tr, node, {a: a for a in kept if a != axis})


def _opset_at_least(tr: Tracer, version: int) -> bool:
    return int(tr.graph.opset) >= version


def _transpose(tr: Tracer, node: gs.Node) -> None:
    rank = tr.rank(node.inputs[0])
    perm = list(node.attrs.get("perm", list(range(rank))[::-1]))
    _pass_through(tr, node, {source: target for target, source in enumerate(perm)})


def _axes_of(tr: Tracer, node: gs.Node, slot: int, rank: int) -> list[int] | None:
    """Axes from the ``axes`` attribute or a constant input ``slot`` (None: none given)."""
    if "axes" in node.attrs:
        values = list(node.attrs["axes"])
    elif len(node.inputs) > slot and node.inputs[slot].name:
        array = constant_array(node.inputs[slot])
        if array is None:
            raise Refused(f"{_label(node)}: axes computed at run time")
        values = [int(v) for v in np.asarray(array).reshape(-1)]
    else:
        return None
    return sorted(v + rank if v < 0 else v for v in values)


def _reduce(tr: Tracer, node: gs.Node) -> None:
    rank = tr.rank(node.inputs[0])
    axes = _axes_of(tr, node, 1, rank)
    if axes is None:
        if int(node.attrs.get("noop_with_empty_axes", 0)):
            return _pass_through(tr, node, {a: a for a in range(rank)})
        raise Refused(f"{_label(node)} reduces over every axis, the pruned one included")
    keep = int(node.attrs.get("keepdims", 1))
    mapping = {}
    for axis in range(rank):
        if axis in axes:
            continue
        mapping[axis] = axis if keep else axis - sum(1 for a in axes if a < axis)
    _pass_through(tr, node, mapping)


def _unsqueeze(tr: Tracer, node: gs.Node) -> None:
    rank = tr.rank(node.inputs[0])
    out_rank = tr.rank(node.outputs[0])
    axes = _axes_of(tr, node, 1, out_rank)
    if axes is None:
        raise Refused(f"{_label(node)} has no axes")
    remaining = [axis for axis in range(out_rank) if axis not in axes]
    _pass_through(tr, node, {source: remaining[source] for source in range(rank)})


def _squeeze(tr: Tracer, node: gs.Node) -> None:
    rank = tr.rank(node.inputs[0])
    axes = _axes_of(tr, node, 1, rank)
    if axes is None:
        shape = tr.shape(node.inputs[0])
        axes = [axis for axis, dim in enumerate(shape) if dim == 1]
    remaining = [axis for axis in range(rank) if axis not in axes]
    _pass_through(tr, node, {source: target for target, source in enumerate(remaining)})


def _pad(tr: Tracer, node: gs.Node) -> None:
    rank = tr.rank(node.inputs[0])
    if "pads" in node.attrs:
        pads = list(node.attrs["pads"])
    else:
        array = constant_array(node.inputs[1]) if len(node.inputs) > 1 else None
        if array is None:
            raise Refused(f"{_label(node)}: pads computed at run time")
        pads = [int(v) for v in np.asarray(array).reshape(-1)]
    axes = _axes_of(tr, node, 3, rank) if len(node.inputs) > 3 else None
    axes = list(range(rank)) if axes is None else axes
    padded = {axes[index] for index in range(len(axes))
              if pads[index] != 0 or pads[index + len(axes)] != 0}
    _pass_through(tr, node, {axis: axis for axis in range(rank) if axis not in padded})


def _reshape(tr: Tracer, node: gs.Node) -> None:
    data, out = node.inputs[0], node.outputs[0]
    in_shape, out_shape = tr.shape(data), tr.shape(out)
    target = constant_array(node.inputs[1]) if len(node.inputs) > 1 else None
    if target is None:
        raise Refused(f"{_label(node)}: the target shape is computed at run time")
    target = [int(v) for v in np.asarray(target).reshape(-1)]
    allow_zero = int(node.attrs.get("allowzero", 0))
    mapping = _reshape_mapping(node, in_shape, out_shape)
    site_in, site_out = tr.site(data), tr.site(out)
    if site_in is not None:
        axis, segments = mapping.forward(site_in)
        tr.add(out, axis, segments)
    if site_out is not None:
        axis, segments = mapping.backward(site_out)
        tr.add(data, axis, segments)
    site_in, site_out = tr.site(data), tr.site(out)
    if site_out is not None:
        entry = target[site_out.axis]
        if entry == 0 and (allow_zero or not (site_out.axis < mapping.prefix and site_in is not None
                                               and site_in.axis == site_out.axis)):
            raise Refused(f"{_label(node)}: target entry 0 copies an axis that does not shrink alike")
        tr.group.reshapes[id(node)] = (node, site_out.axis)


@dataclass(frozen=True)
class _ReshapeMapping:
    """How a Reshape moves one axis: kept as is (common prefix/suffix), merged, or split."""

    node: gs.Node
    in_shape: tuple[Dim, ...]
    out_shape: tuple[Dim, ...]
    prefix: int
    suffix: int

    def _middle(self) -> tuple[list[int], list[int]]:
        in_mid = list(self.in_shape[self.prefix : len(self.in_shape) - self.suffix])
        out_mid = list(self.out_shape[self.prefix : len(self.out_shape) - self.suffix])
        if not all(isinstance(d, int) for d in in_mid + out_mid):
            raise Refused(f"{_label(self.node)}: the reshaped dims are not static")
        return in_mid, out_mid

    def forward(self, site: Site) -> tuple[int, set[Segment]]:
        return self._map(site, self.in_shape, self.out_shape, forward=True)

    def backward(self, site: Site) -> tuple[int, set[Segment]]:
        return self._map(site, self.out_shape, self.in_shape, forward=False)

    def _map(self, site: Site, source: tuple[Dim, ...], target: tuple[Dim, ...],
             forward: bool) -> tuple[int, set[Segment]]:
        if site.axis < self.prefix:
            return site.axis, set(site.segments)
        if site.axis >= len(source) - self.suffix:
            return len(target) - (len(source) - site.axis), set(site.segments)
        in_mid, out_mid = self._middle()
        source_mid, target_mid = (in_mid, out_mid) if forward else (out_mid, in_mid)
        position = site.axis - self.prefix
        if len(target_mid) == 1 and int(np.prod(source_mid)) == target_mid[0]:
            # merge: the pruned axis must lead the merged run (nothing non-trivial before it)
            if int(np.prod(source_mid[:position])) != 1:
                raise Refused(f"{_label(self.node)} interleaves the pruned axis with the axes before it")
            inner = int(np.prod(source_mid[position + 1 :]))
            return self.prefix, {Segment(s.offset * inner, s.unit_size * inner) for s in site.segments}
        if len(source_mid) == 1 and int(np.prod(target_mid)) == source_mid[0]:
            # split: units must be whole rows of the trailing axes
            for index, size in enumerate(target_mid):
                if size == 1:
                    continue
                if int(np.prod(target_mid[:index])) != 1:
                    break
                inner = int(np.prod(target_mid[index + 1 :]))
                if all(s.offset % inner == 0 and s.unit_size % inner == 0 for s in site.segments):
                    return self.prefix + index, {Segment(s.offset // inner, s.unit_size // inner)
                                                 for s in site.segments}
                break
            raise Refused(f"{_label(self.node)} splits the pruned axis across units "
                          f"({source_mid[0]} into {target_mid})")
        raise Refused(f"{_label(self.node)} reshapes {source_mid} into {target_mid} around the pruned axis")


def _reshape_mapping(node: gs.Node, in_shape: tuple[Dim, ...], out_shape: tuple[Dim, ...]) -> _ReshapeMapping:
    prefix = 0
    while prefix < min(len(in_shape), len(out_shape)) and _same_dim(in_shape[prefix], out_shape[prefix]):
        prefix += 1
    suffix = 0
    while (suffix < min(len(in_shape), len(out_shape)) - prefix
           and _same_dim(in_shape[-1 - suffix], out_shape[-1 - suffix])):
        suffix += 1
    return _ReshapeMapping(node, in_shape, out_shape, prefix, suffix)


def _flatten(tr: Tracer, node: gs.Node) -> None:
    in_shape = tr.shape(node.inputs[0])
    axis = int(node.attrs.get("axis", 1))
    axis = axis + len(in_shape) if axis < 0 else axis
    out_shape = tr.shape(node.outputs[0])
    mapping = _ReshapeMapping(node, in_shape, out_shape, 0, 0)
    site_in, site_out = tr.site(node.inputs[0]), tr.site(node.outputs[0])
    if site_in is not None:
        if site_in.axis < axis:
            raise Refused(f"{_label(node)} flattens the pruned axis into the outer dimension")
        inner_in = _ReshapeMapping(node, in_shape[axis:], out_shape[1:], 0, 0)
        shifted = Site(site_in.tensor, site_in.axis - axis, site_in.length, site_in.segments)
        out_axis, segments = inner_in.forward(shifted)
        tr.add(node.outputs[0], 1 + out_axis, segments)
    if site_out is not None:
        if site_out.axis != 1:
            raise Refused(f"{_label(node)}: pruned axis {site_out.axis} of a flattened tensor")
        inner = _ReshapeMapping(node, in_shape[axis:], out_shape[1:], 0, 0)
        shifted = Site(site_out.tensor, 0, site_out.length, site_out.segments)
        in_axis, segments = inner.backward(shifted)
        tr.add(node.inputs[0], axis + in_axis, segments)
    del mapping


def _split_sizes(tr: Tracer, node: gs.Node, length: int) -> list[int]:
    if len(node.inputs) > 1 and node.inputs[1].name:
        array = constant_array(node.inputs[1])
        if array is None:
            raise Refused(f"{_label(node)}: split sizes computed at run time")
        return [int(v) for v in np.asarray(array).reshape(-1)]
    if "split" in node.attrs:
        return [int(v) for v in node.attrs["split"]]
    count = len(node.outputs)
    if length % count:
        raise Refused(f"{_label(node)}: uneven split of {length} into {count}")
    return [length // count] * count


def _split(tr: Tracer, node: gs.Node) -> None:
    data = node.inputs[0]
    rank = tr.rank(data)
    axis = int(node.attrs.get("axis", 0))
    axis = axis + rank if axis < 0 else axis
    known = _known(tr, [data, *node.outputs])
    if any(site.axis != axis for site in known):
        _broadcast_all(tr, node, [data, *node.outputs])
        return
    length = tr.dim(data, axis)
    if not isinstance(length, int):
        raise Refused(f"{_label(node)}: split axis has no static size")
    sizes = _split_sizes(tr, node, length)
    starts = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
    site = tr.site(data)
    if site is not None:
        for index, out in enumerate(node.outputs):
            inside = {Segment(s.offset - starts[index], s.unit_size) for s in site.segments
                      if starts[index] <= s.offset < starts[index + 1]}
            for segment in inside:
                if segment.offset + (tr.group.units - 1) * segment.unit_size + segment.unit_size > sizes[index]:
                    raise Refused(f"{_label(node)}: units straddle two outputs")
            if inside:
                tr.add(out, axis, inside)
    for index, out in enumerate(node.outputs):
        out_site = tr.site(out)
        if out_site is not None:
            tr.add(data, axis, {Segment(s.offset + starts[index], s.unit_size) for s in out_site.segments})
    tr.group.splits[id(node)] = (node, sizes)


def _broadcast_all(tr: Tracer, node: gs.Node, tensors: list[gs.Tensor]) -> None:
    """Every tensor carries the same axis unchanged (Split/Concat along another axis)."""
    known = _known(tr, tensors)
    segments = set().union(*(site.segments for site in known))
    for tensor in tensors:
        tr.add(tensor, known[0].axis, segments)


def _concat(tr: Tracer, node: gs.Node) -> None:
    out = node.outputs[0]
    rank = tr.rank(out)
    axis = int(node.attrs["axis"])
    axis = axis + rank if axis < 0 else axis
    inputs = list(node.inputs)
    known = _known(tr, [*inputs, out])
    if any(site.axis != axis for site in known):
        for slot, tensor in enumerate(inputs):
            if constant_shape(tensor) is not None:
                raise Refused(f"{_label(node)}: constant input {slot} along a pruned axis")
        _broadcast_all(tr, node, [*inputs, out])
        return
    sizes = [tr.dim(tensor, axis) for tensor in inputs]
    if not all(isinstance(size, int) for size in sizes):
        raise Refused(f"{_label(node)}: concatenated sizes are not static")
    starts = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
    for index, tensor in enumerate(inputs):
        site = tr.site(tensor)
        if site is not None:
            tr.add(out, axis, {Segment(s.offset + starts[index], s.unit_size) for s in site.segments})
    site = tr.site(out)
    if site is not None:
        for index, tensor in enumerate(inputs):
            inside = {Segment(s.offset - starts[index], s.unit_size) for s in site.segments
                      if starts[index] <= s.offset < starts[index + 1]}
            if inside and constant_shape(tensor) is not None:
                tr.slice_constant(node, index, axis, sizes[index], inside)
            elif inside:
                tr.add(tensor, axis, inside)


def _matmul(tr: Tracer, node: gs.Node) -> None:
    a, b = node.inputs[0], node.inputs[1]
    out = node.outputs[0]
    ra, rb, ry = tr.rank(a), tr.rank(b), tr.rank(out)
    if ra < 2 or rb < 2:
        raise Refused(f"{_label(node)}: MatMul with a 1-D operand")
    b_constant = constant_shape(b) is not None
    if constant_shape(a) is not None:
        raise Refused(f"{_label(node)}: constant left operand")
    site = tr.site(a)
    if site is not None:
        if site.axis == ra - 1:
            if not b_constant:
                raise Refused(f"{_label(node)} contracts the pruned axis with a runtime tensor")
            if rb != 2:
                raise Refused(f"{_label(node)}: batched constant weight")
            tr.group.consumers[id(node)] = Consumer(node, 0, 1, 0, site.length, frozenset(site.segments))
            tr.slice_constant(node, 1, 0, site.length, site.segments)
        elif site.axis == ra - 2:
            tr.add(out, ry - 2, site.segments)
        else:
            _matmul_batch(tr, node, site.axis + ry - ra, site)
    site = tr.site(b)
    if site is not None:
        if site.axis == rb - 1:
            tr.add(out, ry - 1, site.segments)
        elif site.axis == rb - 2:
            raise Refused(f"{_label(node)} contracts the pruned axis with a runtime tensor")
        else:
            _matmul_batch(tr, node, site.axis + ry - rb, site)
    site = tr.site(out)
    if site is not None:
        if site.axis == ry - 1:
            if b_constant:
                if rb != 2:
                    raise Refused(f"{_label(node)}: batched constant weight")
                tr.group.producers[id(node)] = node
                tr.slice_constant(node, 1, 1, site.length, site.segments)
            else:
                tr.add(b, rb - 1, site.segments)
        elif site.axis == ry - 2:
            tr.add(a, ra - 2, site.segments)
        else:
            _matmul_batch(tr, node, site.axis, site)


def _matmul_batch(tr: Tracer, node: gs.Node, out_axis: int, site: Site) -> None:
    """A batch axis of MatMul (the head axis of attention): both operands and the output share it."""
    out = node.outputs[0]
    ry = tr.rank(out)
    tr.add(out, out_axis, site.segments)
    for slot in (0, 1):
        tensor = node.inputs[slot]
        axis = out_axis - (ry - tr.rank(tensor))
        if axis < 0 or tr.dim(tensor, axis) == 1:
            continue
        if constant_shape(tensor) is not None:
            tr.slice_constant(node, slot, axis, site.length, site.segments)
        else:
            tr.add(tensor, axis, site.segments)


def _gemm(tr: Tracer, node: gs.Node) -> None:
    a, b = node.inputs[0], node.inputs[1]
    out = node.outputs[0]
    if constant_shape(b) is None:
        raise Refused(f"{_label(node)}: Gemm weight is computed at run time")
    trans_a, trans_b = int(node.attrs.get("transA", 0)), int(node.attrs.get("transB", 0))
    reduce_axis, rows_axis = (0, 1) if trans_a else (1, 0)
    site = tr.site(a)
    if site is not None:
        if site.axis == reduce_axis:
            weight_axis = 1 if trans_b else 0
            tr.group.consumers[id(node)] = Consumer(node, 0, 1, weight_axis, site.length, frozenset(site.segments))
            tr.slice_constant(node, 1, weight_axis, site.length, site.segments)
        else:
            tr.add(out, 0, site.segments)
            _gemm_bias(tr, node, 0, site)
    site = tr.site(out)
    if site is not None:
        if site.axis == 1:
            tr.group.producers[id(node)] = node
            tr.slice_constant(node, 1, 0 if trans_b else 1, site.length, site.segments)
            _gemm_bias(tr, node, 1, site)
        else:
            tr.add(a, rows_axis, site.segments)
            _gemm_bias(tr, node, 0, site)


def _gemm_bias(tr: Tracer, node: gs.Node, out_axis: int, site: Site) -> None:
    if len(node.inputs) < 3 or not node.inputs[2].name:
        return
    bias = node.inputs[2]
    shape = constant_shape(bias)
    if shape is None:
        raise Refused(f"{_label(node)}: Gemm C computed at run time")
    axis = out_axis - (2 - len(shape))
    if axis < 0 or shape[axis] == 1:
        return
    tr.slice_constant(node, 2, axis, site.length, site.segments)


def _conv(tr: Tracer, node: gs.Node) -> None:
    x, weight = node.inputs[0], node.inputs[1]
    out = node.outputs[0]
    shape = constant_shape(weight)
    if shape is None:
        raise Refused(f"{_label(node)}: Conv weight is computed at run time")
    group = int(node.attrs.get("group", 1))
    in_channels = tr.dim(x, 1)
    depthwise = group > 1 and group == in_channels and shape[0] == group and shape[1] == 1
    has_bias = len(node.inputs) > 2 and node.inputs[2].name
    for tensor in (x, out):
        site = tr.site(tensor)
        if site is not None and site.axis != 1:
            raise Refused(f"{_label(node)}: pruned axis {site.axis} is a spatial axis")
    site_x, site_out = tr.site(x), tr.site(out)
    if depthwise:
        reference = site_x or site_out
        if reference is None:
            return
        tr.add(x, 1, reference.segments)
        tr.add(out, 1, reference.segments)
        tr.slice_constant(node, 1, 0, reference.length, reference.segments)
        if has_bias:
            tr.slice_constant(node, 2, 0, reference.length, reference.segments)
        tr.group.conv_groups[id(node)] = node
        return
    if group != 1:
        raise Refused(f"{_label(node)}: grouped convolution (group={group})")
    if site_x is not None:
        tr.group.consumers[id(node)] = Consumer(node, 0, 1, 1, site_x.length, frozenset(site_x.segments),
                                                rows_per_index=int(np.prod(shape[2:])))
        tr.slice_constant(node, 1, 1, site_x.length, site_x.segments)
    if site_out is not None:
        tr.group.producers[id(node)] = node
        tr.slice_constant(node, 1, 0, site_out.length, site_out.segments)
        if has_bias:
            tr.slice_constant(node, 2, 0, site_out.length, site_out.segments)


def _multi_head_attention(tr: Tracer, node: gs.Node) -> None:
    """com.microsoft MultiHeadAttention with separate ``[B, S, H·D]`` query, key and value.

    Heads are runs of ``D`` features on all three inputs and on the output; the bias
    (``[3·H·D]``) holds them three times and ``num_heads`` counts them.
    """
    heads = int(node.attrs.get("num_heads", 0))
    query, key, value = (node.inputs[i] if len(node.inputs) > i and node.inputs[i].name else None for i in range(3))
    if key is None or value is None or tr.rank(query) != 3 or tr.rank(key) != 3:
        raise Refused(f"{_label(node)}: packed query/key/value layouts are not supported")
    for slot in range(4, len(node.inputs)):
        if node.inputs[slot].name and slot != 5:
            raise Refused(f"{_label(node)}: input {slot} (masks, past state) is not supported")
    _unused_extra_outputs(node)
    out = node.outputs[0]
    members = [query, key, value, out]
    known = _known(tr, members)
    if not known:
        return
    reference = known[0]
    hidden = reference.length
    if heads <= 0 or hidden % heads or reference.axis != 2:
        raise Refused(f"{_label(node)}: cannot read the head layout")
    for tensor in members:
        tr.add(tensor, 2, reference.segments)
    if len(node.inputs) > 3 and node.inputs[3].name:
        tr.slice_constant(node, 3, 0, 3 * hidden,
                          {Segment(s.offset + k * hidden, s.unit_size) for s in reference.segments for k in range(3)})
    if len(node.inputs) > 5 and node.inputs[5].name:
        bias = node.inputs[5]
        shape = tr.shape(bias)
        if len(shape) == 4 and shape[1] == heads:
            head_segments = {Segment(s.offset // (hidden // heads), 1) for s in reference.segments}
            if constant_shape(bias) is not None:
                tr.slice_constant(node, 5, 1, heads, head_segments)
            else:
                tr.add(bias, 1, head_segments)
    tr.group.head_counts[id(node)] = (node, "num_heads", hidden // heads)


_RULES = {
    "BatchNormalization": _batch_norm,
    "InstanceNormalization": _instance_norm,
    "LayerNormalization": _layer_norm,
    "Softmax": _softmax,
    "LogSoftmax": _softmax,
    "Transpose": _transpose,
    "Reshape": _reshape,
    "Flatten": _flatten,
    "Split": _split,
    "Concat": _concat,
    "MatMul": _matmul,
    "Gemm": _gemm,
    "Conv": _conv,
    "Unsqueeze": _unsqueeze,
    "Squeeze": _squeeze,
    "Pad": _pad,
}
