"""Apply a removal: every tensor, weight, shape constant and attribute of a group shrinks at once.

Given a traced ``Group`` and the units to remove, this slices each recorded constant along
its axis (a shared constant is never changed in place: the node gets its own sliced copy),
writes refitted consumer weights and bias corrections, rewrites Reshape targets and Split
sizes to the new widths, updates a depthwise Conv's ``group`` and an attention op's
``num_heads``, and corrects the declared shape of every tensor of the group — so no stale
head count, split size or value_info survives (the complaint pruning tools hear most).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs
from onnx_graphsurgeon.ir.tensor import LazyValues

from onnxopt.graph_edit import constant_array, constant_source, fresh_name
from onnxopt.model_io import read_constant
from onnxopt.passes.pruning.coupling import Consumer, Group, Refused, kept_indices
from onnxopt.passes.pruning.sliced_values import SlicedLazyValues

logger = logging.getLogger(__name__)


@dataclass
class Refit:
    """New weights of one consumer: ``weights_kn`` over the kept rows, and its new bias (None: unchanged).

    ``bias`` is the consumer's whole new bias (Gemm's C·beta, Conv's B); for a MatMul it is
    the correction added to the bias Add that follows it (or to a new Add).
    """

    weights_kn: np.ndarray
    bias: np.ndarray | None = None


class NameSource:
    """Fresh tensor and node names for a graph (names already used are never reused)."""

    def __init__(self, graph: gs.Graph) -> None:
        self.taken = set(graph.tensors().keys()) | {node.name for node in graph.nodes if node.name}

    def fresh(self, base: str) -> str:
        return fresh_name(base, self.taken)


def _current_array(tensor: gs.Tensor) -> np.ndarray:
    value = constant_array(tensor)
    if value is None:
        raise Refused(f"{tensor.name!r} is no longer a constant")
    return np.asarray(value)


def _sliced_constant(tensor: gs.Tensor, axis: int, kept: np.ndarray, names: NameSource) -> gs.Constant:
    source = constant_source(tensor)
    name = names.fresh(f"{tensor.name}_pruned")
    if isinstance(source, gs.Constant) and isinstance(source._values, LazyValues):
        return gs.Constant(name, SlicedLazyValues(source._values, axis, kept))
    values = np.asarray(read_constant(source) if isinstance(source, gs.Constant) else source)
    return gs.Constant(name, np.ascontiguousarray(np.take(values, kept, axis=axis)))


def consumer_weight_kn(consumer: Consumer) -> np.ndarray:
    """The consumer's weight as ``[K, N]`` (rows: the reduced features, Conv rows channel-major)."""
    weight = _current_array(consumer.node.inputs[consumer.weight_slot]).astype(np.float64)
    node = consumer.node
    if node.op == "MatMul":
        return weight
    if node.op == "Gemm":
        alpha = float(node.attrs.get("alpha", 1.0))
        return alpha * (weight.T if int(node.attrs.get("transB", 0)) else weight)
    return weight.reshape(weight.shape[0], -1).T  # Conv [O, C, k...] -> [C·k, O]


def consumer_bias(consumer: Consumer) -> np.ndarray | None:
    """The bias the consumer adds itself (Gemm's beta·C, Conv's B) as ``[N]``; zeros for MatMul; None if unknown."""
    node = consumer.node
    outputs = _output_width(consumer)
    if node.op == "MatMul":
        return np.zeros(outputs)
    if len(node.inputs) < 3 or not node.inputs[2].name:
        return np.zeros(outputs)
    value = constant_array(node.inputs[2])
    if value is None:
        return None
    value = np.asarray(value, dtype=np.float64)
    if node.op == "Gemm":
        beta = float(node.attrs.get("beta", 1.0))
        if value.size == 1:
            return np.full(outputs, beta * float(value.reshape(-1)[0]))
        if value.ndim == 2 and value.shape[0] != 1:
            return None  # a per-row C is no bias
        return beta * value.reshape(-1)
    return value.reshape(-1)


def _output_width(consumer: Consumer) -> int:
    weight = consumer.node.inputs[consumer.weight_slot]
    shape = _current_array(weight).shape
    node = consumer.node
    if node.op == "MatMul":
        return int(shape[-1])
    if node.op == "Gemm":
        return int(shape[0] if int(node.attrs.get("transB", 0)) else shape[1])
    return int(shape[0])


def write_refit(graph: gs.Graph, consumer: Consumer, refit: Refit, names: NameSource) -> None:
    """Replace a consumer's weight by ``refit.weights_kn`` (its kept rows) and its bias by ``refit.bias``."""
    node = consumer.node
    old = node.inputs[consumer.weight_slot]
    dtype = _current_array(old).dtype
    weights = refit.weights_kn
    if node.op == "MatMul":
        stored = weights
    elif node.op == "Gemm":
        alpha = float(node.attrs.get("alpha", 1.0))
        stored = (weights.T if int(node.attrs.get("transB", 0)) else weights) / alpha
    else:
        shape = list(_current_array(old).shape)
        shape[1] = weights.shape[0] // int(np.prod(shape[2:]))
        stored = weights.T.reshape(shape)
    node.inputs[consumer.weight_slot] = gs.Constant(names.fresh(f"{old.name}_refit"),
                                                    np.ascontiguousarray(stored.astype(dtype)))
    if refit.bias is not None:
        _write_bias(graph, consumer, refit.bias.astype(dtype), names)


def _write_bias(graph: gs.Graph, consumer: Consumer, bias: np.ndarray, names: NameSource) -> None:
    node = consumer.node
    if node.op == "Conv":
        _set_input(node, 2, gs.Constant(names.fresh(f"{node.name or 'conv'}_bias_refit"), bias))
        return
    if node.op == "Gemm":
        beta = float(node.attrs.get("beta", 1.0))
        if beta == 0.0:
            node.attrs["beta"] = 1.0
            beta = 1.0
        _set_input(node, 2, gs.Constant(names.fresh(f"{node.name or 'gemm'}_bias_refit"), bias / beta))
        return
    _add_after_matmul(graph, node, bias, names)


def _set_input(node: gs.Node, slot: int, tensor: gs.Tensor) -> None:
    while len(node.inputs) <= slot:
        node.inputs.append(gs.Variable.empty())
    node.inputs[slot] = tensor


def _add_after_matmul(graph: gs.Graph, node: gs.Node, correction: np.ndarray, names: NameSource) -> None:
    """Add ``correction`` to the bias Add that follows the MatMul, or insert an Add."""
    out = node.outputs[0]
    readers = list(out.outputs)
    if len(readers) == 1 and readers[0].op == "Add":
        add = readers[0]
        other = 1 if add.inputs[0] is out else 0
        value = constant_array(add.inputs[other])
        if value is not None and np.asarray(value).shape[-1:] == correction.shape and (
                np.asarray(value).size == correction.size):
            new = np.asarray(value) + correction.reshape(np.asarray(value).shape)
            add.inputs[other] = gs.Constant(names.fresh(f"{add.inputs[other].name}_refit"),
                                            np.ascontiguousarray(new.astype(np.asarray(value).dtype)))
            return
    if not np.any(correction):
        return
    product = gs.Variable(names.fresh(f"{out.name}_unbiased"), dtype=out.dtype, shape=out.shape)
    node.outputs[0] = product
    bias = gs.Constant(names.fresh(f"{node.name or 'matmul'}_bias_refit"), correction)
    graph.nodes.append(gs.Node("Add", names.fresh(f"{node.name or 'matmul'}_bias_add"),
                               inputs=[product, bias], outputs=[out]))


def _new_shape(tensor: gs.Tensor, axis: int, length: int) -> None:
    shape = getattr(tensor, "shape", None)
    if isinstance(tensor, gs.Constant) or shape is None or axis >= len(shape):
        return
    updated = list(shape)
    updated[axis] = length
    tensor.shape = updated


def apply_removal(graph: gs.Graph, group: Group, removed_units: np.ndarray,
                  refits: dict[int, Refit] | None = None, names: NameSource | None = None) -> None:
    """Remove ``removed_units`` from every site and edit of ``group``; ``refits`` by consumer node id."""
    refits = refits or {}
    names = names or NameSource(graph)
    removed_units = np.asarray(sorted(int(u) for u in removed_units), dtype=np.int64)
    if removed_units.size == 0:
        return
    if removed_units.size >= group.units:
        raise Refused("cannot remove every unit of a group")
    # New lengths, read before anything changes.
    site_lengths = {key: int(kept_indices(site.length, site.segments, removed_units).size)
                    for key, site in group.sites.items()}
    reshape_targets = {key: _current_array(node.inputs[1]) for key, (node, _) in group.reshapes.items()}

    replaced = set()
    for key, consumer in group.consumers.items():
        refit = refits.get(key)
        if refit is not None:
            write_refit(graph, consumer, refit, names)
            replaced.add((key, consumer.weight_slot, consumer.weight_axis))
    cache: dict[tuple, gs.Constant] = {}
    for slice_key, entry in group.slices.items():
        if slice_key in replaced:
            continue
        tensor = entry.node.inputs[entry.slot]
        current = _current_array(tensor).shape
        if current[entry.axis] != entry.length:
            raise Refused(f"{tensor.name!r} changed size along axis {entry.axis} since it was traced")
        kept = kept_indices(entry.length, entry.segments, removed_units)
        memo = (id(constant_source(tensor)) if constant_source(tensor) is not None else id(tensor), entry.axis,
                kept.tobytes())
        if memo not in cache:
            cache[memo] = _sliced_constant(tensor, entry.axis, kept, names)
        entry.node.inputs[entry.slot] = cache[memo]

    for key, site in group.sites.items():
        _new_shape(site.tensor, site.axis, site_lengths[key])
    for key, (node, axis) in group.reshapes.items():
        target = np.array(reshape_targets[key], copy=True)
        if target[axis] not in (0, -1):
            target[axis] = site_lengths[id(node.outputs[0])]
            node.inputs[1] = gs.Constant(names.fresh(f"{node.inputs[1].name}_pruned"), target.astype(np.int64))
    for node, traced_sizes in group.splits.values():
        sizes = [site_lengths.get(id(out), size) for out, size in zip(node.outputs, traced_sizes, strict=True)]
        if "split" in node.attrs:
            node.attrs["split"] = sizes
        else:
            node.attrs.pop("num_outputs", None)
            _set_input(node, 1, gs.Constant(names.fresh(f"{node.name or 'split'}_sizes"),
                                            np.asarray(sizes, dtype=np.int64)))
    for node in group.conv_groups.values():
        node.attrs["group"] = site_lengths[id(node.outputs[0])]
    for node, attribute, unit_size in group.head_counts.values():
        node.attrs[attribute] = site_lengths[id(node.outputs[0])] // unit_size
    graph.cleanup(remove_unused_graph_inputs=False)
    graph.toposort()


def refits_by_node(group: Group, refits: dict[int, Refit]) -> dict[int, Refit]:
    """Refits keyed by consumer position (plans outlive graphs) re-keyed by consumer node id of ``group``."""
    keys = list(group.consumers)
    return {keys[position]: refit for position, refit in refits.items()}
