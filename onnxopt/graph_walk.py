"""Walk every graph of a model: the main graph, If/Loop/Scan bodies and local functions.

Passes call these instead of ``graph.nodes`` alone so that a rewrite never silently
skips the bodies of control-flow nodes or model-local functions.
"""

from __future__ import annotations

from collections.abc import Iterator

import onnx_graphsurgeon as gs


def node_subgraphs(node: gs.Node) -> Iterator[gs.Graph]:
    """Graphs held directly in a node's attributes (If branches, Loop/Scan bodies)."""
    for value in node.attrs.values():
        if isinstance(value, gs.Graph):
            yield value
        elif isinstance(value, (list, tuple)):
            for item in value:
                if isinstance(item, gs.Graph):
                    yield item


def iter_subgraphs(graph: gs.Graph) -> Iterator[gs.Graph]:
    """Every nested subgraph of ``graph``, depth first, not including ``graph`` itself."""
    for node in graph.nodes:
        for sub in node_subgraphs(node):
            yield sub
            yield from iter_subgraphs(sub)


def iter_all_graphs(graph: gs.Graph, include_functions: bool = True) -> Iterator[gs.Graph]:
    """The main graph, its subgraphs, and (optionally) each local function and its subgraphs."""
    yield graph
    yield from iter_subgraphs(graph)
    if include_functions:
        for function in graph.functions:
            yield function
            yield from iter_subgraphs(function)


def iter_all_nodes(graph: gs.Graph, include_functions: bool = True) -> Iterator[gs.Node]:
    """Every node in every graph of the model."""
    for each in iter_all_graphs(graph, include_functions):
        yield from each.nodes


def consumers_by_name(graph: gs.Graph) -> dict[str, int]:
    """How many node inputs read each tensor name in ``graph`` and everything nested in it.

    Subgraphs may read outer-scope tensors by name, so a tensor is in use if any nested
    graph reads it; graph outputs count as one use each.
    """
    counts: dict[str, int] = {}
    for each in [graph, *iter_subgraphs(graph)]:
        for node in each.nodes:
            for tensor in node.inputs:
                if tensor.name:
                    counts[tensor.name] = counts.get(tensor.name, 0) + 1
        for tensor in each.outputs:
            counts[tensor.name] = counts.get(tensor.name, 0) + 1
    return counts


def toposort_all(graph: gs.Graph) -> None:
    """Topologically sort the main graph, every subgraph and every local function.

    graph-surgeon's own recursive sort (``recurse_functions=True`` in its default "full"
    mode) recurses forever on models that hold both subgraphs and functions, so each
    graph is sorted on its own, nodes only.
    """
    for each in list(iter_all_graphs(graph)):
        each.toposort(recurse_subgraphs=False, recurse_functions=False, mode="nodes")
