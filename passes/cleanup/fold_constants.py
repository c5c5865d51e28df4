"""fold-constants: compute once, at optimization time, what depends only on constants.

Shape arithmetic (Shape -> Gather -> Concat -> Reshape), weight transposes and casts of
constants are recomputed on every run unless folded. Folding must never bloat the model:
a ConstantOfShape or Tile that expands a few bytes into megabytes stays a node.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx_graphsurgeon.exporters.onnx_exporter import OnnxExporter

from onnxopt.graph_edit import (
    NON_DETERMINISTIC_OPS,
    Scope,
    calls_function,
    constant_array,
    constant_onnx_dtype,
    constant_shape,
    constant_source,
    detach,
    function_ids,
    has_attribute_refs,
    is_standard_op,
    iter_trees,
    node_domain,
    node_opset,
    node_subgraphs,
    output_names,
    remove_nodes,
    use_counts,
)
from onnxopt.model_io import Model, constant_nbytes
from onnxopt.node_eval import EvaluationError, evaluate_node, predict_output_shapes
from onnxopt.pass_api import Contract, Pass, PassContext, PassOptions, PassResult

logger = logging.getLogger(__name__)

# How many refused nodes the notes name individually (the stats count all of them by reason).
_MAX_LISTED_REFUSALS = 10


@dataclass(frozen=True)
class FoldConstantsOptions(PassOptions):
    """``max_growth_bytes``: largest allowed growth of one fold - its outputs minus the
    constant inputs that disappear with it. The default lets shape-sized results (a few
    int64 values) through and keeps any tensor-expanding op (ConstantOfShape, Tile, Expand,
    Range) unfolded."""

    max_growth_bytes: int = 128


class _Refused(Exception):
    """A fold that was considered and declined; ``category`` groups the stats."""

    def __init__(self, category: str, detail: str = "") -> None:
        super().__init__(detail or category)
        self.category = category
        self.detail = detail or category


def _nbytes(source: gs.Constant | np.ndarray) -> int:
    return constant_nbytes(source) if isinstance(source, gs.Constant) else int(np.asarray(source).nbytes)


def _clamp(index: int, rank: int) -> int:
    if index < 0:
        index += rank
    return min(max(index, 0), rank)


class FoldConstants(Pass):
    """Replace nodes whose inputs are all constant by their computed outputs.

    Each node is evaluated once with onnxruntime on the CPU, graph optimizations off (the
    folded bytes equal what the runtime computes), falling back to onnx's reference
    evaluator where onnxruntime cannot run it; Shape and Size of a constant are read from
    its dims without loading it. A fold is refused when its outputs exceed the constant
    inputs it frees by more than ``max_growth_bytes`` (checked from inferred output
    shapes before computing, and again after). Never folded: random ops, ops of custom
    domains or local functions, nodes holding subgraphs, nodes writing a graph output.
    Chains fold in one run. Walks If/Loop/Scan bodies and local functions.
    """

    name = "fold-constants"
    contract = Contract.EXACT
    walks_subgraphs = True
    walks_functions = True
    Options = FoldConstantsOptions

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        self._stats: Counter = Counter(nodes_folded=0, bytes_added=0, bytes_freed=0, evaluated_by_reference=0)
        self._refused: Counter = Counter()
        self._refused_nodes: list[str] = []
        functions = function_ids(model.graph)
        for tree in iter_trees(model.graph):
            counts = use_counts(tree[0].graph)
            for scope in tree:
                self._fold_scope(scope, model.graph, functions, counts)
        stats: dict = dict(self._stats)
        if self._refused:
            stats["refused"] = dict(self._refused)
        return PassResult(self._stats["nodes_folded"] > 0, stats, notes=list(self._refused_nodes))

    def _fold_scope(self, scope: Scope, main: gs.Graph, functions: set, counts: Counter) -> None:
        folded: list[gs.Node] = []
        protected = output_names(scope.graph)
        for node in list(scope.graph.nodes):
            if node.op == "Constant" or not self._all_inputs_constant(node):
                continue
            if all(counts[tensor.name] == 0 for tensor in node.outputs if tensor.name):
                continue  # dead: eliminate-dead removes it, computing it would be wasted work
            try:
                self._check(node, functions, protected)
                outputs = self._compute(node, scope, main, counts)
            except _Refused as refusal:
                self._refused[refusal.category] += 1
                if len(self._refused_nodes) < _MAX_LISTED_REFUSALS:
                    label = node.name or node.outputs[0].name
                    self._refused_nodes.append(f"not folded: {node.op} {label!r}: {refusal.detail}")
                continue
            self._rewrite(node, outputs, counts)
            folded.append(node)
        remove_nodes(scope.graph, folded)

    # --- match/check --------------------------------------------------------------------

    @staticmethod
    def _all_inputs_constant(node: gs.Node) -> bool:
        return all(not tensor.name or constant_source(tensor) is not None for tensor in node.inputs)

    def _check(self, node: gs.Node, functions: set, protected: set[str]) -> None:
        named = [tensor.name for tensor in node.outputs if tensor.name]
        if calls_function(node, functions):
            raise _Refused("calls a local function")
        if not is_standard_op(node):
            raise _Refused("custom domain", f"domain {node_domain(node)!r}")
        if node.op in NON_DETERMINISTIC_OPS:
            raise _Refused("non-deterministic op")
        if any(True for _ in node_subgraphs(node)):
            raise _Refused("holds a subgraph")
        if has_attribute_refs(node):
            raise _Refused("reads a function attribute")
        if any(name in protected for name in named):
            raise _Refused("writes a graph output")

    def _freed_bytes(self, node: gs.Node, counts: Counter) -> int:
        """Bytes of constant inputs that only this node reads (they disappear with the fold)."""
        reads = Counter(tensor.name for tensor in node.inputs if tensor.name)
        freed = 0
        for tensor in {id(t): t for t in node.inputs if t.name}.values():
            if counts[tensor.name] == reads[tensor.name]:
                freed += _nbytes(constant_source(tensor))
        return freed

    def _limit(self, node: gs.Node, out_bytes: int, freed: int) -> None:
        cap = self.options.max_growth_bytes
        if out_bytes - freed > cap:
            raise _Refused(
                "would grow the model by more than max_growth_bytes",
                f"{out_bytes} bytes out, {freed} freed (cap {cap})",
            )

    # --- evaluation ---------------------------------------------------------------------

    def _compute(self, node: gs.Node, scope: Scope, main: gs.Graph, counts: Counter) -> list[np.ndarray]:
        freed = self._freed_bytes(node, counts)
        if node.op in ("Shape", "Size") and len(node.inputs) == 1:
            outputs = [self._shape_or_size(node)]
        else:
            node_proto = OnnxExporter.export_node(node)
            opsets = [onnx.helper.make_opsetid("", scope.opset)]
            if node_domain(node) not in ("", "ai.onnx"):
                opsets.append(onnx.helper.make_opsetid(node_domain(node), node_opset(scope, node, main)))
            self._precheck_size(node, node_proto, opsets, freed)
            inputs = {}
            for tensor in node.inputs:
                if tensor.name and tensor.name not in inputs:
                    inputs[tensor.name] = np.asarray(constant_array(tensor))
            try:
                outputs, engine = evaluate_node(node_proto, inputs, opsets)
            except EvaluationError as error:
                raise _Refused("cannot evaluate", str(error)) from None
            if engine != "onnxruntime":
                self._stats["evaluated_by_reference"] += 1
        if any(value.dtype.kind in "OSU" for value in outputs):
            raise _Refused("string output")
        self._limit(node, sum(int(value.nbytes) for value in outputs), freed)
        self._stats["bytes_freed"] += freed
        return outputs

    def _shape_or_size(self, node: gs.Node) -> np.ndarray:
        shape = constant_shape(node.inputs[0])
        assert shape is not None
        if node.op == "Size":
            return np.array(int(np.prod(shape, dtype=np.int64)), dtype=np.int64)
        rank = len(shape)
        start = _clamp(int(node.attrs.get("start", 0)), rank)
        end = _clamp(int(node.attrs.get("end", rank)), rank)
        return np.array(shape[start:end], dtype=np.int64)

    def _precheck_size(self, node: gs.Node, node_proto: onnx.NodeProto, opsets: list, freed: int) -> None:
        """Refuse before computing when inference already shows the result is too large."""
        input_types = {}
        small_values = {}
        for tensor in node.inputs:
            if not tensor.name or tensor.name in input_types:
                continue
            elem_type, shape = constant_onnx_dtype(tensor), constant_shape(tensor)
            if elem_type is None or shape is None:
                return
            input_types[tensor.name] = (elem_type, shape)
            source = constant_source(tensor)
            if _nbytes(source) <= 64 * 1024:
                small_values[tensor.name] = np.asarray(constant_array(tensor))
        predicted = predict_output_shapes(node_proto, input_types, small_values, opsets)
        total = 0
        for name in (tensor.name for tensor in node.outputs if tensor.name):
            if name not in predicted:
                return
            elem_type, shape = predicted[name]
            if elem_type == onnx.TensorProto.STRING:
                return
            itemsize = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type)).itemsize
            total += int(np.prod(shape, dtype=np.int64)) * itemsize
        self._limit(node, total, freed)

    # --- rewrite ------------------------------------------------------------------------

    def _rewrite(self, node: gs.Node, outputs: list[np.ndarray], counts: Counter) -> None:
        for tensor in node.inputs:
            if tensor.name:
                counts[tensor.name] -= 1
        results = [tensor for tensor in node.outputs if tensor.name]
        detach(node)
        for tensor, value in zip(results, outputs, strict=True):
            tensor.to_constant(np.array(value, copy=True))
            self._stats["bytes_added"] += int(value.nbytes)
        self._stats["nodes_folded"] += 1
