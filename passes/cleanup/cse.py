"""cse: compute each distinct expression once.

Exporters duplicate work freely (the same Shape/Gather chain per attention layer, the
same Transpose of one input twice). Two nodes with the same op, attributes and inputs
compute the same value, so one of them can go.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx_graphsurgeon as gs

from onnxopt.graph_edit import (
    NON_DETERMINISTIC_OPS,
    Scope,
    detach,
    function_ids,
    is_standard_op,
    iter_scopes,
    node_domain,
    node_subgraphs,
    output_names,
    remove_nodes,
    replace_uses,
    subgraph_holders,
)
from onnxopt.model_io import Model
from onnxopt.pass_api import Contract, Pass, PassContext, PassResult
from onnxopt.tensor_content import array_key_bytes, content_digest, content_key, contents_equal

logger = logging.getLogger(__name__)


class _Unhashable(Exception):
    """An attribute value we cannot compare exactly; the node is left alone."""


def _attr_key(value: object) -> object:
    """An exact, hashable identity of an attribute value (floats by bit pattern: -0.0 != 0.0)."""
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, int):
        return ("int", value)
    if isinstance(value, float):
        return ("float", float(value).hex())
    if isinstance(value, str):
        return ("str", value)
    if isinstance(value, bytes):
        return ("bytes", value)
    if isinstance(value, (list, tuple)):
        return ("list", tuple(_attr_key(item) for item in value))
    if isinstance(value, gs.Constant):
        key = content_key(value)
        if key is None:
            raise _Unhashable("tensor attribute")
        # Large attribute tensors: hash here, compare bytes on a match (see _same_attributes).
        return ("tensor", key, content_digest(value))
    if isinstance(value, np.ndarray):
        return ("array", *array_key_bytes(value))
    if isinstance(value, (type, np.dtype)):
        return ("dtype", str(np.dtype(value)))
    if isinstance(value, gs.Node.AttributeRef):
        return ("ref", value.name, str(value.type))
    raise _Unhashable(type(value).__name__)


def _node_key(node: gs.Node) -> tuple:
    attrs = tuple(sorted((name, _attr_key(value)) for name, value in node.attrs.items()))
    inputs = tuple(tensor.name for tensor in node.inputs)
    return (node_domain(node), node.op, attrs, inputs, len(node.outputs))


def _same_attributes(first: gs.Node, second: gs.Node) -> bool:
    """Confirm tensor-valued attributes byte for byte (the key only carries their hash)."""
    for name, value in first.attrs.items():
        other = second.attrs.get(name)
        if isinstance(value, gs.Constant) and not (isinstance(other, gs.Constant) and contents_equal(value, other)):
            return False
    return True


class CommonSubexpressionElimination(Pass):
    """Merge nodes with the same domain, op, attributes and inputs (in order).

    The later node's readers are pointed at the earlier node's outputs. When the later
    node writes an output of its graph (main graph, subgraph or function), the earlier node
    takes over that name instead, provided its own output is not a graph output too. Skipped:
    random ops and Dropout, ops of custom domains and calls of local functions (their
    determinism is unknown), nodes holding subgraphs, nodes without outputs. Merges
    happen within one graph; walks If/Loop/Scan bodies and local functions.
    """

    name = "cse"
    contract = Contract.EXACT
    walks_subgraphs = True
    walks_functions = True

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        stats = {"nodes_merged": 0, "skipped_graph_outputs": 0}
        functions = function_ids(model.graph)
        for scope in iter_scopes(model.graph):
            self._scope(scope, functions, stats)
        return PassResult(stats["nodes_merged"] > 0, stats)

    def _eligible(self, node: gs.Node, functions: set) -> bool:
        if not node.outputs or not any(tensor.name for tensor in node.outputs):
            return False
        if not is_standard_op(node) or (node_domain(node), node.op) in functions:
            return False
        if node.op in NON_DETERMINISTIC_OPS:
            return False
        return not any(True for _ in node_subgraphs(node))

    def _scope(self, scope: Scope, functions: set, stats: dict) -> None:
        graph = scope.graph
        protected = output_names(graph)
        holders = subgraph_holders(graph)
        seen: dict[tuple, list[gs.Node]] = {}
        doomed: list[gs.Node] = []
        for node in list(graph.nodes):
            if not self._eligible(node, functions):
                continue
            try:
                key = _node_key(node)
            except _Unhashable:
                continue
            earlier = next((other for other in seen.get(key, []) if _same_attributes(other, node)), None)
            if earlier is None:
                seen.setdefault(key, []).append(node)
                continue
            if not self._merge(scope, earlier, node, protected, holders):
                stats["skipped_graph_outputs"] += 1
                continue
            doomed.append(node)
            stats["nodes_merged"] += 1
        remove_nodes(graph, doomed)

    def _merge(
        self, scope: Scope, keeper: gs.Node, duplicate: gs.Node, protected: set[str], holders: list[gs.Node]
    ) -> bool:
        """Point readers of ``duplicate``'s outputs at ``keeper``'s; False if names forbid it."""
        pairs = list(zip(keeper.outputs, duplicate.outputs, strict=True))
        for kept, dup in pairs:
            if dup.name in protected and (kept.name in protected or not kept.name):
                return False  # both names are graph outputs, or the keeper omits this output
            if dup.name and not kept.name:
                return False  # the keeper does not compute an output the duplicate provides
        graph = scope.graph
        dup_outputs = list(duplicate.outputs)
        detach(duplicate)
        for index, (kept, dup) in enumerate(zip(keeper.outputs, dup_outputs, strict=True)):
            if not dup.name:
                continue
            if dup.name in protected:
                # The graph output's name must survive: the keeper writes it, and its old
                # readers follow (the keeper precedes them all).
                replace_uses(graph, kept, dup, holders)
                keeper.outputs[index] = dup
            else:
                replace_uses(graph, dup, kept, holders)
        logger.debug("merged %s into %s", duplicate.name or duplicate.op, keeper.name or keeper.op)
        return True
