"""Residual blocks and transformer layers: spans of the graph that can be bypassed whole.

The *trunk* is everything computed from the primary input (the graph input most nodes
depend on: token ids, the image). A *cut* is a trunk tensor through which the whole
trunk downstream passes: every node that depends on it reads only it, tensors computed
from it, constants, shape-only values (``Shape`` and what is computed from shapes alone)
and tensors outside the trunk (an attention mask built from another input). A residual
skip (``x`` read again by the Add after ``f(x)``) or a sibling branch (the keys next to the
queries) is trunk, so no cut lies inside a residual block or an attention block.
Between two consecutive cuts ``A`` and ``B`` of the same shape lies a block ``B = f(A)``
that can be removed by reading ``A`` where ``B`` was read — a ResNet block
(``relu(x + f(x))`` → ``x``), a transformer sublayer with its residual Add.

``unit="layer"`` groups blocks into transformer layers: a layer starts at each block that
holds a Softmax (attention) and takes the blocks up to the next one; the last layer takes
as many blocks as the others. Without any Softmax (a CNN), layers are blocks. Blocks that
change the shape (a downsampling ResNet block) or hold no MatMul/Gemm/Conv are not
candidates; the reason is recorded.

Block influence (ShortGPT, Men et al. 2024) is ``1 − cos(block input, block output)``
averaged over positions (tokens, or pixels over channels): blocks that barely change their
input go first.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass, field

import onnx_graphsurgeon as gs

from onnxopt.graph_edit import constant_shape, replace_uses
from onnxopt.graph_walk import node_subgraphs
from onnxopt.shape_info import TensorInfo, known_shape

logger = logging.getLogger(__name__)

COMPUTE_OPS = frozenset({"MatMul", "Gemm", "Conv", "ConvTranspose", "Attention", "MultiHeadAttention"})
SHAPE_OPS = frozenset({"Shape", "Size"})


@dataclass
class Block:
    """A span ``end = f(start)`` of the main graph, its nodes and what it holds."""

    start: gs.Tensor
    end: gs.Tensor
    nodes: list[gs.Node]
    attention: bool = False
    reason: str = ""
    parts: list[Block] = field(default_factory=list)

    @property
    def label(self) -> str:
        names = [node.name for node in self.nodes if node.name and node.op in COMPUTE_OPS]
        return f"{self.start.name} -> {self.end.name}" + (f" ({names[0]} ...)" if names else "")


class _Dependencies:
    """Data ancestors and descendants of every main-graph node as bit sets (shape-only values ignored)."""

    def __init__(self, graph: gs.Graph) -> None:
        self.nodes = list(graph.nodes)
        self.index = {id(node): position for position, node in enumerate(self.nodes)}
        self.static = [False] * len(self.nodes)
        self.ancestors = [0] * len(self.nodes)
        for position, node in enumerate(self.nodes):
            data = [tensor for tensor in node.inputs if tensor.name and constant_shape(tensor) is None]
            producers = [self.producer(tensor) for tensor in data]
            if node.op in SHAPE_OPS or all(p is not None and self.static[p] for p in producers):
                self.static[position] = node.op in SHAPE_OPS or bool(data)
            bits = 0 if self.static[position] else 1 << position
            if not self.static[position]:
                for source in producers:
                    if source is not None:
                        bits |= self.ancestors[source]
            self.ancestors[position] = bits
        self.descendants = [0] * len(self.nodes)
        for position in range(len(self.nodes) - 1, -1, -1):
            if self.static[position]:
                continue
            bits = 1 << position
            for tensor in self.nodes[position].outputs:
                for reader in tensor.outputs:
                    where = self.index.get(id(reader))
                    if where is not None and not self.static[where]:
                        bits |= self.descendants[where]
            self.descendants[position] = bits

    def producer(self, tensor: gs.Tensor) -> int | None:
        if len(tensor.inputs) != 1:
            return None
        return self.index.get(id(tensor.inputs[0]))

    def is_static(self, tensor: gs.Tensor) -> bool:
        if constant_shape(tensor) is not None:
            return True
        source = self.producer(tensor)
        return source is not None and self.static[source]



def _trunk(graph: gs.Graph, deps: _Dependencies) -> tuple[int, gs.Tensor | None]:
    """Nodes computed from the primary input (as a bit set), and that input."""
    best, primary = 0, None
    for tensor in graph.inputs:
        bits = 0
        for reader in tensor.outputs:
            where = deps.index.get(id(reader))
            if where is not None and not deps.static[where]:
                bits |= deps.descendants[where]
        if bits.bit_count() > best.bit_count():
            best, primary = bits, tensor
    return best, primary


def _cuts(graph: gs.Graph, deps: _Dependencies) -> list[gs.Tensor]:
    """Cut tensors of the main graph (graph outputs included), in graph order."""
    outputs = {id(tensor) for tensor in graph.outputs}
    trunk, primary = _trunk(graph, deps)
    found = []
    for position, node in enumerate(deps.nodes):
        if deps.static[position] or not (trunk >> position) & 1 or any(True for _ in node_subgraphs(node)):
            continue
        for tensor in node.outputs:
            if (not tensor.outputs and id(tensor) not in outputs) or deps.is_static(tensor):
                continue
            below = deps.descendants[position] & ~(1 << position)
            if _is_cut(tensor, below, trunk, primary, deps):
                found.append(tensor)
    return found


def _is_cut(tensor: gs.Tensor, below: int, trunk: int, primary: gs.Tensor | None, deps: _Dependencies) -> bool:
    remaining = below
    while remaining:
        low = remaining & -remaining
        position = low.bit_length() - 1
        remaining ^= low
        for read in deps.nodes[position].inputs:
            if not read.name or read is tensor or deps.is_static(read):
                continue
            source = deps.producer(read)
            if source is None:
                if read is primary:
                    return False  # the primary input read again downstream
                continue
            if (below >> source) & 1 or not (trunk >> source) & 1:
                continue  # computed from the cut, or outside the trunk (a mask)
            return False  # trunk that bypasses the cut: a residual skip or a sibling branch
    return True


def _differs(a: gs.Tensor, b: gs.Tensor, infos: dict[str, TensorInfo]) -> bool:
    """True when the shapes are known to differ (symbolic dims are left to the data to decide)."""
    first, second = known_shape(a, infos), known_shape(b, infos)
    if first is None or second is None:
        return False
    return len(first) != len(second) or any(
        isinstance(x, int) and isinstance(y, int) and x != y for x, y in zip(first, second, strict=True))


def _residual(block: Block) -> bool:
    """True when an Add inside the block reads the block's input (``f(x) + x``)."""
    return any(node.op in ("Add", "Sum") and any(tensor is block.start for tensor in node.inputs)
               for node in block.nodes)


def find_segments(graph: gs.Graph, infos: dict[str, TensorInfo]) -> list[Block]:
    """Every span between consecutive cuts, in graph order (with a reason where it cannot be bypassed)."""
    deps = _Dependencies(graph)
    cuts = _cuts(graph, deps)
    outputs = {id(tensor) for tensor in graph.outputs}
    segments = []
    for start, end in itertools.pairwise(cuts):
        first, last = deps.producer(start), deps.producer(end)
        span = deps.descendants[first] & deps.ancestors[last] & ~(1 << first)
        nodes = [deps.nodes[position] for position in range(len(deps.nodes)) if (span >> position) & 1]
        segment = Block(start, end, nodes, attention=any(node.op == "Softmax" for node in nodes))
        if not any(node.op in COMPUTE_OPS for node in nodes):
            segment.reason = "no MatMul/Gemm/Conv inside"
        elif _differs(start, end, infos):
            segment.reason = "the block changes the shape"
        elif not _residual(segment):
            segment.reason = "not a residual block (no Add reads its input): bypassing it would not be a skip"
        elif any(id(tensor) in outputs for node in nodes for tensor in node.outputs if tensor is not end):
            segment.reason = "a graph output is computed inside the block"
        segments.append(segment)
    return segments


def find_blocks(graph: gs.Graph, infos: dict[str, TensorInfo], unit: str) -> list[Block]:
    """Candidate blocks (``unit="block"``: residual blocks/sublayers; ``"layer"``: transformer layers)."""
    segments = find_segments(graph, infos)
    if unit == "layer":
        return group_layers(segments)
    return [segment for segment in segments if any(node.op in COMPUTE_OPS for node in segment.nodes)]


def group_layers(segments: list[Block]) -> list[Block]:
    """Segments merged into transformer layers (each starting at an attention segment); CNN blocks as they are."""
    starts = [position for position, segment in enumerate(segments) if segment.attention]
    if not starts:
        return [segment for segment in segments if any(node.op in COMPUTE_OPS for node in segment.nodes)]
    size = starts[1] - starts[0] if len(starts) > 1 else len(segments) - starts[0]
    layers = []
    for number, first in enumerate(starts):
        last = starts[number + 1] if number + 1 < len(starts) else min(len(segments), first + size)
        parts = segments[first:last]
        layer = Block(parts[0].start, parts[-1].end, [node for part in parts for node in part.nodes],
                      attention=True, parts=parts)
        if any(part.reason == "the block changes the shape" for part in parts):
            layer.reason = "the layer changes the shape"
        elif any(part.reason.startswith("a graph output") for part in parts):
            layer.reason = "a graph output is computed inside the layer"
        elif not any(_residual(part) for part in parts):
            layer.reason = "not a residual layer"
        layers.append(layer)
    return layers


def bypass(graph: gs.Graph, blocks: list[Block]) -> None:
    """Remove ``blocks``: whatever read a block's output reads its input (a graph output keeps its name)."""
    outputs = {id(tensor) for tensor in graph.outputs}
    order = {id(node): position for position, node in enumerate(graph.nodes)}
    alias: dict[int, gs.Tensor] = {}
    for block in sorted(blocks, key=lambda b: order.get(id(b.end.inputs[0]) if b.end.inputs else None, 0)):
        start = alias.get(id(block.start), block.start)
        end = block.end
        if id(end) in outputs:
            end.inputs.clear()  # detach from its producer; an Identity writes it instead
            graph.nodes.append(gs.Node("Identity", f"{end.name}_bypass", inputs=[start], outputs=[end]))
        else:
            replace_uses(graph, end, start)
        alias[id(end)] = start
    graph.cleanup(remove_unused_graph_inputs=False)
    graph.toposort()
