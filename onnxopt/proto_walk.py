"""Walk every graph, value declaration and stored tensor of a ModelProto, with a label for each.

The checks on a user's file run on the protobuf, before graph-surgeon sees it: a defect
must be named where it sits ("node 'loop' body: initializer 'w'") whether it is in the
main graph, in an If/Loop/Scan body at any depth, or in a model-local function. These
walkers give every check the same places and the same labels.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import onnx

GraphLike = onnx.GraphProto | onnx.FunctionProto


@dataclass(frozen=True)
class Place:
    """A graph or function body and the words that locate it in messages ('' for the main graph)."""

    body: GraphLike
    where: str

    def label(self, text: str) -> str:
        """``text`` prefixed with where it is, e.g. ``node 'If_0' then_branch: initializer 'w'``."""
        return f"{self.where}: {text}" if self.where else text


def node_label(node: onnx.NodeProto, index: int) -> str:
    """How messages name a node: its name, or its op type and position when it has none."""
    return repr(node.name) if node.name else f"{node.op_type} #{index}"


def node_graphs(node: onnx.NodeProto) -> Iterator[tuple[str, onnx.GraphProto]]:
    """(attribute name, graph) for each subgraph a node holds (If branches, Loop/Scan bodies)."""
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.GRAPH or attr.HasField("g"):
            yield attr.name, attr.g
        for position, graph in enumerate(attr.graphs):
            yield f"{attr.name}[{position}]", graph


def _nested(place: Place) -> Iterator[Place]:
    for index, node in enumerate(place.body.node):
        for attr_name, graph in node_graphs(node):
            inner = Place(graph, place.label(f"node {node_label(node, index)} {attr_name}"))
            yield inner
            yield from _nested(inner)


def iter_places(model: onnx.ModelProto) -> Iterator[Place]:
    """The main graph, every nested subgraph, every local function and the subgraphs in it."""
    main = Place(model.graph, "")
    yield main
    yield from _nested(main)
    for function in model.functions:
        place = Place(function, f"function {function.domain or '(default)'}::{function.name}")
        yield place
        yield from _nested(place)


def iter_value_infos(place: Place) -> Iterator[tuple[str, onnx.ValueInfoProto]]:
    """(role, declaration) of every graph input, output and value_info of one body."""
    if isinstance(place.body, onnx.GraphProto):
        for value in place.body.input:
            yield "input", value
        for value in place.body.output:
            yield "output", value
    for value in place.body.value_info:
        yield "value_info", value


def iter_stored_tensors(place: Place) -> Iterator[tuple[str, onnx.TensorProto]]:
    """(label, tensor) of every tensor stored in one body: initializers, sparse parts, attributes."""
    if isinstance(place.body, onnx.GraphProto):
        for tensor in place.body.initializer:
            yield place.label(f"initializer {tensor.name!r}"), tensor
        for sparse in place.body.sparse_initializer:
            name = sparse.values.name
            yield place.label(f"sparse initializer {name!r} values"), sparse.values
            yield place.label(f"sparse initializer {name!r} indices"), sparse.indices
    for index, node in enumerate(place.body.node):
        for attr in node.attribute:
            where = place.label(f"node {node_label(node, index)} attribute {attr.name!r}")
            if attr.HasField("t"):
                yield where, attr.t
            for position, tensor in enumerate(attr.tensors):
                yield f"{where}[{position}]", tensor
            if attr.HasField("sparse_tensor"):
                yield f"{where} values", attr.sparse_tensor.values
                yield f"{where} indices", attr.sparse_tensor.indices
