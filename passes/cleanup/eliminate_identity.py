"""eliminate-identity: remove nodes that return their input unchanged.

Exporters leave Identity nodes, Reshapes to the shape a tensor already has, Transposes with
the identity permutation, Casts to the type a tensor already has, inference-mode Dropouts
and Pads of zero. Each costs a copy at run time and hides patterns from fusions.
"""

from __future__ import annotations

import logging
from collections import Counter

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from onnxopt.graph_edit import (
    Scope,
    constant_array,
    detach,
    has_attribute_refs,
    input_names,
    is_standard_op,
    iter_trees,
    output_names,
    producer,
    remove_nodes,
    replace_uses,
    subgraph_holders,
    use_counts,
)
from onnxopt.model_io import Model
from onnxopt.pass_api import Contract, Pass, PassContext, PassResult
from onnxopt.shape_info import Dim, TensorInfo, infer_tensor_infos, known_elem_type, known_shape

logger = logging.getLogger(__name__)


class _Refused(Exception):
    """A candidate that looked removable but is not; the message is the reason for the report."""




def _int_list(tensor: gs.Tensor) -> list[int] | None:
    values = constant_array(tensor)
    if values is None or values.dtype.kind not in "iu":
        return None
    return [int(v) for v in np.asarray(values).reshape(-1)]


def reshape_is_noop(source: tuple[Dim, ...] | None, target: list[int], allowzero: bool) -> bool:
    """True when Reshape(source -> target) provably returns the shape it got.

    Each target entry must copy its dimension: 0 (without allowzero) copies by definition,
    a positive entry must equal a known integer dimension, and a single -1 then infers
    exactly the remaining dimension.
    """
    if source is None or len(source) != len(target):
        return False
    for dim, want in zip(source, target, strict=True):
        if want == -1 or (want == 0 and not allowzero):
            continue
        if not isinstance(dim, int) or dim != want:
            return False
    return target.count(-1) <= 1


class EliminateIdentity(Pass):
    """Remove Identity and no-op Reshape, Transpose, Cast, Dropout (inference) and Pad nodes.

    No-op means provably so: a Reshape whose target equals the input shape (shapes from
    onnx shape inference), a Transpose with the identity permutation, a Cast to the input's
    own element type, a Dropout with no active training_mode whose mask output is unused
    (is_test set before opset 7), a constant-mode Pad whose pads are all zero. The node's
    readers then read its input. When the node's output is a graph output, its name must
    survive, so the producer of the input is made to write that name instead - only when
    the input is produced by a node of the same graph and read nowhere else (otherwise the
    node stays, with the reason in the stats). Walks If/Loop/Scan bodies and local
    functions (where shapes and types are unknown, only shape-free cases apply).
    """

    name = "eliminate-identity"
    contract = Contract.EXACT
    walks_subgraphs = True
    walks_functions = True

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        removed: Counter = Counter()
        refused: Counter = Counter()
        infos = infer_tensor_infos(model)
        for tree in iter_trees(model.graph):
            counts = use_counts(tree[0].graph)
            tree_infos = infos if tree[0].function is None else {}  # inference does not type function bodies
            for scope in tree:
                self._scope(scope, tree_infos, counts, removed, refused)
        stats: dict = {"nodes_removed": sum(removed.values())}
        stats.update({f"{op.lower()}_removed": count for op, count in sorted(removed.items())})
        if refused:
            stats["refused"] = dict(refused)
        return PassResult(stats["nodes_removed"] > 0, stats)

    def _scope(
        self, scope: Scope, infos: dict[str, TensorInfo], counts: Counter, removed: Counter, refused: Counter
    ) -> None:
        doomed: list[gs.Node] = []
        holders = subgraph_holders(scope.graph)
        for node in list(scope.graph.nodes):
            if not is_standard_op(node) or has_attribute_refs(node) or not node.outputs or not node.inputs:
                continue
            try:
                if not self._is_noop(node, scope, infos, counts):
                    continue
                self._bypass(scope, node, counts, holders)
            except _Refused as reason:
                refused[f"{node.op}: {reason}"] += 1
                continue
            doomed.append(node)
            removed[node.op] += 1
        remove_nodes(scope.graph, doomed)

    # --- match/check --------------------------------------------------------------------

    def _is_noop(self, node: gs.Node, scope: Scope, infos: dict[str, TensorInfo], counts: Counter) -> bool:
        data = node.inputs[0]
        if not data.name:
            return False
        op, opset = node.op, scope.opset
        if op == "Identity":
            return True
        if op == "Transpose":
            perm = node.attrs.get("perm")
            if perm is None:
                shape = known_shape(data, infos)
                return shape is not None and len(shape) <= 1
            return list(perm) == list(range(len(perm)))
        if op == "Cast":
            to = node.attrs.get("to")
            if isinstance(to, str):
                to = onnx.TensorProto.DataType.Value(to.upper())
            source = known_elem_type(data, infos)
            return source is not None and to is not None and int(to) == int(source)
        if op == "Reshape":
            return self._reshape_noop(node, opset, infos)
        if op == "Dropout":
            return self._dropout_noop(node, opset, counts)
        if op == "Pad":
            return self._pad_noop(node, opset)
        return False

    def _reshape_noop(self, node: gs.Node, opset: int, infos: dict[str, TensorInfo]) -> bool:
        if opset < 5:
            target = node.attrs.get("shape")
            target = [int(v) for v in target] if target is not None else None
        else:
            target = _int_list(node.inputs[1]) if len(node.inputs) > 1 else None
        if target is None:
            return False
        allowzero = bool(node.attrs.get("allowzero", 0))
        shape = known_shape(node.inputs[0], infos)
        if reshape_is_noop(shape, target, allowzero):
            return True
        if shape is None and len(target) > 0:
            raise _Refused("input shape unknown")
        return False

    def _dropout_noop(self, node: gs.Node, opset: int, counts: Counter) -> bool:
        if len(node.outputs) > 1 and node.outputs[1].name and counts[node.outputs[1].name] > 0:
            raise _Refused("mask output is used")
        if opset < 7:
            if not node.attrs.get("is_test", 0):
                raise _Refused("training mode (is_test=0)")
            return True
        if opset >= 12 and len(node.inputs) > 2 and node.inputs[2].name:
            training = constant_array(node.inputs[2])
            if training is None:
                raise _Refused("training_mode is not a constant")
            if bool(np.asarray(training).reshape(-1)[0]):
                raise _Refused("training_mode is true")
        return True

    def _pad_noop(self, node: gs.Node, opset: int) -> bool:
        mode = node.attrs.get("mode", "constant")
        if isinstance(mode, bytes):
            mode = mode.decode()
        if mode != "constant":
            return False
        if opset < 2:
            pads = node.attrs.get("paddings")
        elif opset < 11:
            pads = node.attrs.get("pads")
        else:
            pads = _int_list(node.inputs[1]) if len(node.inputs) > 1 and node.inputs[1].name else None
            if pads is None:
                return False
        return pads is not None and all(int(p) == 0 for p in pads)

    # --- rewrite ------------------------------------------------------------------------

    def _bypass(self, scope: Scope, node: gs.Node, counts: Counter, holders: list[gs.Node]) -> None:
        """Let the readers of the node's first output read its first input; keep output names."""
        graph = scope.graph
        data, result = node.inputs[0], node.outputs[0]
        read_names = [tensor.name for tensor in node.inputs if tensor.name]
        renamed = result.name in output_names(graph)
        if renamed:
            self._rename_producer(scope, node, counts)
        else:
            readers = counts[result.name]
            replace_uses(graph, result, data, holders)
            counts[data.name] += readers
            counts[result.name] = 0
        for name in read_names:
            counts[name] -= 1
        if renamed:
            counts[data.name] = 0  # the old name no longer exists

    def _rename_producer(self, scope: Scope, node: gs.Node, counts: Counter) -> None:
        """Make the producer of the node's input write the node's output (a graph output) itself."""
        graph = scope.graph
        data, result = node.inputs[0], node.outputs[0]
        source = producer(data)
        if source is None or not any(each is source for each in graph.nodes):
            raise _Refused("graph output fed by an input, constant or outer-scope tensor")
        if data.name in output_names(graph) or data.name in input_names(graph):
            raise _Refused("graph output fed by another graph output")
        reads = sum(1 for tensor in node.inputs if tensor is data)
        if counts[data.name] != reads:
            raise _Refused("graph output fed by a tensor that is read elsewhere")
        index = next(i for i, tensor in enumerate(source.outputs) if tensor is data)
        detach(node)
        source.outputs[index] = result
        logger.debug("renamed %s to graph output %s", data.name, result.name)
