"""Reading a twin's values from the kept tensor, at the lowest run-time cost.

Every reader of the twin ``T = Reshape(Transpose(K, perm), shape)`` is given one of these,
cheapest first:

* **Gemm** reading ``T`` as A or B where ``T = Kᵀ``: flip ``transA``/``transB`` and read ``K``
  (free: the kernel reads either layout).
* **MatMul** reading ``T = Kᵀ`` as B with a 2-D activation: ``Gemm(x, K, transB=1)``, the
  same product (free; onnxruntime computes it bit-identically, checked by the tests).
* **Transpose** of ``T`` (no reshape in between): its permutation composed with ``perm``,
  reading ``K`` — the consumer's transpose absorbs ours (free).
* **Reshape** of ``T`` to a constant shape without 0 entries: reads ``Transpose(K)``
  directly (our Reshape is not needed), or ``K`` itself when nothing is transposed.
* anything else (including readers inside subgraphs): one ``Transpose`` and/or ``Reshape``
  node, shared by all of them, writes the twin's values under the twin's name.
  onnxruntime folds such a node over an initializer when the session loads (graph
  optimizations on), so it costs load time, not run time; with optimizations off it runs.

Exactness of that last form depends on the reader. Data movement (Gather, Slice, Concat,
…) and element-wise ops give the same bits whether their input is an initializer or
computed. A MatMul, Gemm or Conv does not always: onnxruntime prepacks a constant weight
and multiplies a computed one with another kernel, whose sums may round differently
(measured on GPT-2's head: last-bit differences with graph optimizations off). Such reads
are counted as ``compute_reads``; the pass avoids them by keeping the other tensor of the
pair, or skips the pair.

``plan_readers`` classifies without changing anything (so the pass can compare keeping
either tensor of a pair by the nodes each choice adds); ``apply_plan`` rewrites.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import onnx_graphsurgeon as gs

from onnxopt.graph_edit import Scope, constant_array, fresh_name, is_standard_op, replace_uses, subgraph_holders
from onnxopt.graph_walk import node_subgraphs
from onnxopt.passes.sharing.twin_search import Relation

# Ops whose outputs are bit-identical whether an input is an initializer or computed: they
# move data or compute each element on its own. Anything else may take another kernel path.
SOURCE_INSENSITIVE_OPS = frozenset({
    "Identity", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Gather", "GatherElements", "GatherND",
    "Slice", "Split", "Concat", "Expand", "Tile", "Pad", "Cast", "CastLike", "Shape", "Size", "DepthToSpace",
    "SpaceToDepth", "Compress", "ScatterND", "ScatterElements", "Where", "Add", "Sub", "Mul", "Div", "Neg", "Abs",
    "Max", "Min", "Relu", "Sign", "Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "Not", "And", "Or",
})
# Gemm's C input is optional from opset 11 on; a MatMul becomes a two-input Gemm only there.
GEMM_OPTIONAL_C = 11
# Ranks of a MatMul activation, by tensor name, when known (shape inference); None = unknown.
RankOf = Callable[[gs.Tensor], int | None]


@dataclass
class ReaderPlan:
    """How each reader of one twin will read the kept tensor instead."""

    gemm_flips: list[tuple[gs.Node, list[int]]] = field(default_factory=list)
    matmul_to_gemm: list[gs.Node] = field(default_factory=list)
    folded_transposes: list[gs.Node] = field(default_factory=list)
    reshapes_of_transposed: list[gs.Node] = field(default_factory=list)
    other_reads: int = 0
    compute_reads: int = 0  # other reads by ops that may compute differently from a computed input

    @property
    def needs_transpose_node(self) -> bool:
        return self.other_reads > 0 or bool(self.reshapes_of_transposed)

    def nodes_added(self, relation: Relation) -> int:
        """Transpose/Reshape nodes the rewrite inserts (0 when every reader absorbs the layout)."""
        added = 0
        if relation.transposes and self.needs_transpose_node:
            added += 1
        if relation.reshapes and self.other_reads > 0:
            added += 1
        return added

    def free_rewrites(self) -> dict[str, int]:
        return {"gemm_flipped": len(self.gemm_flips), "matmul_to_gemm": len(self.matmul_to_gemm),
                "transposes_composed": len(self.folded_transposes)}


def _reads_at(node: gs.Node, tensor: gs.Constant) -> list[int]:
    return [slot for slot, each in enumerate(node.inputs) if each is tensor]


def _static_shape_without_zeros(node: gs.Node) -> bool:
    """A Reshape whose target is a constant that does not copy dimensions from its input."""
    if len(node.inputs) < 2:
        return False
    target = constant_array(node.inputs[1])
    if target is None:
        return False
    return bool(int(node.attrs.get("allowzero", 0))) or not np.any(np.asarray(target) == 0)


def _readers_by_name(graph: gs.Graph, name: str, top: bool = True) -> list[tuple[gs.Node, int]]:
    """(node, input slot) of every read of ``name`` in ``graph`` and the subgraphs that do not shadow it."""
    if not top and (any(t.name == name for t in graph.inputs)
                    or any(t.name == name for node in graph.nodes for t in node.outputs)):
        return []
    found = []
    for node in graph.nodes:
        found += [(node, slot) for slot, tensor in enumerate(node.inputs) if tensor.name == name]
        for sub in node_subgraphs(node):
            found += _readers_by_name(sub, name, top=False)
    return found


def plan_readers(home: Scope, twin: gs.Constant, relation: Relation, rank_of: RankOf) -> ReaderPlan:
    """Classify every read of ``twin`` in its home graph and the graphs nested in it."""
    plan = ReaderPlan()
    local = {id(node) for node in home.graph.nodes}
    handled: set[tuple[int, int]] = set()
    for node in list(twin.outputs):
        if id(node) not in local or not is_standard_op(node):
            continue
        slots = _reads_at(node, twin)
        if node.op == "Gemm" and relation.is_matrix_transpose and slots and set(slots) <= {0, 1}:
            plan.gemm_flips.append((node, slots))
        elif (node.op == "MatMul" and relation.is_matrix_transpose and slots == [1] and home.opset >= GEMM_OPTIONAL_C
              and rank_of(node.inputs[0]) == 2 and len(node.outputs) == 1):
            plan.matmul_to_gemm.append(node)
        elif node.op == "Transpose" and slots == [0] and not relation.reshapes:
            plan.folded_transposes.append(node)
        elif node.op == "Reshape" and slots == [0] and _static_shape_without_zeros(node):
            if relation.transposes:
                plan.reshapes_of_transposed.append(node)
            else:
                plan.folded_transposes.append(node)  # reads the kept tensor as it is: free
        else:
            continue
        handled.update((id(node), slot) for slot in slots)
    for node, slot in _readers_by_name(home.graph, twin.name):
        if (id(node), slot) in handled:
            continue
        plan.other_reads += 1
        if not (is_standard_op(node) and node.op in SOURCE_INSENSITIVE_OPS):
            plan.compute_reads += 1
    return plan


def apply_plan(home: Scope, twin: gs.Constant, keeper: gs.Constant, relation: Relation, plan: ReaderPlan,
               taken: set[str]) -> int:
    """Rewrite every reader of ``twin`` to read ``keeper``; returns the number of nodes added.

    The tensor that replaces the twin takes the twin's name (the twin leaves the graph);
    other new names are drawn fresh from ``taken``.
    """
    for node, slots in plan.gemm_flips:
        for slot in slots:
            flag = "transA" if slot == 0 else "transB"
            node.attrs[flag] = 1 - int(node.attrs.get(flag, 0))
            node.inputs[slot] = keeper
    for node in plan.matmul_to_gemm:
        node.op = "Gemm"
        node.attrs = {"transB": 1}
        node.inputs[1] = keeper
    for node in plan.folded_transposes:
        if node.op == "Transpose":
            current = node.attrs.get("perm")
            order = list(current) if current is not None else list(reversed(range(len(relation.perm))))
            node.attrs["perm"] = [int(relation.perm[axis]) for axis in order]
        node.inputs[0] = keeper

    added: list[gs.Node] = []
    transposed: gs.Tensor = keeper
    if relation.transposes and plan.needs_transpose_node:
        name = twin.name if not relation.reshapes or plan.other_reads == 0 else fresh_name(f"{twin.name}/transposed",
                                                                                              taken)
        transposed = gs.Variable(name, dtype=twin.dtype, shape=list(relation.transposed_shape))
        added.append(gs.Node("Transpose", f"{twin.name}/Transpose", attrs={"perm": list(relation.perm)},
                             inputs=[keeper], outputs=[transposed]))
    for node in plan.reshapes_of_transposed:
        node.inputs[0] = transposed
    if plan.other_reads > 0:
        restored = transposed
        if relation.reshapes:
            restored = gs.Variable(twin.name, dtype=twin.dtype, shape=list(relation.twin_shape))
            shape = gs.Constant(fresh_name(f"{twin.name}/shape", taken), np.array(relation.twin_shape, dtype=np.int64))
            added.append(gs.Node("Reshape", f"{twin.name}/Reshape", inputs=[transposed, shape], outputs=[restored]))
        replace_uses(home.graph, twin, restored, subgraph_holders(home.graph))
    home.graph.nodes.extend(added)
    return len(added)
