"""Which weights the weight-only pass can quantize, how to view them, and why not the others.

The *match/check* half of the weight-only pass (the rewrite lives in
``onnxopt.passes.quantization.weight_only_emit``). A weight is a constant read as MatMul's or Gemm's B, Conv's
kernel or Gather's table (an embedding). It is quantized only when *every* node reading it
is one of those and all agree on the axis that the blocks run along (the reduction axis),
so the float tensor really leaves the file; a weight also read by anything else (a tied
embedding read through a Transpose, an Add, a subgraph) is skipped with a reason.

``WeightView`` turns a weight of any of those layouts into the ``[K, N]`` matrix the
quantizers work on (rows along the reduction axis) and back, and lays the ``[G, N]``
scales out the way ``DequantizeLinear`` expects them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx_graphsurgeon as gs

from onnxopt.model_io import constant_nbytes

FLOAT_WEIGHT_DTYPES = (np.dtype(np.float32), np.dtype(np.float16))
# Input slot that holds the weight, per op type.
WEIGHT_SLOT = {"MatMul": 1, "Gemm": 1, "Conv": 1, "Gather": 0}


@dataclass(frozen=True)
class WeightView:
    """How a stored weight maps to ``[K, N]`` (K = reduction axis, N = outputs).

    ``blocked``: groups of ``block_size`` along ``reduce_axis`` (DequantizeLinear ``block_size``).
    Otherwise one group per output channel: for 2-D weights the output axis is the other
    one; with ``flatten`` (Conv) the output axis is 0 and every other axis is reduced.
    """

    shape: tuple[int, ...]
    reduce_axis: int
    blocked: bool
    flatten: bool = False

    @property
    def rest_shape(self) -> tuple[int, ...]:
        return tuple(d for axis, d in enumerate(self.shape) if axis != self.reduce_axis)

    @property
    def k(self) -> int:
        return int(np.prod(self.shape[1:])) if self.flatten else self.shape[self.reduce_axis]

    @property
    def n(self) -> int:
        return self.shape[0] if self.flatten else int(np.prod(self.rest_shape))

    @property
    def output_axis(self) -> int:
        """The per-channel DequantizeLinear axis (only meaningful when not blocked)."""
        return 0 if self.flatten else 1 - self.reduce_axis

    def to_kn(self, values: np.ndarray) -> np.ndarray:
        if self.flatten:
            return values.reshape(self.shape[0], -1).T
        return np.moveaxis(values, self.reduce_axis, 0).reshape(self.shape[self.reduce_axis], -1)

    def from_kn(self, matrix: np.ndarray) -> np.ndarray:
        """Codes ``[K, N]`` back to the stored weight's layout."""
        if self.flatten:
            return np.ascontiguousarray(matrix.T.reshape(self.shape))
        return np.ascontiguousarray(np.moveaxis(matrix.reshape(matrix.shape[0], *self.rest_shape), 0, self.reduce_axis))

    def group_params(self, params_gn: np.ndarray) -> np.ndarray:
        """``[G, N]`` scales/zero points in DequantizeLinear's layout (blocked or 1-D per axis)."""
        if not self.blocked:
            return np.ascontiguousarray(params_gn.reshape(-1))
        shaped = params_gn.reshape(params_gn.shape[0], *self.rest_shape)
        return np.ascontiguousarray(np.moveaxis(shaped, 0, self.reduce_axis))


@dataclass
class WeightUse:
    """One node reading a weight: which slot, along which axis, and its activation input.

    ``activation`` is the node's data input whose statistics GPTQ needs (MatMul/Gemm only);
    ``activation_transposed`` is Gemm's transA (the activation arrives as ``[K, M]``).
    """

    node: gs.Node
    slot: int
    reduce_axis: int
    flatten: bool = False
    activation: gs.Tensor | None = None
    activation_transposed: bool = False


@dataclass
class WeightPlan:
    """A weight to quantize, the nodes reading it, and the form it will take."""

    constant: gs.Constant
    uses: list[WeightUse]
    view: WeightView
    scheme: str
    form: str  # "dq", "matmulnbits" or "gather-block"
    notes: list[str] = field(default_factory=list)

    @property
    def ops(self) -> set[str]:
        return {use.node.op for use in self.uses}

    @property
    def gptq_capable(self) -> bool:
        """Every reader is a MatMul/Gemm with a runtime activation (GPTQ needs its statistics)."""
        return all(use.activation is not None and not isinstance(use.activation, gs.Constant) for use in self.uses)


@dataclass(frozen=True)
class PlanRequest:
    """What the pass asks for (a view of its options that planning needs)."""

    scheme: str
    block_size: int
    form: str  # "dq" or "matmulnbits"
    op_types: tuple[str, ...]
    quantize_embeddings: bool
    exclude: tuple[str, ...]
    min_weight_elements: int


def _use_of(node: gs.Node, request: PlanRequest) -> WeightUse | str | None:
    """The WeightUse of ``node``'s weight slot, a reason it cannot be quantized, or None (no constant weight)."""
    slot = WEIGHT_SLOT[node.op]
    if len(node.inputs) <= slot or not isinstance(node.inputs[slot], gs.Constant):
        return None
    weight = node.inputs[slot]
    if node.op == "Gather":
        if int(node.attrs.get("axis", 0)) != 0 or len(weight.shape) != 2:
            return "Gather along an axis other than 0 of a 2-D table"
        return WeightUse(node, slot, reduce_axis=1)
    activation = node.inputs[0]
    if isinstance(activation, gs.Constant):
        return "both inputs constant (constant folding's job)"
    if node.op == "MatMul":
        if len(weight.shape) != 2:
            return "MatMul weight is not 2-D"
        return WeightUse(node, slot, reduce_axis=0, activation=activation)
    if node.op == "Gemm":
        if len(weight.shape) != 2:
            return "Gemm weight is not 2-D"
        trans_b = int(node.attrs.get("transB", 0))
        trans_a = int(node.attrs.get("transA", 0))
        return WeightUse(node, slot, reduce_axis=1 if trans_b else 0, activation=activation,
                         activation_transposed=bool(trans_a))
    # Conv: block along input channels when a group has enough of them, else per output channel.
    if len(weight.shape) < 3:
        return "Conv kernel has fewer than 3 dimensions"
    if request.scheme == "int4" and weight.shape[1] >= request.block_size:
        return WeightUse(node, slot, reduce_axis=1)
    return WeightUse(node, slot, reduce_axis=0, flatten=True)


def _matches_any(patterns: Sequence[re.Pattern[str]], names: Sequence[str]) -> bool:
    return any(pattern.fullmatch(name) for pattern in patterns for name in names if name)


def compile_patterns(exclude: Sequence[str]) -> list[re.Pattern[str]]:
    """Exclusion entries as regexes (a plain node name matches itself)."""
    return [re.compile(entry) for entry in exclude]


def _mnb_reason(use: WeightUse) -> str | None:
    """Why a MatMul/Gemm cannot become MatMulNBits (None when it can)."""
    activation_shape = use.node.inputs[0].shape
    if use.node.op == "MatMul":
        return "MatMul with a 1-D input" if activation_shape is not None and len(activation_shape) < 2 else None
    if int(use.node.attrs.get("transA", 0)):
        return "Gemm with transA (MatMulNBits has no transposed input)"
    if len(use.node.inputs) > 2 and use.node.inputs[2].name:
        bias = use.node.inputs[2]
        n = use.node.inputs[1].shape[0 if use.node.attrs.get("transB", 0) else 1]
        if not isinstance(bias, gs.Constant):
            return "Gemm with a runtime C input"
        size = int(np.prod(bias.shape)) if bias.shape else 1
        if size not in (1, n) or (len(bias.shape) == 2 and bias.shape[0] != 1):
            return "Gemm whose C is not a per-output bias"
    return None


def plan_weights(graph: gs.Graph, request: PlanRequest) -> tuple[list[WeightPlan], dict[str, str]]:
    """Plans for the main graph's quantizable weights, and {weight or node: reason} for the rest."""
    patterns = compile_patterns(request.exclude)
    main_nodes = {id(node) for node in graph.nodes}
    graph_outputs = {id(tensor) for tensor in graph.outputs}
    enabled = set(request.op_types) | ({"Gather"} if request.quantize_embeddings else set())
    uses_by_weight: dict[int, list[WeightUse]] = {}
    weights: dict[int, gs.Constant] = {}
    skipped: dict[str, str] = {}
    for node in graph.nodes:
        if node.op not in enabled:
            continue
        use = _use_of(node, request)
        if use is None:
            continue
        weight = node.inputs[WEIGHT_SLOT[node.op]]
        if isinstance(use, str):
            skipped[weight.name] = use
            continue
        weights[id(weight)] = weight
        uses_by_weight.setdefault(id(weight), []).append(use)

    plans = []
    for key, uses in uses_by_weight.items():
        weight = weights[key]
        reason = _check_weight(weight, uses, main_nodes, graph_outputs, patterns, request)
        if reason:
            skipped.setdefault(weight.name, reason)
            continue
        first = uses[0]
        has_gather = any(use.node.op == "Gather" for use in uses)
        scheme = "int4" if has_gather else request.scheme
        blocked = scheme == "int4" and not first.flatten
        view = WeightView(tuple(int(d) for d in weight.shape), first.reduce_axis, blocked, first.flatten)
        form, fallback = _form_of(uses, request)
        plan = WeightPlan(weight, uses, view, scheme, form)
        if fallback:
            plan.notes.append(f"{weight.name}: DequantizeLinear instead of MatMulNBits ({fallback})")
        plans.append(plan)
    return plans, skipped


def _check_weight(weight: gs.Constant, uses: list[WeightUse], main_nodes: set[int], graph_outputs: set[int],
                  patterns: Sequence[re.Pattern[str]], request: PlanRequest) -> str | None:
    readers = list(weight.outputs)
    if id(weight) in graph_outputs:
        return "weight is also a graph output"
    if any(id(reader) not in main_nodes for reader in readers):
        return "weight is read inside a subgraph"
    if len(readers) != len(uses) or {id(use.node) for use in uses} != {id(reader) for reader in readers}:
        others = sorted({reader.op for reader in readers} - {use.node.op for use in uses}) or ["the same node twice"]
        return f"weight is also read by {', '.join(others)}"
    if len({(use.reduce_axis, use.flatten) for use in uses}) > 1:
        return "nodes read the weight along different axes"
    dtype = np.dtype(weight.dtype) if weight.dtype is not None else None
    if dtype not in FLOAT_WEIGHT_DTYPES:
        return f"weight dtype {dtype} is not float32/float16"
    elements = int(np.prod(weight.shape)) if weight.shape else 0
    if elements < request.min_weight_elements:
        return f"{elements} elements, below min_weight_elements={request.min_weight_elements}"
    if patterns and _matches_any(patterns, [weight.name, *(use.node.name for use in uses)]):
        return "excluded"
    if constant_nbytes(weight) == 0:
        return "empty weight"
    return None


def _form_of(uses: list[WeightUse], request: PlanRequest) -> tuple[str, str | None]:
    """The rewrite form, and why a weight asked to be ``matmulnbits`` takes the ``dq`` form instead.

    onnxruntime's contrib ops cover MatMul/Gemm (MatMulNBits) and embedding Gathers
    (GatherBlockQuantized); Conv kernels, Gemm with transA or a non-bias C, and weights
    shared across those roles (tied embeddings) fall back to DequantizeLinear.
    """
    ops = {use.node.op for use in uses}
    if request.form == "dq":
        return "dq", None
    if "Conv" in ops:
        return "dq", None
    if ops == {"Gather"}:
        return "gather-block", None
    if "Gather" in ops:
        return "dq", "tied weight read by Gather and MatMul/Gemm"
    for use in uses:
        reason = _mnb_reason(use)
        if reason:
            return "dq", reason
    return "matmulnbits", None
