"""Element types of every tensor of a model, by scope, for precision conversion.

A conversion pass has to know which tensors are float32 before it changes anything:
only those become half, and a node whose tensor types are unknown must be left alone.
graph-surgeon keeps only the types written in ``value_info``, so we run onnx shape
inference on a weight-stripped export. Inference fills in the main graph and the bodies
of If/Loop/Scan (they share the main graph's namespace), but not the bodies of local
functions: each function is inferred separately as a small graph whose inputs take the
types of its call sites. A function called with different input types is polymorphic
and is reported as such (the converter then leaves it and its calls in fp32).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx_graphsurgeon.ir.tensor import LazyValues

from onnxopt.graph_walk import iter_all_graphs, node_subgraphs
from onnxopt.model_io import EXTERNAL_TENSOR_MIN_BYTES, STRIPPED_LOCATION, Model, to_proto
from onnxopt.onnx_check import strip_payloads_in_place
from onnxopt.passes.precision.half_values import HalfLazyValues

logger = logging.getLogger(__name__)

# Scope of a name: None for the main graph and its subgraphs, (domain, name) for a function.
Scope = tuple[str, str] | None
NON_TENSOR = -1  # a sequence/optional/map value: never converted


@dataclass
class ScopedGraph:
    """One graph of the model with where it sits: its namespace and what owns it."""

    graph: gs.Graph
    scope: Scope
    owner: gs.Node | None = None  # control-flow node whose attribute holds this graph
    function: gs.Function | None = None  # function this graph belongs to (its body or nested)

    @property
    def is_function_body(self) -> bool:
        return self.function is not None and self.graph is self.function


def scoped_graphs(main: gs.Graph) -> list[ScopedGraph]:
    """The main graph, its subgraphs, then each local function and its subgraphs."""
    result: list[ScopedGraph] = []

    def visit(graph: gs.Graph, scope: Scope, owner: gs.Node | None, function: gs.Function | None) -> None:
        result.append(ScopedGraph(graph, scope, owner, function))
        for node in graph.nodes:
            for sub in node_subgraphs(node):
                visit(sub, scope, node, function)

    visit(main, None, None, None)
    for function in main.functions:
        visit(function, (function.domain or "", function.name), None, function)
    return result


@dataclass
class TypeTable:
    """Element type of each tensor name per scope; missing means unknown."""

    types: dict[Scope, dict[str, int]] = field(default_factory=dict)
    # Functions that could not be typed (polymorphic calls, attribute references, no call).
    untyped_functions: dict[tuple[str, str], str] = field(default_factory=dict)

    def get(self, scope: Scope, name: str) -> int | None:
        return self.types.get(scope, {}).get(name)


def _elem_type(value: onnx.ValueInfoProto) -> int | None:
    kind = value.type.WhichOneof("value")
    if kind == "tensor_type":
        elem = value.type.tensor_type.elem_type
        return elem or None
    if kind is None:
        return None
    return NON_TENSOR


def _weightless_proto(model: Model) -> onnx.ModelProto:
    """The model as a proto whose large in-memory constants are dummy external references.

    Exporting a converted model would serialise every new half tensor just to read types;
    instead a structural copy gets stubs with the same name, type and dims.
    """
    work = model.copy()
    for graph in iter_all_graphs(work.graph):
        for tensor in graph.tensors().values():
            values = getattr(tensor, "_values", None)
            in_memory = isinstance(values, (np.ndarray, HalfLazyValues))  # exporting would materialise them
            if isinstance(tensor, gs.Constant) and in_memory and int(values.nbytes) > EXTERNAL_TENSOR_MIN_BYTES:
                stub = onnx.TensorProto(name=tensor.name, dims=list(values.shape),
                                        data_type=onnx.helper.np_dtype_to_tensor_dtype(np.dtype(values.dtype)),
                                        data_location=onnx.TensorProto.EXTERNAL)
                entry = stub.external_data.add()
                entry.key, entry.value = "location", STRIPPED_LOCATION
                tensor._values = LazyValues(stub)
    proto = to_proto(work)
    strip_payloads_in_place(proto)
    return proto


def _iter_graph_protos(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _iter_graph_protos(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    yield from _iter_graph_protos(sub)


def _collect(graph: onnx.GraphProto, into: dict[str, int]) -> None:
    for sub in _iter_graph_protos(graph):
        for init in sub.initializer:
            into[init.name] = init.data_type
        for value in list(sub.input) + list(sub.output) + list(sub.value_info):
            elem = _elem_type(value)
            if elem is not None:
                into[value.name] = elem
        for node in sub.node:
            if node.op_type == "Constant" and not node.domain:
                for attr in node.attribute:
                    if attr.name == "value" and attr.type == onnx.AttributeProto.TENSOR:
                        into.setdefault(node.output[0], attr.t.data_type)


def _infer(proto: onnx.ModelProto) -> onnx.ModelProto:
    try:
        return onnx.shape_inference.infer_shapes(proto, check_type=False, strict_mode=False, data_prop=False)
    except Exception as error:  # inference can fail on exotic models; we fall back to what is declared
        logger.warning("shape inference failed (%s); using declared types only", str(error).splitlines()[0])
        return proto


def _call_sites(graph: onnx.GraphProto, functions: set[tuple[str, str]]) -> Iterator[onnx.NodeProto]:
    for sub in _iter_graph_protos(graph):
        for node in sub.node:
            if (node.domain, node.op_type) in functions:
                yield node


def _has_attribute_refs(function: onnx.FunctionProto) -> bool:
    def visit(nodes) -> bool:
        for node in nodes:
            for attr in node.attribute:
                if attr.ref_attr_name:
                    return True
                if attr.type == onnx.AttributeProto.GRAPH and visit(attr.g.node):
                    return True
        return False

    return visit(function.node)


def _function_types(
    proto: onnx.ModelProto, function: onnx.FunctionProto, input_types: list[int]
) -> dict[str, int]:
    """Infer a function body as a standalone graph whose inputs have the call site's types."""
    inputs = [
        onnx.helper.make_tensor_value_info(name, elem, None)
        for name, elem in zip(function.input, input_types, strict=True)
    ]
    outputs = [onnx.ValueInfoProto(name=name) for name in function.output]
    graph = onnx.helper.make_graph(list(function.node), f"{function.name}_typing", inputs, outputs)
    imports = {entry.domain: entry.version for entry in proto.opset_import}
    imports.update({entry.domain: entry.version for entry in function.opset_import})
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid(d, v) for d, v in imports.items()])
    model.ir_version = proto.ir_version
    model.functions.extend(proto.functions)
    inferred = _infer(model)
    types: dict[str, int] = {}
    _collect(inferred.graph, types)
    return types


def _unusable(call_types: tuple[int, ...], function: onnx.FunctionProto) -> bool:
    return len(call_types) != len(function.input) or any(elem in (0, NON_TENSOR) for elem in call_types)


def infer_types(model: Model) -> TypeTable:
    """Element types of every tensor in every scope of ``model``."""
    inferred = _infer(_weightless_proto(model))
    table = TypeTable()
    main: dict[str, int] = {}
    _collect(inferred.graph, main)
    table.types[None] = main
    functions = {(f.domain, f.name): f for f in inferred.functions}
    pending = dict(functions)
    # Callers are typed before callees; nested functions need their caller's body types.
    for _ in range(len(functions) + 1):
        progressed = False
        for key, function in list(pending.items()):
            if _has_attribute_refs(function):
                table.untyped_functions[key] = "its body uses attribute references"
                del pending[key]
                progressed = True
                continue
            call_types: set[tuple[int, ...]] = set()
            waiting = False
            sources = [(None, inferred.graph)] + [((f.domain, f.name), None) for f in inferred.functions]
            for scope, graph in sources:
                if scope is None:
                    nodes = list(_call_sites(graph, {key}))
                    scope_types = main
                else:
                    body = functions[scope]
                    nodes = [n for n in body.node if (n.domain, n.op_type) == key]
                    if nodes and scope not in table.types:
                        waiting = True
                        break
                    scope_types = table.types.get(scope, {})
                for node in nodes:
                    call_types.add(tuple(scope_types.get(name, 0) if name else 0 for name in node.input))
            if waiting:
                continue
            del pending[key]
            progressed = True
            if not call_types:
                table.untyped_functions[key] = "it is never called"
            elif len(call_types) > 1:
                table.untyped_functions[key] = "it is called with different input types"
            elif _unusable(next(iter(call_types)), function):
                table.untyped_functions[key] = "the types of its inputs are unknown"
            else:
                table.types[key] = _function_types(inferred, function, list(next(iter(call_types))))
        if not pending or not progressed:
            break
    for key in pending:
        table.untyped_functions[key] = "its callers could not be typed"
    return table


def type_conflict(model: Model) -> str | None:
    """The first element-type conflict strict inference finds in ``model`` (None if none).

    Declared types (value_info, graph inputs/outputs, Cast ``to``) that disagree with what
    the ops produce make runtimes refuse the model; other inference complaints (shapes,
    ops inference does not know) are not this check's business.
    """
    proto = _weightless_proto(model)
    try:
        onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True, data_prop=False)
    except Exception as error:  # onnx raises InferenceError, or RuntimeError from C++
        lines = [line.strip() for line in str(error).splitlines()
                 if "elem type" in line or "type mismatch" in line.lower()]
        if lines:
            return lines[0]
    return None
