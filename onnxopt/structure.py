"""Structural checks run after every pass.

A pass that leaves a dangling input, a duplicated tensor name, an unknown domain or a
missing function must be caught before anything is written. These checks are cheap and
name the problem; ``onnx.checker`` then runs on a weight-stripped export.
"""

from __future__ import annotations

import onnx
import onnx_graphsurgeon as gs

from onnxopt.errors import BadInputError
from onnxopt.graph_walk import node_subgraphs
from onnxopt.model_io import Model, check_proto, checkable_proto


class StructureError(Exception):
    """The graph is malformed after a pass."""


def _check_graph(graph: gs.Graph, outer: set[str], where: str) -> None:
    defined = set(outer)
    for tensor in graph.inputs:
        defined.add(tensor.name)
    for tensor in graph.tensors().values():
        if isinstance(tensor, gs.Constant):
            defined.add(tensor.name)
    produced: set[str] = set()
    for index, node in enumerate(graph.nodes):
        label = node.name or f"{node.op} #{index}"
        for tensor in node.inputs:
            if tensor.name and tensor.name not in defined:
                raise StructureError(f"{where}: node {label!r} reads {tensor.name!r} before it is defined")
        for sub in node_subgraphs(node):
            _check_graph(sub, defined, f"{where}/{label}")
        for tensor in node.outputs:
            if not tensor.name:
                continue
            if tensor.name in produced:
                raise StructureError(f"{where}: tensor {tensor.name!r} is produced twice")
            if isinstance(tensor, gs.Constant):
                raise StructureError(f"{where}: node {label!r} writes constant {tensor.name!r}")
            produced.add(tensor.name)
            defined.add(tensor.name)
    for tensor in graph.outputs:
        if tensor.name not in defined:
            raise StructureError(f"{where}: graph output {tensor.name!r} is not produced")
    names = [tensor.name for tensor in graph.outputs]
    if len(set(names)) != len(names):
        raise StructureError(f"{where}: duplicate graph output names")


def _check_domains(proto: onnx.ModelProto) -> None:
    imported = {opset.domain for opset in proto.opset_import}
    functions = {(function.domain, function.name) for function in proto.functions}

    def visit(nodes, where: str) -> None:
        for node in nodes:
            if (node.domain or "") not in imported and (node.domain, node.op_type) not in functions:
                raise StructureError(
                    f"{where}: node {node.name or node.op_type!r} uses domain {node.domain!r} with no opset import"
                )
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    visit(attr.g.node, where)
                elif attr.type == onnx.AttributeProto.GRAPHS:
                    for sub in attr.graphs:
                        visit(sub.node, where)

    visit(proto.graph.node, "main graph")


def check_structure(model: Model) -> None:
    """Raise StructureError naming the first structural problem of ``model``."""
    _check_graph(model.graph, set(), "main graph")
    for function in model.graph.functions:
        _check_graph(function, set(), f"function {function.name}")
    proto = checkable_proto(model)
    _check_domains(proto)
    try:
        check_proto(proto, "optimized model")
    except BadInputError as error:
        raise StructureError(str(error)) from None
