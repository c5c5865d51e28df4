"""Load and save models: the one place that touches .onnx files.

Loading keeps weights lazy (``load_external_data=False`` plus memory-mapped reads), checks
the file whole before any pass sees it (``onnxopt.validate``: damaged protobuf, names,
types, dims, stored data lengths, scopes, cycles, unknown ops, shape inference, unsafe
external-data paths) and turns every problem into a ``BadInputError`` with one line. Saving writes the
lowest IR version the model needs, embeds small models, streams external tensors of
large ones, and replaces the target atomically so no partial file is ever left behind.
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from google.protobuf.message import DecodeError
from onnx_graphsurgeon.exporters.onnx_exporter import OnnxExporter
from onnx_graphsurgeon.ir.tensor import LazyValues

from onnxopt.atomic_files import check_output_folder, staged_outputs
from onnxopt.errors import BadInputError, ModelDefect
from onnxopt.external_data import (
    ExternalLazyValues,
    external_info,
    is_external,
    iter_external_chunks,
    raw_bytes_of_inline,
    resolve_location,
)
from onnxopt.graph_walk import iter_all_graphs, node_subgraphs, toposort_all
from onnxopt.onnx_check import STRIPPED_LOCATION as STRIPPED_LOCATION  # re-exported for passes that strip weights
from onnxopt.validate import check_model_structure, validate_model
from onnxopt.versioning import minimum_ir_version

logger = logging.getLogger(__name__)

# Write external data when the weights come this close to protobuf's 2 GiB limit.
EXTERNAL_DATA_THRESHOLD_BYTES = 1_800_000_000
# Tensors smaller than this stay embedded even in an external-data model.
EXTERNAL_TENSOR_MIN_BYTES = 1024
EXTERNAL_ALIGNMENT_BYTES = 4096

gs.logger.G_LOGGER.severity = gs.logger.G_LOGGER.ERROR


@dataclass
class Model:
    """A graph-surgeon graph plus the model-level fields graph-surgeon does not keep."""

    graph: gs.Graph
    base_dir: Path | None = None
    had_external_data: bool = False
    path: Path | None = None
    doc_string: str = ""
    model_version: int = 0
    domain: str = ""
    metadata_props: dict[str, str] = field(default_factory=dict)
    source_ir_version: int = 0
    # Initializers the source (IR >= 4) also listed as graph inputs: overridable defaults
    # that are part of the model's interface. graph-surgeon drops them on import.
    initializer_inputs: list[str] = field(default_factory=list)

    def copy(self) -> Model:
        """A structural copy (nodes, tensors, functions); weight arrays are shared, never mutated."""
        graph = self.graph.copy()
        graph.functions = [function.copy() for function in self.graph.functions]
        return Model(
            graph=graph,
            base_dir=self.base_dir,
            had_external_data=self.had_external_data,
            path=self.path,
            doc_string=self.doc_string,
            model_version=self.model_version,
            domain=self.domain,
            metadata_props=dict(self.metadata_props),
            source_ir_version=self.source_ir_version,
            initializer_inputs=list(self.initializer_inputs),
        )

    @property
    def opset(self) -> int:
        """The default-domain opset version."""
        return int(self.graph.opset)


def read_proto(path: Path) -> onnx.ModelProto:
    """Parse a .onnx file without its external data, mapping every failure to BadInputError."""
    if not path.exists():
        raise BadInputError(f"{path}: no such file")
    if not path.is_file():
        raise BadInputError(f"{path}: not a file")
    if path.stat().st_size == 0:
        raise BadInputError(f"{path}: empty file, not an ONNX model")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError, OSError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise BadInputError(f"{path}: not a valid ONNX model ({reason})") from None
    if not proto.HasField("graph") or (not proto.graph.node and not proto.graph.output):
        raise BadInputError(f"{path}: not a valid ONNX model (no graph)")
    if proto.ir_version <= 0:
        raise BadInputError(f"{path}: not a valid ONNX model (no IR version; truncated or not ONNX?)")
    return proto


def iter_tensor_protos(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    """Initializers and tensor attributes of a graph and its subgraphs."""
    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR:
                yield attr.t
            elif attr.type == onnx.AttributeProto.GRAPH:
                yield from iter_tensor_protos(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    yield from iter_tensor_protos(sub)


def iter_model_tensor_protos(model: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    """Every tensor stored in a model: main graph, subgraphs and function bodies."""
    yield from iter_tensor_protos(model.graph)
    for function in model.functions:
        for node in function.node:
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.TENSOR:
                    yield attr.t


def check_proto(proto: onnx.ModelProto, what: str) -> None:
    """The structural checks run after every pass (scopes, types, stored data, onnx.checker); BadInputError."""
    try:
        check_model_structure(proto)
    except ModelDefect as defect:
        raise BadInputError(f"{what}: {defect}") from None


def _attach_lazy_external(graph: gs.Graph, base_dir: Path) -> None:
    for each in iter_all_graphs(graph):
        for tensor in each.tensors().values():
            if isinstance(tensor, gs.Constant) and isinstance(tensor._values, LazyValues):
                proto = tensor._values.tensor
                if isinstance(proto, onnx.TensorProto) and is_external(proto):
                    location = external_info(proto).get("location", "")
                    tensor._values = ExternalLazyValues(proto, resolve_location(base_dir, location, proto.name))
        for node in each.nodes:
            for value in node.attrs.values():
                if isinstance(value, gs.Constant) and isinstance(value._values, LazyValues):
                    proto = value._values.tensor
                    if isinstance(proto, onnx.TensorProto) and is_external(proto):
                        location = external_info(proto).get("location", "")
                        value._values = ExternalLazyValues(proto, resolve_location(base_dir, location, proto.name))


def from_proto(proto: onnx.ModelProto, base_dir: Path | None = None, path: Path | None = None,
               validated: bool = False) -> Model:
    """Import a ModelProto into a Model (weights stay lazy), without validating it.

    For models a pass built itself; a user's model goes through ``load`` or
    ``load_proto``, which validate it whole first. An import failure is bad input for an
    unvalidated model, but onnxopt's own failure (an internal error) once ``validated``.
    """
    what = str(path) if path else "model"
    had_external = any(is_external(tensor) for tensor in iter_model_tensor_protos(proto))
    if had_external and base_dir is None:
        raise BadInputError(f"{what}: model has external data but no folder to read it from")
    try:
        graph = gs.import_onnx(proto)
        toposort_all(graph)
    except Exception as error:  # graph-surgeon raises bare Exceptions on malformed graphs
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        if validated:
            raise RuntimeError(f"graph-surgeon cannot import {what}, which passed validation: {reason}") from error
        raise BadInputError(f"{what}: cannot import graph ({reason})") from None
    if base_dir is not None:
        _attach_lazy_external(graph, base_dir)
    return Model(
        graph=graph,
        base_dir=base_dir,
        had_external_data=had_external,
        path=path,
        doc_string=proto.doc_string,
        model_version=proto.model_version,
        domain=proto.domain,
        metadata_props={entry.key: entry.value for entry in proto.metadata_props},
        source_ir_version=proto.ir_version,
        initializer_inputs=_initializer_inputs(proto),
    )


def _initializer_inputs(proto: onnx.ModelProto) -> list[str]:
    # Below IR 4 every initializer had to be listed as an input: an artefact, not an interface.
    if proto.ir_version < 4:
        return []
    initializers = {init.name for init in proto.graph.initializer}
    return [value.name for value in proto.graph.input if value.name in initializers]


def _restore_initializer_inputs(proto: onnx.ModelProto, names: list[str]) -> None:
    listed = {value.name for value in proto.graph.input}
    by_name = {init.name: init for init in proto.graph.initializer}
    for name in names:
        if name in by_name and name not in listed:
            init = by_name[name]
            proto.graph.input.append(onnx.helper.make_tensor_value_info(name, init.data_type, list(init.dims)))


def _subgraph_protos(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield attr.g
                yield from _subgraph_protos(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    yield sub
                    yield from _subgraph_protos(sub)


def _hoist_shared_subgraph_initializers(graph: onnx.GraphProto) -> None:
    """Keep one copy of initializers that graph-surgeon copied into every subgraph reading them.

    On export graph-surgeon writes each outer tensor a subgraph reads as an initializer of
    that subgraph, once per branch or body; names are unique across scopes, so a name seen
    in the main graph or in several subgraphs is one tensor, kept once in the main graph.
    """
    subgraphs = list(_subgraph_protos(graph))
    if not subgraphs:
        return
    owners: dict[str, list[onnx.GraphProto]] = {}
    for sub in subgraphs:
        for init in sub.initializer:
            owners.setdefault(init.name, []).append(sub)
    main_names = {init.name for init in graph.initializer}
    shared = {name for name, subs in owners.items() if name in main_names or len(subs) > 1}
    if not shared:
        return
    for sub in subgraphs:
        kept = [copy.deepcopy(init) for init in sub.initializer if init.name not in shared]
        hoisted = [init for init in sub.initializer if init.name in shared]
        for init in hoisted:
            if init.name not in main_names:
                graph.initializer.append(init)
                main_names.add(init.name)
        if hoisted:
            del sub.initializer[:]
            sub.initializer.extend(kept)


def read_valid_proto(path: Path) -> onnx.ModelProto:
    """Parse and validate a user's model file without importing it (for commands that run it as it is)."""
    proto = read_proto(path)
    validate_model(proto, path.resolve().parent, str(path))
    return proto


def load_proto(proto: onnx.ModelProto, base_dir: Path | None = None, path: Path | None = None) -> Model:
    """Validate a user's ModelProto whole (``onnxopt.validate``), then import it; BadInputError on any defect."""
    validate_model(proto, base_dir, str(path) if path else "model")
    return from_proto(proto, base_dir=base_dir, path=path, validated=True)


def load(path: str | os.PathLike[str]) -> Model:
    """Load and validate a model from disk without reading its weights; BadInputError on any problem."""
    path = Path(path)
    return load_proto(read_proto(path), base_dir=path.resolve().parent, path=path)


def _used_domains(proto: onnx.ModelProto) -> set[str]:
    domains: set[str] = {""}

    def visit(nodes: Iterator[onnx.NodeProto] | list[onnx.NodeProto]) -> None:
        for node in nodes:
            domains.add(node.domain or "")
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    visit(attr.g.node)
                elif attr.type == onnx.AttributeProto.GRAPHS:
                    for sub in attr.graphs:
                        visit(sub.node)

    visit(proto.graph.node)
    for function in proto.functions:
        visit(function.node)
    return domains


def to_proto(model: Model) -> onnx.ModelProto:
    """Export a Model to a ModelProto: unused opset imports dropped, lowest IR version set.

    External tensors stay external references relative to ``model.base_dir``.
    """
    graph = model.graph
    imports = {entry.domain: entry.version for entry in (graph.import_domains or [])}
    imports[""] = int(graph.opset)
    proto = gs.export_onnx(graph, do_type_check=False)
    _hoist_shared_subgraph_initializers(proto.graph)
    _restore_initializer_inputs(proto, model.initializer_inputs)
    used = _used_domains(proto)
    function_domains = {function.domain for function in proto.functions}
    del proto.opset_import[:]
    for domain in sorted(used | (function_domains & set(imports))):
        version = imports.get(domain, imports.get("ai.onnx") if domain == "ai.onnx" else 1)
        proto.opset_import.append(onnx.helper.make_opsetid(domain, int(version or 1)))
    proto.doc_string = model.doc_string
    proto.model_version = model.model_version
    proto.domain = model.domain
    del proto.metadata_props[:]
    for key, value in model.metadata_props.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = graph.producer_name or "onnxopt"
    proto.producer_version = graph.producer_version or ""
    proto.ir_version = minimum_ir_version(proto)
    return proto


def tensor_nbytes(tensor: onnx.TensorProto) -> int:
    """Size in bytes of a tensor's payload (external or embedded)."""
    if is_external(tensor):
        return int(external_info(tensor).get("length", 0) or 0)
    if tensor.HasField("raw_data"):
        return len(tensor.raw_data)
    return tensor.ByteSize()


def model_file_bytes(path: Path, proto: onnx.ModelProto | None = None) -> int:
    """Bytes on disk of a model: the .onnx file plus every external-data file it names."""
    proto = proto if proto is not None else read_proto(path)
    total = path.stat().st_size
    seen: set[Path] = set()
    for tensor in iter_model_tensor_protos(proto):
        if is_external(tensor):
            location = (path.resolve().parent / external_info(tensor).get("location", "")).resolve()
            if location not in seen and location.is_file():
                seen.add(location)
                total += location.stat().st_size
    return total


@dataclass
class SaveInfo:
    """What ``save`` wrote."""

    path: Path
    external_data_path: Path | None
    ir_version: int
    bytes_written: int


def _write_external(proto: onnx.ModelProto, model: Model, data_handle, data_name: str) -> int:
    offset = 0
    for tensor in iter_model_tensor_protos(proto):
        source_external = is_external(tensor)
        if not source_external and tensor_nbytes(tensor) < EXTERNAL_TENSOR_MIN_BYTES:
            continue
        pad = (-offset) % EXTERNAL_ALIGNMENT_BYTES
        if pad:
            data_handle.write(b"\0" * pad)
            offset += pad
        start = offset
        if source_external:
            if model.base_dir is None:
                # Loading refuses such input (from_proto), so reaching this is a bug: never "bad input".
                raise RuntimeError(f"internal error: tensor {tensor.name!r} is external but the model lost its folder")
            source = resolve_location(model.base_dir, external_info(tensor).get("location", ""), tensor.name)
            for chunk in iter_external_chunks(tensor, source):
                data_handle.write(chunk)
                offset += len(chunk)
        else:
            raw = raw_bytes_of_inline(tensor)
            data_handle.write(raw)
            offset += len(raw)
            for name in (
                "raw_data",
                "float_data",
                "int32_data",
                "int64_data",
                "double_data",
                "uint64_data",
                "string_data",
            ):
                tensor.ClearField(name)
        del tensor.external_data[:]
        tensor.data_location = onnx.TensorProto.EXTERNAL
        for key, value in (("location", data_name), ("offset", str(start)), ("length", str(offset - start))):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value
    return offset


def _total_weight_bytes(proto: onnx.ModelProto) -> int:
    return sum(tensor_nbytes(tensor) for tensor in iter_model_tensor_protos(proto))


def save(model: Model, path: str | os.PathLike[str], external_data: bool | None = None) -> SaveInfo:
    """Write ``model`` to ``path`` atomically (temp files in the target folder, then rename).

    ``external_data``: None decides automatically (the input had it, or the weights near
    2 GB); True/False force it. The external file is ``<name>.data`` beside the model.
    """
    path = Path(path)
    check_output_folder(path)  # before any export work
    proto = to_proto(model)
    if external_data is None:
        external_data = model.had_external_data or _total_weight_bytes(proto) >= EXTERNAL_DATA_THRESHOLD_BYTES
    if not external_data and any(is_external(t) for t in iter_model_tensor_protos(proto)):
        external_data = True
    data_path = path.with_name(path.name + ".data") if external_data else None
    # The data file is renamed first: a reader of the new model file always finds its data complete.
    with staged_outputs([data_path, path] if data_path is not None else [path]) as temps:
        if data_path is not None:
            with open(temps[0], "wb") as data_handle:
                _write_external(proto, model, data_handle, data_path.name)
        temps[-1].write_bytes(proto.SerializeToString())
    written = path.stat().st_size + (data_path.stat().st_size if data_path else 0)
    logger.info("wrote %s (IR %d, %d bytes)", path, proto.ir_version, written)
    return SaveInfo(path=path, external_data_path=data_path, ir_version=proto.ir_version, bytes_written=written)


# Tensors at least this big are serialized on their own by ``serialize_model`` (never copied into a merged proto).
STREAMED_TENSOR_MIN_BYTES = 1 << 20
_MODEL_GRAPH_FIELD = onnx.ModelProto.DESCRIPTOR.fields_by_name["graph"].number
_GRAPH_INITIALIZER_FIELD = onnx.GraphProto.DESCRIPTOR.fields_by_name["initializer"].number


class _ShapeOnly(LazyValues):
    """Stands in for a large tensor while the rest of the model is exported: dims and type, no bytes.

    With ``placeholder_location`` the stand-in exports as an external reference of the
    real length to that file, which is what ``onnx.checker`` is shown (``stripped_copy``).
    """

    def __init__(self, constant: gs.Constant, onnx_dtype: int, placeholder_location: str | None = None) -> None:
        self.shape = tuple(int(dim) for dim in constant.shape)
        self.dtype = constant.dtype
        self.nbytes = 0
        self.onnx_dtype = onnx_dtype
        self.length = constant_nbytes(constant)
        self.location = placeholder_location

    @property
    def tensor(self) -> onnx.TensorProto:
        tensor = onnx.TensorProto()
        tensor.dims.extend(self.shape)
        tensor.data_type = self.onnx_dtype
        if self.location is not None:
            tensor.data_location = onnx.TensorProto.EXTERNAL
            for key, value in (("location", self.location), ("offset", "0"), ("length", str(self.length))):
                entry = tensor.external_data.add()
                entry.key, entry.value = key, value
        return tensor

    def load(self) -> np.ndarray:  # pragma: no cover - only exported, never read
        raise RuntimeError("a shape-only stand-in has no values")


def _with_stand_ins(model: Model, min_bytes: int, placeholder_location: str | None) -> tuple[Model, dict]:
    """A copy of ``model`` whose large main-graph constants are shape-only stand-ins; the originals by name."""
    work = model.copy()
    work.graph.producer_name, work.graph.producer_version = model.graph.producer_name, model.graph.producer_version
    large: dict[str, gs.Constant] = {}
    for name, tensor in work.graph.tensors().items():
        if not isinstance(tensor, gs.Constant) or constant_nbytes(tensor) < min_bytes:
            continue
        stored = _stored_proto(tensor)
        if stored is not None and is_external(stored):
            continue  # stays a reference to its file
        large[name] = gs.Constant(name, tensor._values, data_location=tensor.data_location,
                                  export_dtype=tensor.export_dtype)
        tensor._values = _ShapeOnly(tensor, stored.data_type if stored is not None else _onnx_type(tensor),
                                    placeholder_location)
    return work, large


def checkable_proto(model: Model) -> onnx.ModelProto:
    """The model's proto with its large main-graph tensors as references to STRIPPED_LOCATION.

    What ``onnx.checker`` and structural checks need, without copying a single weight
    (``to_proto`` then ``stripped_copy`` copy every one of them twice).
    """
    work, _ = _with_stand_ins(model, EXTERNAL_TENSOR_MIN_BYTES + 1, STRIPPED_LOCATION)
    return to_proto(work)


def _stored_proto(constant: gs.Constant) -> onnx.TensorProto | None:
    """The TensorProto a lazily loaded constant was read from (None for arrays and computed values).

    Looked up in the instance, not through the attribute: lazy values that compute their
    bytes (smoothing's scaled weights) expose ``tensor`` as a property that builds them.
    """
    values = constant._values
    stored = vars(values).get("tensor") if isinstance(values, LazyValues) else None
    return stored if isinstance(stored, onnx.TensorProto) else None


def _onnx_type(constant: gs.Constant) -> int:
    """The ONNX element type graph-surgeon exports ``constant`` as (its export_dtype honoured)."""
    sample = gs.Constant("sample", np.zeros((0,), dtype=np.dtype(constant.dtype)), export_dtype=constant.export_dtype)
    return int(OnnxExporter.export_tensor_proto(sample).data_type)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field_header(number: int, length: int) -> bytes:
    return _varint(number << 3 | 2) + _varint(length)


def stored_bytes(model: Model) -> tuple[bool, int]:
    """(whether any tensor lives in external data, bytes of the tensors stored inline), without exporting."""
    external, inline = False, 0
    for graph in iter_all_graphs(model.graph):
        constants = [t for t in graph.tensors().values() if isinstance(t, gs.Constant)]
        constants += [v for node in graph.nodes for v in node.attrs.values() if isinstance(v, gs.Constant)]
        for constant in constants:
            stored = _stored_proto(constant)
            if stored is not None and is_external(stored):
                external = True
            else:
                inline += constant_nbytes(constant)
    return external, inline


def serialize_model(model: Model) -> bytes:
    """``to_proto(model).SerializeToString()``, without building the merged proto for large tensors.

    Exporting a model copies every tensor into the graph proto, then again into the model
    proto, then serializes it: three copies of every weight, seconds for BERT-base, for
    every onnxruntime session a pass opens. Protobuf's wire format lets repeated fields
    arrive in pieces, so the large main-graph initializers are exported and serialized one
    by one after the rest of the model (exported with shape-only stand-ins). The bytes parse
    to the same model. Models with subgraphs or functions (whose scopes may share
    initializers) and tensors with external data take the plain path.
    """
    graph = model.graph
    if graph.functions or any(any(True for _ in node_subgraphs(node)) for node in graph.nodes):
        return to_proto(model).SerializeToString()
    work, large = _with_stand_ins(model, STREAMED_TENSOR_MIN_BYTES, None)
    if not large:
        return to_proto(model).SerializeToString()
    proto = to_proto(work)
    kept = [tensor for tensor in proto.graph.initializer if tensor.name not in large]
    if len(kept) + len(large) != len(proto.graph.initializer):
        return to_proto(model).SerializeToString()  # a large tensor is not a plain initializer: no shortcut
    del proto.graph.initializer[:]
    proto.graph.initializer.extend(kept)
    parts = [proto.graph.SerializeToString()]
    for constant in large.values():
        payload = OnnxExporter.export_tensor_proto(constant).SerializeToString()
        parts.append(_field_header(_GRAPH_INITIALIZER_FIELD, len(payload)))
        parts.append(payload)
    proto.ClearField("graph")
    head = proto.SerializeToString()
    graph_length = sum(len(part) for part in parts)
    return b"".join([head, _field_header(_MODEL_GRAPH_FIELD, graph_length), *parts])


def _externalize_inline(proto: onnx.ModelProto, folder: Path, data_name: str) -> None:
    """Move the embedded tensors of ``proto`` to ``folder/data_name`` (a model past protobuf's 2 GB)."""
    with open(folder / data_name, "wb") as handle:
        offset = 0
        for tensor in iter_model_tensor_protos(proto):
            if is_external(tensor) or tensor_nbytes(tensor) < EXTERNAL_TENSOR_MIN_BYTES:
                continue
            pad = (-offset) % EXTERNAL_ALIGNMENT_BYTES
            handle.write(b"\0" * pad)
            offset += pad
            raw = raw_bytes_of_inline(tensor)
            handle.write(raw)
            for name in ("raw_data", "float_data", "int32_data", "int64_data", "double_data", "uint64_data"):
                tensor.ClearField(name)
            tensor.data_location = onnx.TensorProto.EXTERNAL
            del tensor.external_data[:]
            for key, value in (("location", data_name), ("offset", str(offset)), ("length", str(len(raw)))):
                entry = tensor.external_data.add()
                entry.key, entry.value = key, value
            offset += len(raw)


def inline_tensor_bytes(proto: onnx.ModelProto) -> int:
    """Bytes of the embedded tensors of ``proto``, from the messages' sizes.

    ``ByteSize()`` of a tensor message is cheap, unlike reading ``raw_data`` (a copy of the
    bytes) or ``ByteSize()`` of the whole model (a walk over everything in it).
    """
    return sum(tensor.ByteSize() for tensor in iter_model_tensor_protos(proto) if not is_external(tensor))


def _free_name(base: str, taken: set[str]) -> str:
    name, index = base, 0
    while name in taken:
        index += 1
        name = f"{index}_{base}"
    taken.add(name)
    return name


def write_session_copy(model: Model, folder: Path, proto: onnx.ModelProto | None = None) -> Path:
    """Write ``model`` into the empty ``folder`` for onnxruntime, its external data *linked*, not copied.

    Every external-data file the model reads (from its source folder) is hard-linked into
    ``folder`` under its original location, so onnxruntime finds it where the model says
    and no gigabytes are copied (onnxruntime refuses symbolic links that leave the model's
    folder, but a hard link is the file itself). Tensors the passes created in memory are
    embedded, or written to a data file of their own when they would pass protobuf's
    2 GB. Raises OSError when the files cannot be linked (another file system, no
    permission): the caller then copies instead (``save``). ``proto``: ``to_proto(model)``
    when the caller has it already (it may be modified).
    """
    proto = proto if proto is not None else to_proto(model)
    tensors = iter_model_tensor_protos(proto)
    locations = sorted({external_info(tensor).get("location", "") for tensor in tensors if is_external(tensor)})
    if locations and model.base_dir is None:
        raise RuntimeError("a model with external tensors lost the folder they live in")
    for location in locations:
        source = resolve_location(model.base_dir, location)
        target = folder / location
        target.parent.mkdir(parents=True, exist_ok=True)
        os.link(source, target)
    taken = {Path(location).parts[0] for location in locations}
    if inline_tensor_bytes(proto) >= EXTERNAL_DATA_THRESHOLD_BYTES:
        _externalize_inline(proto, folder, _free_name("session_tensors.data", taken))
    path = folder / _free_name("model.onnx", taken)
    path.write_bytes(proto.SerializeToString())
    return path


def read_constant(constant: gs.Constant) -> np.ndarray:
    """The values of a graph-surgeon Constant, without caching lazy weights in the graph.

    ``Constant.values`` replaces its lazy values by the loaded array, which would keep
    every weight a pass looked at in memory; passes read through this instead.
    """
    values = constant._values
    if isinstance(values, LazyValues):
        return values.load()
    return values


def constant_nbytes(constant: gs.Constant) -> int:
    """Bytes of a Constant's payload, without loading it."""
    values = constant._values
    if isinstance(values, LazyValues):
        return int(values.nbytes)
    return int(np.asarray(values).nbytes)


def deep_copy_proto(proto: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of a ModelProto (used before mutating protos that are shared)."""
    return copy.deepcopy(proto)
