"""Names and order: every value defined once, every read defined somewhere in scope, no cycles.

ONNX graphs are in single static assignment form: each value name is defined once (graph
input, initializer or node output), every node input names a value of its graph or of an
enclosing one (If/Loop/Scan bodies see their outer graphs; a function sees only its own
body), and the data dependencies, including those a subgraph adds by reading outer
values, form no cycle. Node order in the file does not matter: graph-surgeon sorts on
import, so an unsorted but acyclic graph is fine, while a read of a name that nothing
defines is a defect (onnx.checker reports both as "not topologically sorted"; here they
are told apart).

The same check runs on a user's file before any pass (``onnxopt.validate``) and on every
pass's output (``onnxopt.structure``), so a defect the after-pass check would trip over is
always reported as the input's, up front. ``check_scopes(..., sort=True)`` also puts a
copy in the order onnx.checker needs to look past sorting at everything else.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass, field

import onnx

from onnxopt.errors import ModelDefect
from onnxopt.proto_walk import GraphLike, Place, node_graphs, node_label


@dataclass
class _Names:
    """The names a body defines, each with what defined it, and the scopes around it."""

    place: Place
    outer: tuple[set[str], ...]
    defined: dict[str, str] = field(default_factory=dict)

    def define(self, name: str, what: str, may_shadow: bool = True) -> None:
        """Record a definition; node outputs may not reuse a name of an enclosing graph (onnx.checker's SSA rule),
        while subgraph inputs and initializers may hide one."""
        if not name:
            return
        if name in self.defined:
            raise ModelDefect(self.place.label(f"{name!r} is defined twice: as {self.defined[name]} and as {what}"))
        if not may_shadow and any(name in scope for scope in self.outer):
            raise ModelDefect(self.place.label(f"{name!r} ({what}) redefines a value of an enclosing graph"))
        self.defined[name] = what

    def visible(self, name: str) -> bool:
        return name in self.defined or any(name in scope for scope in self.outer)


@dataclass(frozen=True)
class _Calls:
    """What node op types may refer to: imported domains and model-local functions."""

    domains: frozenset[str]
    functions: frozenset[tuple[str, str]]

    def check(self, place: Place, node: onnx.NodeProto, index: int) -> None:
        if (node.domain or "") in self.domains or (node.domain, node.op_type) in self.functions:
            return
        raise ModelDefect(
            place.label(f"node {node_label(node, index)} uses domain {node.domain!r}, which the model does not import")
        )


def _define_interface(names: _Names, body: GraphLike) -> None:
    if isinstance(body, onnx.FunctionProto):
        for name in body.input:
            names.define(name, "function input")
        return
    inputs = set()
    for value in body.input:
        names.define(value.name, "graph input")
        inputs.add(value.name)
    for tensor in body.initializer:
        if tensor.name in inputs:
            continue  # an initializer listed as an input too: one value with a default (IR < 4 always did this)
        names.define(tensor.name, "initializer")
    for sparse in body.sparse_initializer:
        names.define(sparse.values.name, "sparse initializer")


def _output_names(body: GraphLike) -> list[str]:
    if isinstance(body, onnx.FunctionProto):
        return list(body.output)
    return [value.name for value in body.output]


def _analyse(place: Place, outer: tuple[set[str], ...], calls: _Calls, sort: bool) -> set[str]:
    """The names a body reads from enclosing scopes; with ``sort``, its nodes are put in topological order."""
    body = place.body
    names = _Names(place, outer)
    _define_interface(names, body)
    producer: dict[str, int] = {}
    for index, node in enumerate(body.node):
        for name in node.output:
            names.define(name, f"output of node {node_label(node, index)}", may_shadow=False)
            if name:
                producer[name] = index
    local = set(names.defined)
    free: set[str] = set()
    depends: list[set[int]] = []
    for index, node in enumerate(body.node):
        calls.check(place, node, index)
        reads = [name for name in node.input if name]
        for name in reads:
            if not names.visible(name):
                raise ModelDefect(place.label(f"node {node_label(node, index)} reads {name!r}, which nothing defines"))
        for attr_name, graph in node_graphs(node):
            inner = Place(graph, place.label(f"node {node_label(node, index)} {attr_name}"))
            inner_free = _analyse(inner, (local, *outer), calls, sort)
            reads.extend(inner_free)
        depends.append({producer[name] for name in reads if name in producer})
        free.update(name for name in reads if name not in local)
    order = _kahn(place, depends)
    outputs = _output_names(body)
    for name in outputs:
        if not name:
            raise ModelDefect(place.label("a graph output has no name"))
        if not names.visible(name):
            raise ModelDefect(place.label(f"output {name!r} is not produced by anything"))
        if name not in local:
            free.add(name)
    if len(set(outputs)) != len(outputs):
        repeated = next(name for name in outputs if outputs.count(name) > 1)
        raise ModelDefect(place.label(f"output {repeated!r} is listed twice"))
    if sort and order != sorted(order):
        nodes = [body.node[index] for index in order]
        copies = []
        for node in nodes:
            copy = onnx.NodeProto()
            copy.CopyFrom(node)
            copies.append(copy)
        del body.node[:]
        body.node.extend(copies)
    return free


def _kahn(place: Place, depends: list[set[int]]) -> list[int]:
    users: dict[int, list[int]] = {}
    waiting = [len(needed) for needed in depends]
    for index, needed in enumerate(depends):
        for source in needed:
            users.setdefault(source, []).append(index)
    ready = [index for index, count in enumerate(waiting) if count == 0]  # sorted, so already a heap
    order: list[int] = []
    while ready:
        index = heapq.heappop(ready)  # lowest position first: a sorted body keeps its order
        order.append(index)
        for user in users.get(index, []):
            waiting[user] -= 1
            if waiting[user] == 0:
                heapq.heappush(ready, user)
    if len(order) != len(depends):
        stuck = next(index for index, count in enumerate(waiting) if count > 0)
        raise ModelDefect(place.label(f"graph has a cycle through node {node_label(place.body.node[stuck], stuck)}"))
    return order


def _check_function_calls(model: onnx.ModelProto) -> None:
    seen: set[tuple[str, str, str]] = set()
    by_id: dict[tuple[str, str], onnx.FunctionProto] = {}
    for function in model.functions:
        key = (function.domain, function.name, getattr(function, "overload", ""))
        if key in seen:
            raise ModelDefect(f"function {function.domain}::{function.name} is defined twice")
        seen.add(key)
        by_id[(function.domain, function.name)] = function

    def callees(function: onnx.FunctionProto) -> Iterable[tuple[str, str]]:
        return [(node.domain, node.op_type) for node in function.node if (node.domain, node.op_type) in by_id]

    state: dict[tuple[str, str], str] = {}

    def visit(key: tuple[str, str]) -> None:
        state[key] = "open"
        for callee in callees(by_id[key]):
            if state.get(callee) == "open":
                raise ModelDefect(f"function {callee[0]}::{callee[1]} calls itself (directly or through others)")
            if callee not in state:
                visit(callee)
        state[key] = "done"

    for key in by_id:
        if key not in state:
            visit(key)


def check_scopes(model: onnx.ModelProto, sort: bool = False) -> None:
    """Raise ModelDefect on the first scoping defect of ``model``.

    With ``sort`` the nodes of every graph and function are put in topological order in
    place (for a copy that onnx.checker should judge on everything but node order).
    """
    functions = frozenset((function.domain, function.name) for function in model.functions)
    model_domains = frozenset(opset.domain for opset in model.opset_import)
    _check_function_calls(model)
    bodies: list[tuple[Place, _Calls]] = [(Place(model.graph, ""), _Calls(model_domains, functions))]
    for function in model.functions:
        domains = model_domains | {opset.domain for opset in function.opset_import}
        bodies.append((Place(function, f"function {function.domain}::{function.name}"), _Calls(domains, functions)))
    for place, calls in bodies:
        free = _analyse(place, (), calls, sort)
        if free:
            raise ModelDefect(place.label(f"reads {sorted(free)[0]!r}, which nothing defines"))
