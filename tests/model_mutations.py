"""Damaged copies of real models, one defect each, for the bad-input property test and its fuzz run.

Sources are the real models the onnx package ships (``onnx/backend/test/data``), the shipped
digits CNN, small builds of the sample models (one with external data), and real models
wrapped in an If (both branches) or with a node moved into a model-local function, so that
defects also land in subgraph bodies and function bodies. Every source passes
``onnx.checker.check_model(full_check=True)``.

A mutation takes a parsed model (or its bytes) and a random generator and returns a short
description of what it broke, or None when the model has nothing it can break that way.
Some mutations keep the model valid (shuffled node order, a dimension of 1 added to a
weight that broadcasts, another op type); the property test asserts what the CLI promises
for every outcome, not which outcome a mutation must get.
"""

from __future__ import annotations

import copy
import functools
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnx.helper as oh

from tests.util import BACKEND_DATA, DATA_DIR

ModelMutation = Callable[[onnx.ModelProto, np.random.Generator], str | None]
ByteMutation = Callable[[bytes, np.random.Generator], tuple[bytes, str] | None]


@dataclass(frozen=True)
class Source:
    """A valid model to damage: its file, and the external data files beside it."""

    name: str
    path: Path
    data_files: tuple[Path, ...] = ()


@dataclass
class Mutant:
    """A damaged model ready to write: the .onnx bytes and any external data files, by name."""

    source: str
    kind: str
    description: str
    model_bytes: bytes
    data_files: dict[str, bytes] = field(default_factory=dict)

    def write(self, folder: Path) -> Path:
        """Write the mutant into ``folder``; returns the .onnx path."""
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "model.onnx"
        path.write_bytes(self.model_bytes)
        for name, content in self.data_files.items():
            (folder / name).write_bytes(content)
        return path


# ---------------------------------------------------------------- sources


def backend_sources() -> list[Source]:
    """Every real model onnx ships with test data (light, pytorch-converted, pytorch-operator, simple)."""
    return [Source(str(path.relative_to(BACKEND_DATA)), path) for path in sorted(BACKEND_DATA.rglob("*.onnx"))]


SAMPLE_NAMES = ("bert", "gpt2", "resnet18", "mobilenetv2", "large_mlp")


def sample_sources(sizes: tuple[str, ...] = ("tiny",), names: tuple[str, ...] = SAMPLE_NAMES) -> list[Source]:
    """The shipped digits CNN and the sample models at the given sizes (built once, cached)."""
    from models.cache import cached_model

    sources = [Source("digits_cnn", DATA_DIR / "digits_cnn.onnx")]
    for name in names:
        for size in sizes:
            path = cached_model(name, size)
            data = tuple(sorted(path.parent.glob(path.name + ".data")))
            sources.append(Source(f"{name}-{size}", path, data))
    return sources


def _wrapped_in_if(proto: onnx.ModelProto) -> onnx.ModelProto:
    """The model's graph as both branches of an If on a new boolean input (outputs renamed per branch)."""
    wrapped = copy.deepcopy(proto)
    graph = wrapped.graph
    outputs = [value.name for value in graph.output]
    branches = []
    for label in ("then", "else"):
        body = onnx.GraphProto()
        body.name = f"{label}_branch"
        renamed = {name: f"{name}__{label}" for name in outputs}
        for node in graph.node:
            inner = copy.deepcopy(node)
            for position, name in enumerate(inner.output):
                inner.output[position] = renamed.get(name, f"{name}__{label}" if name else name)
            for position, name in enumerate(inner.input):
                if name and any(name in node_.output for node_ in graph.node):
                    inner.input[position] = renamed.get(name, f"{name}__{label}")
            if not inner.name:
                inner.name = f"{label}_{node.op_type}_{len(body.node)}"
            else:
                inner.name = f"{label}_{inner.name}"
            body.node.append(inner)
        for value in graph.output:
            out = copy.deepcopy(value)
            out.name = renamed[value.name]
            body.output.append(out)
        branches.append(body)
    del graph.node[:]
    del graph.value_info[:]
    graph.input.append(oh.make_tensor_value_info("use_then", onnx.TensorProto.BOOL, []))
    graph.node.append(oh.make_node("If", ["use_then"], outputs, name="wrap_if",
                                   then_branch=branches[0], else_branch=branches[1]))
    return wrapped


def _with_local_function(proto: onnx.ModelProto) -> onnx.ModelProto | None:
    """The first single-output node without attributes moved into a com.onnxopt model-local function."""
    wrapped = copy.deepcopy(proto)
    for node in wrapped.graph.node:
        if node.attribute or len(node.output) != 1 or not node.input or "" in node.input:
            continue
        body = copy.deepcopy(node)
        params = [f"p{position}" for position in range(len(node.input))]
        body.input[:] = params
        body.output[:] = ["result"]
        body.name = "body"
        default_version = next(o.version for o in wrapped.opset_import if o.domain in ("", "ai.onnx"))
        function = oh.make_function("com.onnxopt", f"Wrapped{node.op_type}", params, ["result"], [body],
                                    [oh.make_opsetid("", default_version)])
        wrapped.functions.append(function)
        node.op_type, node.domain = function.name, "com.onnxopt"
        wrapped.opset_import.append(oh.make_opsetid("com.onnxopt", 1))
        wrapped.ir_version = max(wrapped.ir_version, 8)
        return wrapped
    return None


def derived_sources(folder: Path, bases: list[Source]) -> list[Source]:
    """Real models wrapped in an If and with a local function, written into ``folder``; only valid ones."""
    sources = []
    for base in bases:
        if base.data_files:
            continue
        proto = onnx.load(str(base.path))
        for label, make in (("if", _wrapped_in_if), ("function", _with_local_function)):
            derived = make(proto)
            if derived is None:
                continue
            if label == "if":
                derived.ir_version = max(derived.ir_version, 4)  # scalar bool input with no initializer list
            path = folder / f"{base.name.replace('/', '_')}-{label}.onnx"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(derived.SerializeToString())
            try:
                onnx.checker.check_model(str(path), full_check=True)
            except Exception:
                path.unlink()
                continue
            sources.append(Source(f"{base.name}+{label}", path))
    return sources


# ---------------------------------------------------------------- where to break things


def _bodies(proto: onnx.ModelProto) -> list[onnx.GraphProto | onnx.FunctionProto]:
    found: list[onnx.GraphProto | onnx.FunctionProto] = []

    def visit(body: onnx.GraphProto | onnx.FunctionProto) -> None:
        found.append(body)
        for node in body.node:
            for attr in node.attribute:
                if attr.HasField("g"):
                    visit(attr.g)
                for graph in attr.graphs:
                    visit(graph)

    visit(proto.graph)
    for function in proto.functions:
        visit(function)
    return found


def _pick(rng: np.random.Generator, items: list):
    return items[int(rng.integers(len(items)))] if items else None


def _all_nodes(proto: onnx.ModelProto) -> list[tuple[onnx.GraphProto | onnx.FunctionProto, onnx.NodeProto]]:
    return [(body, node) for body in _bodies(proto) for node in body.node]


def _stored_tensors(proto: onnx.ModelProto) -> list[onnx.TensorProto]:
    tensors = []
    for body in _bodies(proto):
        if isinstance(body, onnx.GraphProto):
            tensors.extend(body.initializer)
        for node in body.node:
            for attr in node.attribute:
                if attr.HasField("t"):
                    tensors.append(attr.t)
    return tensors


def _real_inputs(proto: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    initializers = {init.name for init in proto.graph.initializer}
    return [value for value in proto.graph.input if value.name not in initializers]


def _tensor_types(proto: onnx.ModelProto) -> list[onnx.TypeProto.Tensor]:
    found = []
    for body in _bodies(proto):
        if isinstance(body, onnx.GraphProto):
            for value in [*body.input, *body.output, *body.value_info]:
                if value.type.HasField("tensor_type"):
                    found.append(value.type.tensor_type)
    return found


# ---------------------------------------------------------------- mutations of the parsed model


def undefined_input(proto, rng):
    candidates = [(body, node) for body, node in _all_nodes(proto) if any(node.input)]
    picked = _pick(rng, candidates)
    if picked is None:
        return None
    _body, node = picked
    position = _pick(rng, [i for i, name in enumerate(node.input) if name])
    name = f"nowhere_{int(rng.integers(1000))}"
    node.input[position] = name
    return f"node {node.name or node.op_type!r} input {position} reads {name!r}"


def subgraph_undefined_input(proto, rng):
    inner = [(body, node) for body in _bodies(proto)[1:] for node in body.node if any(node.input)]
    picked = _pick(rng, inner)
    if picked is None:
        return None
    _body, node = picked
    position = _pick(rng, [i for i, name in enumerate(node.input) if name])
    node.input[position] = "nowhere_inner"
    return f"subgraph/function node {node.name or node.op_type!r} reads an undefined name"


def double_assignment(proto, rng):
    bodies = [body for body in _bodies(proto) if len(body.node) >= 2]
    body = _pick(rng, bodies)
    if body is None:
        return None
    first, second = (int(i) for i in rng.choice(len(body.node), size=2, replace=False))
    taken = body.node[first].output[0]
    body.node[second].output[0] = taken
    return f"nodes #{first} and #{second} both write {taken!r}"


def drop_node(proto, rng):
    bodies = [body for body in _bodies(proto) if len(body.node) >= 2]
    body = _pick(rng, bodies)
    if body is None:
        return None
    index = int(rng.integers(len(body.node)))
    op = body.node[index].op_type
    del body.node[index]
    return f"removed node #{index} ({op})"


def make_cycle(proto, rng):
    body = proto.graph
    producer = {name: i for i, node in enumerate(body.node) for name in node.output}
    edges = [(producer[name], j) for j, node in enumerate(body.node) for name in node.input if name in producer]
    edge = _pick(rng, edges)
    if edge is None:
        return None
    source, user = edge
    if body.node[source].input:
        body.node[source].input[0] = body.node[user].output[0]
    else:
        body.node[source].input.append(body.node[user].output[0])
    return f"node #{source} now reads the output of its consumer #{user}"


def shuffle_nodes(proto, rng):
    body = proto.graph
    if len(body.node) < 2:
        return None
    nodes = [copy.deepcopy(node) for node in body.node]
    order = rng.permutation(len(nodes))
    del body.node[:]
    body.node.extend(nodes[int(i)] for i in order)
    return "node order shuffled (still a valid model)"


def rename_output(proto, rng):
    value = _pick(rng, list(proto.graph.output))
    if value is None:
        return None
    value.name = "missing_output"
    return "a graph output names a value nothing produces"


def raw_data_length(proto, rng):
    tensor = _pick(rng, [t for t in _stored_tensors(proto) if t.HasField("raw_data") and len(t.raw_data) > 1])
    if tensor is None:
        return None
    raw = tensor.raw_data
    if rng.random() < 0.5:
        cut = int(rng.integers(1, len(raw)))
        tensor.raw_data = raw[:cut]
        return f"{tensor.name!r} raw_data cut from {len(raw)} to {cut} bytes"
    extra = int(rng.integers(1, 64))
    tensor.raw_data = raw + bytes(extra)
    return f"{tensor.name!r} raw_data grown by {extra} bytes"


def typed_data_count(proto, rng):
    fields = ("float_data", "int32_data", "int64_data", "double_data", "uint64_data")
    candidates = [(t, f) for t in _stored_tensors(proto) for f in fields if len(getattr(t, f))]
    picked = _pick(rng, candidates)
    if picked is None:
        return None
    tensor, name = picked
    values = getattr(tensor, name)
    if len(values) > 1 and rng.random() < 0.5:
        del values[-1]
        return f"{tensor.name!r} {name} lost its last entry"
    values.append(values[0])
    return f"{tensor.name!r} {name} got an extra entry"


def tensor_dims(proto, rng):
    tensor = _pick(rng, [t for t in _stored_tensors(proto) if len(t.dims)])
    if tensor is None:
        return None
    choice = rng.random()
    axis = int(rng.integers(len(tensor.dims)))
    if choice < 0.4:
        tensor.dims[axis] += int(rng.integers(1, 4))
        return f"{tensor.name!r} dim {axis} grown"
    if choice < 0.6:
        tensor.dims[axis] = -int(rng.integers(1, 10))
        return f"{tensor.name!r} dim {axis} negative"
    if choice < 0.8:
        tensor.dims.append(1)
        return f"{tensor.name!r} got a trailing dim of 1 (same element count)"
    tensor.dims[axis] = 2**40
    return f"{tensor.name!r} dim {axis} = 2^40"


def tensor_type(proto, rng):
    tensor = _pick(rng, _stored_tensors(proto))
    if tensor is None:
        return None
    code = int(_pick(rng, [0, 99, -3, onnx.TensorProto.DOUBLE, onnx.TensorProto.INT8, onnx.TensorProto.FLOAT16,
                           onnx.TensorProto.INT64, onnx.TensorProto.STRING, onnx.TensorProto.INT4]))
    tensor.data_type = code
    return f"{tensor.name!r} element type set to {code}"


def input_element_type(proto, rng):
    types = _tensor_types(proto)
    target = _pick(rng, types)
    if target is None:
        return None
    code = int(_pick(rng, [0, 99, 40, -1, onnx.TensorProto.INT64, onnx.TensorProto.STRING, onnx.TensorProto.DOUBLE]))
    target.elem_type = code
    return f"a declared tensor type set to element type {code}"


def huge_dim(proto, rng):
    inputs = _real_inputs(proto)
    value = _pick(rng, [v for v in inputs if v.type.tensor_type.shape.dim])
    if value is None:
        return None
    dims = value.type.tensor_type.shape.dim
    axis = int(rng.integers(len(dims)))
    size = int(_pick(rng, [2**40, 2**31, 2**62, 10**6]))
    dims[axis].Clear()
    dims[axis].dim_value = size
    return f"input {value.name!r} dim {axis} = {size}"


def negative_dim(proto, rng):
    types = [t for t in _tensor_types(proto) if t.shape.dim]
    target = _pick(rng, types)
    if target is None:
        return None
    dim = _pick(rng, list(target.shape.dim))
    dim.Clear()
    dim.dim_value = -int(rng.integers(1, 10))
    return "a declared dimension made negative"


def stale_value_info(proto, rng):
    produced = [name for node in proto.graph.node for name in node.output if name]
    outputs = {value.name for value in proto.graph.output}
    name = _pick(rng, [n for n in produced if n not in outputs])
    if name is None:
        return None
    for value in list(proto.graph.value_info):
        if value.name == name:
            proto.graph.value_info.remove(value)
    proto.graph.value_info.append(oh.make_tensor_value_info(name, onnx.TensorProto.INT8, [7, 5]))
    return f"value_info of {name!r} says int8[7, 5]"


def unknown_op(proto, rng):
    _body, node = _pick(rng, _all_nodes(proto)) or (None, None)
    if node is None:
        return None
    node.op_type = "NoSuchOp"
    return "an op type no opset defines"


def swap_op(proto, rng):
    _body, node = _pick(rng, _all_nodes(proto)) or (None, None)
    if node is None:
        return None
    other = _pick(rng, ["Relu", "Sigmoid", "Add", "MatMul", "Conv", "Reshape", "Softmax", "Identity", "Concat"])
    old, node.op_type = node.op_type, other
    return f"{old} became {other}"


def unknown_domain(proto, rng):
    _body, node = _pick(rng, _all_nodes(proto)) or (None, None)
    if node is None:
        return None
    node.domain = "com.nowhere"
    return "a node in a domain the model does not import"


def attribute_value(proto, rng):
    candidates = [(node, attr) for _b, node in _all_nodes(proto) for attr in node.attribute
                  if attr.type in (onnx.AttributeProto.INT, onnx.AttributeProto.INTS)]
    picked = _pick(rng, candidates)
    if picked is None:
        return None
    node, attr = picked
    value = int(_pick(rng, [-7, 0, 1000, 2**40]))
    if attr.type == onnx.AttributeProto.INT:
        attr.i = value
    else:
        attr.ints[:] = [value] * max(1, len(attr.ints))
    return f"attribute {attr.name!r} of {node.op_type} set to {value}"


def drop_attribute(proto, rng):
    candidates = [node for _b, node in _all_nodes(proto) if node.attribute]
    node = _pick(rng, candidates)
    if node is None:
        return None
    index = int(rng.integers(len(node.attribute)))
    name = node.attribute[index].name
    del node.attribute[index]
    return f"attribute {name!r} of {node.op_type} removed"


def attribute_type(proto, rng):
    candidates = [attr for _b, node in _all_nodes(proto) for attr in node.attribute]
    attr = _pick(rng, candidates)
    if attr is None:
        return None
    attr.type = int(_pick(rng, [0, 1, 2, 3, 4, 5, 6, 7, 8, 11, 13]))
    return f"attribute {attr.name!r} type field set to {attr.type}"


def opset_version(proto, rng):
    entry = next((o for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    if entry is None:
        return None
    entry.version = int(_pick(rng, [0, 1, 3, 999, -2]))
    return f"default opset set to {entry.version}"


def ir_version(proto, rng):
    proto.ir_version = int(_pick(rng, [0, 1, 2, 99, -1]))
    return f"ir_version set to {proto.ir_version}"


def duplicate_initializer(proto, rng):
    tensor = _pick(rng, list(proto.graph.initializer))
    if tensor is None:
        return None
    proto.graph.initializer.append(copy.deepcopy(tensor))
    return f"initializer {tensor.name!r} stored twice"


def remove_initializer(proto, rng):
    initializers = proto.graph.initializer
    if not initializers:
        return None
    index = int(rng.integers(len(initializers)))
    name = initializers[index].name
    del initializers[index]
    return f"initializer {name!r} removed"


def external_entry(proto, rng):
    tensors = [t for t in proto.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    tensor = _pick(rng, tensors)
    if tensor is None:
        return None
    entries = {entry.key: entry for entry in tensor.external_data}
    choice = rng.random()
    if choice < 0.3 and "length" in entries:
        entries["length"].value = str(int(entries["length"].value) + int(_pick(rng, [-8, -1, 1, 4096])))
        return f"{tensor.name!r} external length changed"
    if choice < 0.5 and "offset" in entries:
        entries["offset"].value = str(int(rng.integers(0, 2**33)))
        return f"{tensor.name!r} external offset moved"
    if choice < 0.6:
        key = _pick(rng, list(entries))
        entries[key].value = "not-a-number" if key != "location" else "missing.bin"
        return f"{tensor.name!r} external {key} garbled"
    if choice < 0.8:
        entries["location"].value = _pick(rng, ["../outside.bin", "/etc/passwd", "sub/../../x.bin", ""])
        return f"{tensor.name!r} external location escapes"
    tensor.dims[0] += 1
    return f"{tensor.name!r} dims changed under external data"


def insert_identity(proto, rng):
    """Valid: an Identity between a node and the readers of its first output."""
    node = _pick(rng, [n for n in proto.graph.node if n.output and n.output[0]])
    if node is None:
        return None
    name = node.output[0]
    fresh = f"{name}__before_identity"
    node.output[0] = fresh
    proto.graph.node.append(oh.make_node("Identity", [fresh], [name], name=f"{fresh}_identity"))
    for value in proto.graph.value_info:
        if value.name == name:
            proto.graph.value_info.remove(value)
            break
    return f"Identity inserted after {node.op_type} (still a valid model)"


def duplicate_weight(proto, rng):
    """Valid: one reader of an initializer reads an identical copy under a new name."""
    names = {init.name: init for init in proto.graph.initializer}
    inputs = {value.name for value in proto.graph.input}
    readers = [(node, i) for node in proto.graph.node for i, name in enumerate(node.input)
               if name in names and (proto.ir_version < 4 or name not in inputs)]
    picked = _pick(rng, readers)
    if picked is None:
        return None
    node, position = picked
    original = node.input[position]
    twin = copy.deepcopy(names[original])
    twin.name = f"{original}__twin"
    proto.graph.initializer.append(twin)
    if proto.ir_version < 4:  # IR 3 lists every initializer as a graph input too
        proto.graph.input.append(oh.make_tensor_value_info(twin.name, twin.data_type, list(twin.dims)))
    node.input[position] = twin.name
    return f"weight {original!r} duplicated (still a valid model)"


def dead_node(proto, rng):
    """Valid: a node whose output nothing reads."""
    value = _pick(rng, [v for v in _real_inputs(proto) if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT])
    if value is None:
        return None
    proto.graph.node.append(oh.make_node("Relu", [value.name], ["dead_end"], name="dead_relu"))
    return "an unused Relu added (still a valid model)"


def unnamed_nodes(proto, rng):
    """Valid: every node name cleared."""
    for _body, node in _all_nodes(proto):
        node.name = ""
    return "node names cleared (still a valid model)"


MODEL_MUTATIONS: dict[str, ModelMutation] = {
    "undefined-input": undefined_input,
    "subgraph-undefined-input": subgraph_undefined_input,
    "double-assignment": double_assignment,
    "drop-node": drop_node,
    "cycle": make_cycle,
    "shuffle-nodes": shuffle_nodes,
    "rename-output": rename_output,
    "raw-data-length": raw_data_length,
    "typed-data-count": typed_data_count,
    "tensor-dims": tensor_dims,
    "tensor-type": tensor_type,
    "element-type": input_element_type,
    "huge-dim": huge_dim,
    "negative-dim": negative_dim,
    "stale-value-info": stale_value_info,
    "unknown-op": unknown_op,
    "swap-op": swap_op,
    "unknown-domain": unknown_domain,
    "attribute-value": attribute_value,
    "drop-attribute": drop_attribute,
    "attribute-type": attribute_type,
    "opset-version": opset_version,
    "ir-version": ir_version,
    "duplicate-initializer": duplicate_initializer,
    "remove-initializer": remove_initializer,
    "external-entry": external_entry,
    "insert-identity": insert_identity,
    "duplicate-weight": duplicate_weight,
    "dead-node": dead_node,
    "unnamed-nodes": unnamed_nodes,
}


# ---------------------------------------------------------------- mutations of the file's bytes


def flip_bytes(data: bytes, rng):
    buffer = bytearray(data)
    count = int(rng.integers(1, 9))
    for _ in range(count):
        position = int(rng.integers(len(buffer)))
        buffer[position] ^= 1 << int(rng.integers(8))
    return bytes(buffer), f"{count} bit flips"


def truncate_file(data: bytes, rng):
    cut = int(rng.integers(1, len(data)))
    return data[:cut], f"file cut at {cut} of {len(data)} bytes"


def garble_name(data: bytes, rng):
    """Replace one byte of a name (a node, op or tensor name) by 0xC3 (a lone UTF-8 lead byte)."""
    proto = onnx.ModelProto()
    proto.ParseFromString(data)
    names = [name for node in proto.graph.node for name in (node.name, node.op_type, *node.output) if len(name) > 1]
    names += [value.name for value in proto.graph.input if len(value.name) > 1]
    name = _pick(rng, sorted(set(names)))
    if name is None:
        return None
    encoded = name.encode()
    position = data.find(encoded)
    if position < 0:
        return None
    offset = int(rng.integers(len(encoded)))
    buffer = bytearray(data)
    buffer[position + offset] = 0xC3
    return bytes(buffer), f"name {name!r} made invalid UTF-8"


BYTE_MUTATIONS: dict[str, ByteMutation] = {
    "flip-bytes": flip_bytes,
    "truncate-file": truncate_file,
    "garble-name": garble_name,
}

ALL_KINDS = (*MODEL_MUTATIONS, *BYTE_MUTATIONS, "truncate-external-data")


@functools.lru_cache(maxsize=64)
def _source_bytes(path: Path) -> bytes:
    return path.read_bytes()


def make_mutant(source: Source, kind: str, rng: np.random.Generator) -> Mutant | None:
    """Apply one mutation of ``kind`` to ``source``; None when it does not apply to this model."""
    original = _source_bytes(source.path)
    data = {path.name: _source_bytes(path) for path in source.data_files}
    if kind in BYTE_MUTATIONS:
        changed = BYTE_MUTATIONS[kind](original, rng)
        if changed is None:
            return None
        return Mutant(source.name, kind, changed[1], changed[0], data)
    if kind == "truncate-external-data":
        if not data:
            return None
        name = _pick(rng, sorted(data))
        cut = int(rng.integers(0, len(data[name])))
        data[name] = data[name][:cut]
        return Mutant(source.name, kind, f"{name} cut at {cut} bytes", original, data)
    proto = onnx.ModelProto()
    proto.ParseFromString(original)
    description = MODEL_MUTATIONS[kind](proto, rng)
    if description is None:
        return None
    return Mutant(source.name, kind, description, proto.SerializeToString(), data)


def mutants(sources: list[Source], count: int, seed: int) -> list[Mutant]:
    """``count`` mutants, kinds in turn, sources and positions drawn from ``seed``.

    A kind that does not apply to the drawn source (no subgraph, no external data) draws
    again, a few times, so rare kinds are not crowded out by common ones.
    """
    rng = np.random.default_rng(seed)
    made: list[Mutant] = []
    for index in range(count * 3):
        if len(made) == count:
            break
        kind = ALL_KINDS[index % len(ALL_KINDS)]
        for _attempt in range(40):
            mutant = make_mutant(_pick(rng, sources), kind, rng)
            if mutant is not None:
                made.append(mutant)
                break
    return made


def copy_source(source: Source, folder: Path) -> Path:
    """Copy a source and its external data into ``folder`` (for runs on the unmutated model)."""
    folder.mkdir(parents=True, exist_ok=True)
    for path in (source.path, *source.data_files):
        shutil.copyfile(path, folder / (path.name if path != source.path else "model.onnx"))
    return folder / "model.onnx"
