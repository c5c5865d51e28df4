"""Which weights ``cluster-weights`` clusters, how their elements are grouped, and why not the others.

The *match/check* half of the pass. A weight is a float constant read as MatMul's or
Gemm's B, a Conv kernel, or a table read by Gather (token embeddings) or Slice (position
embeddings); it is clustered only when every node reading it
is one of those (in the main graph) and all agree on its layout, so the float tensor
really leaves the file and every reader sees the same values.

``GroupLayout`` maps the weight to the ``[G, M]`` matrix the codebooks are fitted on (one
codebook per row) and back. Groups are ``channels`` output channels (the axis each
reader's outputs run along; a Gather table's columns) times, for 2-D MatMul/Gemm weights,
``rows`` consecutive positions of the reduction axis (a table's codebooks span all rows). The inverse is a few
Reshape/Transpose steps, the same in numpy and in the emitted graph.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx_graphsurgeon as gs

from onnxopt.model_io import constant_nbytes
from onnxopt.weight_axes import weight_axis

FLOAT_WEIGHT_DTYPES = (np.dtype(np.float32), np.dtype(np.float16))
WEIGHT_SLOT = {"MatMul": 1, "Gemm": 1, "Conv": 1, "Gather": 0, "Slice": 0}
# Readers that index a table (embeddings: Gather for tokens, Slice for positions) instead of multiplying it.
TABLE_OPS = ("Gather", "Slice")

# (op, reshape target or transpose permutation) — one step of the grouped-to-stored inverse.
Step = tuple[str, tuple[int, ...]]


def largest_divisor_at_most(total: int, limit: int) -> int:
    """The largest divisor of ``total`` not above ``limit`` (``total`` itself when ``limit`` is 0)."""
    if limit <= 0 or limit >= total:
        return total
    return max(d for d in range(1, limit + 1) if total % d == 0)


@dataclass(frozen=True)
class GroupLayout:
    """How a weight's elements are grouped into codebook rows ``[G, M]``.

    ``out_axis``: the output-channel axis; ``in_axis``: the reduction axis (2-D weights),
    or None (Conv kernels: each group holds whole output channels). ``channels`` and
    ``rows`` are the group's extent along those axes (already divisors of their lengths).
    """

    shape: tuple[int, ...]
    out_axis: int
    in_axis: int | None
    channels: int
    rows: int

    @property
    def matrix(self) -> bool:
        return self.in_axis is not None and len(self.shape) == 2

    @property
    def groups(self) -> int:
        return math.prod(self.shape) // self.group_size

    @property
    def group_size(self) -> int:
        if self.matrix:
            return self.channels * self.rows
        return self.channels * math.prod(self.shape) // self.shape[self.out_axis]

    def to_groups(self, values: np.ndarray) -> np.ndarray:
        """``[G, M]`` view of ``values`` (stored layout, or any array of the weight's shape)."""
        if self.matrix:
            matrix = values if self.in_axis == 0 else values.T  # [R, C]
            r_total, c_total = matrix.shape
            blocked = matrix.reshape(r_total // self.rows, self.rows, c_total // self.channels, self.channels)
            return np.ascontiguousarray(blocked.transpose(2, 0, 1, 3)).reshape(self.groups, self.group_size)
        moved = np.moveaxis(values, self.out_axis, 0)
        return np.ascontiguousarray(moved).reshape(self.groups, self.group_size)

    def inverse_steps(self) -> list[Step]:
        """Reshape/Transpose steps from ``[G, M]`` back to the stored layout."""
        if self.matrix:
            r_total = self.shape[self.in_axis]  # type: ignore[index]
            c_total = self.shape[self.out_axis]
            steps: list[Step] = []
            if r_total != self.rows and c_total != self.channels:
                steps += [("Reshape", (c_total // self.channels, r_total // self.rows, self.rows, self.channels)),
                          ("Transpose", (1, 2, 0, 3))]
            elif c_total != self.channels:  # one row block: [C/c, R, c] -> [R, C/c, c]
                steps += [("Reshape", (c_total // self.channels, r_total, self.channels)), ("Transpose", (1, 0, 2))]
            # else one channel group: the [G, M] rows are already consecutive rows of the matrix
            steps.append(("Reshape", (r_total, c_total)))
            if self.in_axis != 0:
                steps.append(("Transpose", (1, 0)))
            return steps
        moved = (self.shape[self.out_axis], *(d for i, d in enumerate(self.shape) if i != self.out_axis))
        steps = [("Reshape", moved)]
        if self.out_axis != 0:
            perm = list(range(1, len(moved)))
            perm.insert(self.out_axis, 0)
            steps.append(("Transpose", tuple(perm)))
        return steps

    def from_groups(self, grouped: np.ndarray) -> np.ndarray:
        """Inverse of ``to_groups``, by the very steps the graph performs."""
        values = grouped
        for op, argument in self.inverse_steps():
            values = values.reshape(argument) if op == "Reshape" else values.transpose(argument)
        return np.ascontiguousarray(values)


@dataclass
class ClusterUse:
    """One node reading the weight; ``activation`` is its data input (None for Gather), whose
    channel axis ``activation_axis`` runs along the weight's ``in_axis``."""

    node: gs.Node
    activation: gs.Tensor | None = None
    activation_axis: int = -1


@dataclass
class ClusterPlan:
    """A weight to cluster, its readers and its layout."""

    constant: gs.Constant
    uses: list[ClusterUse]
    layout: GroupLayout
    notes: list[str] = field(default_factory=list)

    @property
    def op(self) -> str:
        return "/".join(sorted({use.node.op for use in self.uses}))

    @property
    def error_feedback_capable(self) -> bool:
        """A 2-D weight whose every reader multiplies a runtime activation along its rows (MatMul/Gemm)."""
        return self.layout.matrix and all(
            use.node.op in ("MatMul", "Gemm") and use.activation is not None
            and not isinstance(use.activation, gs.Constant) for use in self.uses)


@dataclass(frozen=True)
class PlanRequest:
    op_types: tuple[str, ...]
    exclude: tuple[str, ...]
    min_weight_elements: int
    group_channels: int
    group_rows: int


def _axes(node: gs.Node, rank: int) -> tuple[int, int | None, int] | str:
    """(output axis, reduction axis, activation channel axis) of a reader, or why it cannot be clustered."""
    if node.op == "Gather":
        if int(node.attrs.get("axis", 0)) != 0 or rank != 2:
            return "Gather along an axis other than 0 of a 2-D table"
        return 1, 0, -1
    if node.op == "Slice":
        return (1, 0, -1) if rank == 2 else "Slice of a table that is not 2-D"
    out_axis = weight_axis(node, WEIGHT_SLOT[node.op], rank)
    if out_axis is None:
        return f"{node.op} weight of rank {rank}"
    if node.op == "MatMul":
        if rank != 2:
            return "MatMul weight is not 2-D"
        return out_axis, 0, -1
    if node.op == "Gemm":
        return out_axis, 1 - out_axis, 0 if int(node.attrs.get("transA", 0)) else -1
    if rank < 3:
        return "Conv kernel has fewer than 3 dimensions"
    return 0, None, 1


def _patterns(exclude: Sequence[str]) -> list[re.Pattern[str]]:
    return [re.compile(entry) for entry in exclude]


def plan_clusters(graph: gs.Graph, request: PlanRequest, protected: set[str]) -> tuple[list[ClusterPlan],
                                                                                       dict[str, str]]:
    """Plans for the main graph's clusterable weights, and {weight: reason} for the others read by those ops.

    ``protected``: names never to touch (initializers that are also graph inputs).
    """
    patterns = _patterns(request.exclude)
    main_nodes = {id(node) for node in graph.nodes}
    outputs = {tensor.name for tensor in graph.outputs}
    readers: dict[int, list[tuple[gs.Node, tuple[int, int | None, int]]]] = {}
    weights: dict[int, gs.Constant] = {}
    skipped: dict[str, str] = {}
    for node in graph.nodes:
        if node.op not in request.op_types or (node.domain or "") not in ("", "ai.onnx"):
            continue
        slot = WEIGHT_SLOT[node.op]
        if len(node.inputs) <= slot or not isinstance(node.inputs[slot], gs.Constant):
            continue
        weight = node.inputs[slot]
        axes = _axes(node, len(weight.shape or ()))
        if isinstance(axes, str):
            skipped[weight.name] = axes
            continue
        if node.op not in TABLE_OPS and isinstance(node.inputs[0], gs.Constant):
            skipped[weight.name] = "both inputs constant (constant folding's job)"
            continue
        weights[id(weight)] = weight
        readers.setdefault(id(weight), []).append((node, axes))

    plans = []
    for key, uses in readers.items():
        weight = weights[key]
        reason = _refusal(weight, [node for node, _ in uses], main_nodes, outputs | protected, patterns, request)
        if reason is None and len({axes[:2] for _, axes in uses}) > 1:
            reason = "readers disagree on the weight's layout"
        if reason:
            skipped.setdefault(weight.name, reason)
            continue
        out_axis, in_axis, _ = uses[0][1]
        shape = tuple(int(d) for d in weight.shape)
        matrix = in_axis is not None and len(shape) == 2
        # A table's rows are tokens or positions, not a reduction axis: its codebooks always span every row.
        row_limit = 0 if uses[0][0].op in TABLE_OPS else request.group_rows
        layout = GroupLayout(shape, out_axis, in_axis if matrix else None,
                             largest_divisor_at_most(shape[out_axis], request.group_channels),
                             largest_divisor_at_most(shape[in_axis], row_limit) if matrix else 0)
        cluster_uses = [ClusterUse(node, None if node.op in TABLE_OPS else node.inputs[0], axes[2])
                        for node, axes in uses]
        plans.append(ClusterPlan(weight, cluster_uses, layout))
    return plans, skipped


def _refusal(weight: gs.Constant, nodes: list[gs.Node], main_nodes: set[int], untouchable: set[str],
             patterns: Sequence[re.Pattern[str]], request: PlanRequest) -> str | None:
    if weight.name in untouchable:
        return "weight is a graph output or an overridable graph input"
    readers = list(weight.outputs)
    if any(id(reader) not in main_nodes for reader in readers):
        return "weight is read inside a subgraph"
    if {id(reader) for reader in readers} != {id(node) for node in nodes}:
        others = sorted({reader.op for reader in readers} - {node.op for node in nodes}) or ["another input slot"]
        return f"weight is also read by {', '.join(others)}"
    dtype = np.dtype(weight.dtype) if weight.dtype is not None else None
    if dtype not in FLOAT_WEIGHT_DTYPES:
        return f"weight dtype {dtype} is not float32/float16"
    elements = math.prod(int(d) for d in weight.shape)
    if elements < request.min_weight_elements:
        return f"{elements} elements, below min_weight_elements={request.min_weight_elements}"
    if patterns and any(p.fullmatch(name) for p in patterns for name in [weight.name, *(n.name for n in nodes)]
                        if name):
        return "excluded"
    if constant_nbytes(weight) == 0:
        return "empty weight"
    return None
