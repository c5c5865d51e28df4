"""Small, safe edits on graph-surgeon graphs, shared by the rewrite passes.

graph-surgeon links tensors and nodes both ways, and a subgraph (If/Loop/Scan body) may
read a tensor of an enclosing graph by name. Every pass that removes a node or redirects
a tensor must therefore update the readers in nested subgraphs too, never rename a graph
output, and keep the two-way links consistent. These helpers do exactly that, so each
pass can stay a short match/check/rewrite.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from onnxopt.graph_walk import consumers_by_name, node_subgraphs
from onnxopt.model_io import read_constant

# Domains whose ops onnx (and onnxruntime) define; anything else is a custom op we treat as opaque.
STANDARD_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml"})

# Ops whose result is random, so two evaluations may differ. Dropout is random in training
# mode; passes that want to handle inference-mode Dropout do so explicitly.
NON_DETERMINISTIC_OPS = frozenset(
    {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial", "Bernoulli", "Dropout"}
)


@dataclass(eq=False)
class Scope:
    """One graph of a model with its position: ``path`` is a prefix of its descendants' paths.

    Subgraphs see the tensors of every ancestor; a tensor of scope A may be used in scope B
    only when A's path is a prefix of B's path. Each local function is a separate tree.
    """

    graph: gs.Graph
    path: tuple
    opset: int
    function: gs.Function | None = None
    parent: Scope | None = None

    @property
    def is_root(self) -> bool:
        """True for the main graph and for a function body (their outputs are an interface)."""
        return self.parent is None

    def sees(self, other: Scope) -> bool:
        """True when tensors of ``other`` are visible here (other is this scope or an ancestor)."""
        return self.path[: len(other.path)] == other.path


def node_domain(node: gs.Node) -> str:
    return node.domain or ""


def is_standard_op(node: gs.Node) -> bool:
    return node_domain(node) in STANDARD_DOMAINS


def function_ids(graph: gs.Graph) -> set[tuple[str, str]]:
    """(domain, name) of each model-local function."""
    return {(function.domain or "", function.name) for function in graph.functions}


def calls_function(node: gs.Node, functions: set[tuple[str, str]]) -> bool:
    return (node_domain(node), node.op) in functions


def has_attribute_refs(node: gs.Node) -> bool:
    """True when an attribute refers to an attribute of the enclosing function (value unknown)."""
    return any(isinstance(value, gs.Node.AttributeRef) for value in node.attrs.values())


def _walk(
    graph: gs.Graph, path: tuple, opset: int, function: gs.Function | None, parent: Scope | None
) -> Iterator[Scope]:
    scope = Scope(graph, path, opset, function, parent)
    yield scope
    for node_index, node in enumerate(graph.nodes):
        for sub_index, sub in enumerate(node_subgraphs(node)):
            yield from _walk(sub, (*path, (node_index, sub_index)), opset, function, scope)


def iter_scopes(main: gs.Graph, include_functions: bool = True) -> Iterator[Scope]:
    """Main graph and its nested subgraphs (outer before inner), then each local function tree."""
    yield from _walk(main, ("main",), int(main.opset), None, None)
    if include_functions:
        for index, function in enumerate(main.functions):
            opset = int(function.opset) if function.opset is not None else int(main.opset)
            yield from _walk(function, (("function", index),), opset, function, None)


def iter_trees(main: gs.Graph, include_functions: bool = True) -> Iterator[list[Scope]]:
    """Scopes grouped by tree - the main graph, then each function - root first."""
    current: list[Scope] = []
    for scope in iter_scopes(main, include_functions):
        if scope.is_root and current:
            yield current
            current = []
        current.append(scope)
    if current:
        yield current


def use_counts(root: gs.Graph) -> Counter:
    """Readers of each tensor name in ``root`` and every graph nested in it (graph outputs count)."""
    return Counter(consumers_by_name(root))


def output_names(graph: gs.Graph) -> set[str]:
    return {tensor.name for tensor in graph.outputs}


def input_names(graph: gs.Graph) -> set[str]:
    return {tensor.name for tensor in graph.inputs}


def producer(tensor: gs.Tensor) -> gs.Node | None:
    """The node writing ``tensor`` (graph-surgeon keeps it in ``tensor.inputs``)."""
    return tensor.inputs[0] if len(tensor.inputs) else None


def _defined_locally(graph: gs.Graph, name: str, exclude: gs.Tensor) -> bool:
    """True when ``graph`` defines its own tensor called ``name`` (which shadows an outer one)."""
    for tensor in graph.inputs:
        if tensor.name == name and tensor is not exclude:
            return True
    for node in graph.nodes:
        for tensor in node.outputs:
            if tensor.name == name and tensor is not exclude:
                return True
    return False


def subgraph_holders(graph: gs.Graph) -> list[gs.Node]:
    """Nodes of ``graph`` holding subgraphs (If/Loop/Scan); passes compute it once per scope."""
    return [node for node in graph.nodes if any(True for _ in node_subgraphs(node))]


def replace_uses(graph: gs.Graph, old: gs.Tensor, new: gs.Tensor, holders: list[gs.Node] | None = None) -> int:
    """Make every node reading ``old`` in ``graph`` and its nested subgraphs read ``new`` instead.

    Readers linked to ``old`` itself are found through graph-surgeon's consumer list (no
    scan of the graph). Nested subgraphs are also searched by name, because a subgraph
    may hold its own object for an outer name (graph-surgeon's copy does this for
    initializers); a subgraph defining a tensor of that name shadows ``old`` and is left
    alone. ``holders`` (from ``subgraph_holders``) saves rescanning ``graph`` when a pass
    calls this many times. Graph outputs are never touched: a graph output must name a
    tensor its own graph produces, so callers keep outputs by renaming producers instead.
    Returns how many references changed.
    """
    changed = 0
    for consumer in list(old.outputs):
        for index, tensor in enumerate(consumer.inputs):
            if tensor is old:
                consumer.inputs[index] = new
                changed += 1
    if not old.name:
        return changed

    def visit(each: gs.Graph) -> None:
        nonlocal changed
        if _defined_locally(each, old.name, old):
            return
        for node in each.nodes:
            for index, tensor in enumerate(node.inputs):
                if tensor.name == old.name and tensor is not new:
                    node.inputs[index] = new
                    changed += 1
            for sub in node_subgraphs(node):
                visit(sub)

    for holder in subgraph_holders(graph) if holders is None else holders:
        for sub in node_subgraphs(holder):
            visit(sub)
    return changed


def index_of(items: list, item: object) -> int:
    """Position of ``item`` by identity (graph-surgeon's ``==`` calls equal-looking nodes equal)."""
    for index, each in enumerate(items):
        if each is item:
            return index
    raise ValueError("item not in list")


def detach(node: gs.Node) -> None:
    """Unlink a node from its tensors so producer/consumer lists stay right."""
    node.inputs.clear()
    node.outputs.clear()


def remove_nodes(graph: gs.Graph, nodes: Iterable[gs.Node]) -> int:
    """Remove ``nodes`` from ``graph`` (one list rebuild, not one scan per node)."""
    doomed = {id(node) for node in nodes}
    if not doomed:
        return 0
    kept = []
    for node in graph.nodes:
        if id(node) in doomed:
            detach(node)
        else:
            kept.append(node)
    removed = len(graph.nodes) - len(kept)
    graph.nodes = kept
    return removed


def all_tensor_names(main: gs.Graph) -> set[str]:
    """Every tensor name used anywhere in the model (for choosing fresh names)."""
    names: set[str] = set()
    for scope in iter_scopes(main):
        names.update(tensor.name for tensor in scope.graph.inputs)
        names.update(tensor.name for tensor in scope.graph.outputs)
        for node in scope.graph.nodes:
            names.update(tensor.name for tensor in node.inputs)
            names.update(tensor.name for tensor in node.outputs)
    names.discard("")
    return names


def fresh_name(base: str, taken: set[str]) -> str:
    """``base`` or ``base_1``, ``base_2``, ... - whichever is free; the result is added to ``taken``."""
    name = base
    counter = 0
    while name in taken:
        counter += 1
        name = f"{base}_{counter}"
    taken.add(name)
    return name


# Attributes of a Constant node that hold its value, and how to turn each into an array.
_CONSTANT_VALUE_ATTRS = {
    "value_float": lambda v: np.array(v, dtype=np.float32),
    "value_floats": lambda v: np.array(v, dtype=np.float32),
    "value_int": lambda v: np.array(v, dtype=np.int64),
    "value_ints": lambda v: np.array(v, dtype=np.int64),
    "value_string": lambda v: np.array(v, dtype=object),
    "value_strings": lambda v: np.array(v, dtype=object),
}


def constant_node_value(node: gs.Node) -> gs.Constant | np.ndarray | None:
    """The value of a ``Constant`` node: a gs.Constant (``value``) or an array; None if unknown."""
    if node.op != "Constant" or not is_standard_op(node) or has_attribute_refs(node):
        return None
    value = node.attrs.get("value")
    if isinstance(value, gs.Constant):
        return value
    for attr, convert in _CONSTANT_VALUE_ATTRS.items():
        if attr in node.attrs:
            return convert(node.attrs[attr])
    return None  # sparse_value or malformed


def constant_source(tensor: gs.Tensor) -> gs.Constant | np.ndarray | None:
    """Where a tensor's constant value lives: itself (an initializer) or its Constant-node producer."""
    if isinstance(tensor, gs.Constant):
        return tensor
    node = producer(tensor)
    if node is not None:
        return constant_node_value(node)
    return None


def constant_array(tensor: gs.Tensor) -> np.ndarray | None:
    """The value of a constant tensor (initializer or Constant-node output), read without caching."""
    source = constant_source(tensor)
    if source is None:
        return None
    if isinstance(source, gs.Constant):
        return read_constant(source)
    return source


def constant_shape(tensor: gs.Tensor) -> tuple[int, ...] | None:
    """Shape of a constant tensor without reading its bytes."""
    source = constant_source(tensor)
    if source is None:
        return None
    return tuple(int(dim) for dim in source.shape)


def constant_onnx_dtype(tensor: gs.Tensor) -> int | None:
    """ONNX element type of a constant tensor, without reading its bytes."""
    source = constant_source(tensor)
    if source is None:
        return None
    if isinstance(source, gs.Constant):
        from onnx_graphsurgeon.ir.tensor import LazyValues

        if isinstance(source._values, LazyValues) and isinstance(source._values.tensor, onnx.TensorProto):
            return int(source._values.tensor.data_type)
        return numpy_to_onnx_dtype(np.asarray(source._values).dtype)
    return numpy_to_onnx_dtype(source.dtype)


def numpy_to_onnx_dtype(dtype: np.dtype) -> int | None:
    """ONNX element type for a numpy dtype (strings/objects map to STRING); None if unknown."""
    dtype = np.dtype(dtype)
    if dtype.kind in "OSU":
        return onnx.TensorProto.STRING
    try:
        return int(onnx.helper.np_dtype_to_tensor_dtype(dtype))
    except (KeyError, TypeError, ValueError):
        return None


def tensor_onnx_dtype(tensor: gs.Tensor) -> int | None:
    """Declared element type of any tensor (constants by value, variables by their dtype)."""
    if constant_source(tensor) is not None:
        return constant_onnx_dtype(tensor)
    dtype = getattr(tensor, "dtype", None)
    if dtype is None:
        return None
    if isinstance(dtype, int):
        return dtype
    try:
        return numpy_to_onnx_dtype(np.dtype(dtype))
    except TypeError:
        return None


def node_opset(scope: Scope, node: gs.Node, main: gs.Graph) -> int:
    """The opset version of ``node``'s domain in this scope."""
    domain = node_domain(node)
    if domain in ("", "ai.onnx"):
        return scope.opset
    imports = (scope.function.import_domains if scope.function is not None else None) or main.import_domains or []
    for entry in imports:
        if entry.domain == domain:
            return int(entry.version)
    return 1
