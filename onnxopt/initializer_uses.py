"""Initializers of one scope tree with where they are read: the shared first step of weight sharing.

Passes that merge or share initializers (byte-identical dedup, transposed/reshaped twins)
must know, for every initializer, the innermost graph that sees all its readers (a merged
tensor must stay visible there) and whether it is a graph output (its name is an
interface). graph-surgeon gives a subgraph its own object for an outer initializer, so an
initializer is identified by its name; objects sharing a name but not their bytes
(shadowing) are left out, as are graph-input defaults (the caller may override them).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import onnx_graphsurgeon as gs

from onnxopt.graph_edit import Scope
from onnxopt.tensor_content import contents_equal


@dataclass
class InitializerUse:
    """A constant with where it is used: ``home`` is the innermost scope that sees every use."""

    constant: gs.Constant
    home: Scope
    order: int
    protected: bool  # a graph output somewhere: it must keep its name and stay in its graph


def common_scope(scopes: list[Scope]) -> Scope:
    """The innermost scope whose path is a prefix of every given scope's path."""
    home = scopes[0]
    for scope in scopes[1:]:
        while not scope.sees(home):
            assert home.parent is not None, "scopes of one tree share the root"
            home = home.parent
    return home


def collect_initializers(tree: list[Scope], excluded_names: set[str] | frozenset[str] = frozenset()
                        ) -> list[InitializerUse]:
    """One entry per initializer name read in ``tree`` (a root scope and its subgraphs), in first-use order.

    ``excluded_names`` are left out too (e.g. the model's initializers that are also graph
    inputs, whose values the caller may override at run time).
    """
    uses: dict[str, list[Scope]] = defaultdict(list)
    objects: dict[str, list[gs.Constant]] = defaultdict(list)
    excluded: set[str] = set(excluded_names)
    outputs: set[str] = set()
    for scope in tree:
        seen_here: set[str] = set()
        tensors = [t for node in scope.graph.nodes for t in node.inputs] + list(scope.graph.outputs)
        for tensor in tensors:
            if not isinstance(tensor, gs.Constant):
                continue
            if not any(each is tensor for each in objects[tensor.name]):
                objects[tensor.name].append(tensor)
            if tensor.name not in seen_here:
                seen_here.add(tensor.name)
                uses[tensor.name].append(scope)
        excluded.update(t.name for t in scope.graph.inputs if isinstance(t, gs.Constant))  # only a default
        outputs.update(t.name for t in scope.graph.outputs)
    found = []
    for order, (name, same_name) in enumerate(objects.items()):
        if name in excluded or not all(contents_equal(same_name[0], other) for other in same_name[1:]):
            continue
        found.append(InitializerUse(same_name[0], common_scope(uses[name]), order, name in outputs))
    return found
