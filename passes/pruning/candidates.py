"""Where the prunable dimensions are: seeds for hidden units, channels and attention heads.

Every candidate is traced by ``coupling.trace_group``; one that cannot be removed
consistently comes back as a ``Skipped`` with the reason, so the report can say why a
layer was left alone (a residual stream reaching LayerNormalization, an unknown op, …).

* Neurons and channels: each MatMul/Gemm/Conv with a constant weight seeds its output
  channels (MatMul: last axis, Gemm: axis 1, Conv: axis 1). An FFN's first MatMul gives
  its hidden units; a bottleneck's 1×1 and 3×3 convolutions give its inner channels.
* Heads: each Reshape that splits the last axis into ``[H, D]`` seeds the ``H`` axis, and
  each com.microsoft MultiHeadAttention seeds its ``num_heads``; a group counts as heads
  only if a Softmax runs over it (an attention score), so other splits stay neurons' business.

Groups come out in graph order and never share a node's weights with an earlier group.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import onnx_graphsurgeon as gs

from onnxopt.graph_edit import constant_shape
from onnxopt.passes.pruning.coupling import Group, Refused, Segment, trace_group
from onnxopt.shape_info import TensorInfo, known_shape

logger = logging.getLogger(__name__)


@dataclass
class Candidate:
    """A seed and what tracing it gave: a group, or the reason it cannot be pruned."""

    seed: gs.Node
    group: Group | None = None
    reason: str = ""

    @property
    def label(self) -> str:
        return self.seed.name or self.seed.op


def _producer_seed(node: gs.Node, infos: dict[str, TensorInfo]) -> tuple[int, int] | None:
    """(axis, channels) of a producer's output channels, or None when the node is no producer."""
    if len(node.inputs) < 2 or not node.outputs:
        return None
    weight_shape = constant_shape(node.inputs[1])
    if weight_shape is None:
        return None
    if node.op == "MatMul" and len(weight_shape) == 2:
        return -1, int(weight_shape[1])
    if node.op == "Gemm" and len(weight_shape) == 2:
        return 1, int(weight_shape[0] if int(node.attrs.get("transB", 0)) else weight_shape[1])
    if node.op == "Conv" and int(node.attrs.get("group", 1)) == 1 and len(weight_shape) >= 3:
        return 1, int(weight_shape[0])
    return None


def _collect(seeds: list[tuple[gs.Node, gs.Tensor, int, int, set[Segment]]], graph: gs.Graph,
             infos: dict[str, TensorInfo], accept) -> list[Candidate]:
    candidates: list[Candidate] = []
    claimed: set[tuple] = set()
    covered: set[int] = set()
    for node, tensor, axis, units, segments in seeds:
        if id(node) in covered:
            continue
        try:
            group = trace_group(graph, infos, tensor, axis, units, segments)
            why_not = accept(group)
            if why_not:
                raise Refused(why_not)
        except Refused as refusal:
            candidates.append(Candidate(node, reason=str(refusal)))
            continue
        covered.update(id(p) for p in group.producers.values())
        covered.update(id(entry[0]) for entry in group.reshapes.values())
        covered.update(group.head_counts)
        touched = group.claims()
        if touched & claimed:
            candidates.append(Candidate(node, reason="shares weights or nodes with an earlier group"))
            continue
        claimed |= touched
        candidates.append(Candidate(node, group=group))
    return candidates


def neuron_candidates(graph: gs.Graph, infos: dict[str, TensorInfo]) -> list[Candidate]:
    """Hidden units of MLPs and inner channels of conv blocks, in graph order."""
    seeds = []
    for node in graph.nodes:
        found = _producer_seed(node, infos)
        if found is None:
            continue
        axis, channels = found
        seeds.append((node, node.outputs[0], axis, channels, {Segment(0, 1)}))
    return _collect(seeds, graph, infos, lambda group: "")


def _splits_heads(node: gs.Node, infos: dict[str, TensorInfo]) -> tuple[int, int] | None:
    """(heads, head size) when a Reshape turns ``[..., H·D]`` into ``[..., H, D]``."""
    if node.op != "Reshape":
        return None
    source, target = known_shape(node.inputs[0], infos), known_shape(node.outputs[0], infos)
    if source is None or target is None or len(target) != len(source) + 1 or len(target) < 3:
        return None
    heads, size, merged = target[-2], target[-1], source[-1]
    if not all(isinstance(value, int) for value in (heads, size, merged)) or heads < 2:
        return None
    return (heads, size) if heads * size == merged else None


def _has_softmax(group: Group) -> str:
    for site in group.sites.values():
        if any(reader.op == "Softmax" for reader in site.tensor.outputs):
            return ""
    if group.head_counts:
        return ""
    return "no Softmax runs over this split (not an attention head)"


def head_candidates(graph: gs.Graph, infos: dict[str, TensorInfo]) -> list[Candidate]:
    """Attention heads: Reshape ``[.., H·D] -> [.., H, D]`` splits and MultiHeadAttention nodes."""
    seeds = []
    for node in graph.nodes:
        split = _splits_heads(node, infos)
        if split is not None:
            heads, _ = split
            out = node.outputs[0]
            seeds.append((node, out, len(known_shape(out, infos)) - 2, heads, {Segment(0, 1)}))
        elif node.op == "MultiHeadAttention" and node.domain == "com.microsoft":
            heads = int(node.attrs.get("num_heads", 0))
            shape = known_shape(node.outputs[0], infos)
            if heads > 1 and shape is not None and isinstance(shape[-1], int) and shape[-1] % heads == 0:
                seeds.append((node, node.outputs[0], 2, heads, {Segment(0, shape[-1] // heads)}))
    return _collect(seeds, graph, infos, _has_softmax)

