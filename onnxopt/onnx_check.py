"""onnx.checker and strict shape inference on a weight-stripped, sorted copy of a model.

The checker cannot take a model over 2 GB, and reading every weight to check a model
would defeat lazy loading; it also needs no weight bytes, only their dims and types. So
it runs on a copy whose large tensors are replaced by references to an empty external
file (their stored lengths are checked separately, by ``onnxopt.stored_data``), with the
nodes of every graph put in topological order (graph-surgeon sorts on import; order is
not a defect, and the checker stops at the first problem it sees).

``full=True`` adds what ``onnx.checker.check_model(full_check=True)`` adds: shape
inference in strict mode with type checks, which finds nodes whose inputs cannot have the
types and shapes the model says they do. When a model fails only because of its
``value_info`` annotations (intermediate shapes or types that disagree with what the nodes
compute, which onnxruntime refuses too when the types differ), the message says so.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

try:
    import resource
except ImportError:  # Windows: no address-space limits
    resource = None  # type: ignore[assignment]

import onnx
import onnx.shape_inference

from onnxopt.element_types import payload_bytes
from onnxopt.errors import ModelDefect
from onnxopt.external_data import is_external
from onnxopt.proto_walk import iter_places, iter_stored_tensors
from onnxopt.scopes import check_scopes
from onnxopt.stored_data import element_count

STRIPPED_LOCATION = "stripped.bin"
# Memory onnx's checker may use beyond what the process holds: a stripped copy needs megabytes.
CHECKER_MEMORY_BYTES = 4 << 30
# Embedded tensors larger than this are replaced by external references in the checked copy;
# small ones stay, because shape inference reads constant shapes (Reshape, Expand) from them.
STRIP_MIN_BYTES = 1024
_DATA_FIELDS = ("raw_data", "float_data", "int32_data", "int64_data", "double_data", "uint64_data")


def _embedded_bytes(tensor: onnx.TensorProto) -> int:
    if tensor.HasField("raw_data"):
        return len(tensor.raw_data)
    return tensor.ByteSize()


def _stored_tensors(proto: onnx.ModelProto) -> list[onnx.TensorProto]:
    """Every stored dense tensor. Sparse tensors' values and indices stay as they are: onnx's checker
    reads them (indices in range and sorted), and sparse storage is chosen because it is small."""
    sparse_parts: list[onnx.TensorProto] = []
    for place in iter_places(proto):
        body = place.body
        sparse = list(body.sparse_initializer) if isinstance(body, onnx.GraphProto) else []
        for node in body.node:
            sparse.extend(attr.sparse_tensor for attr in node.attribute if attr.HasField("sparse_tensor"))
        sparse_parts.extend(part for tensor in sparse for part in (tensor.values, tensor.indices))
    # The parts are held in the list, so protobuf hands back the same objects and identity is stable.
    return [tensor for place in iter_places(proto) for _what, tensor in iter_stored_tensors(place)
            if not any(tensor is part for part in sparse_parts)]


def _densify_sparse_initializers(light: onnx.ModelProto) -> None:
    """Give shape inference each sparse initializer as the dense tensor onnxruntime turns it into.

    onnx's shape inference types a sparse initializer as ``sparse_tensor`` and then refuses
    it as the input of every standard op, while onnxruntime densifies it on load; judged
    as dense (dims and type, no data), such models are checked on everything else.
    """
    for place in iter_places(light):
        body = place.body
        if not isinstance(body, onnx.GraphProto) or not len(body.sparse_initializer):
            continue
        for sparse in body.sparse_initializer:
            dense = body.initializer.add()
            dense.name, dense.data_type = sparse.values.name, sparse.values.data_type
            dense.dims.extend(sparse.dims)
            dense.data_location = onnx.TensorProto.EXTERNAL
            for key, value in (("location", STRIPPED_LOCATION), ("offset", "0"),
                               ("length", str(payload_bytes(dense.data_type, element_count(dense)) or 0))):
                entry = dense.external_data.add()
                entry.key, entry.value = key, value
        del body.sparse_initializer[:]


def strip_payloads_in_place(proto: onnx.ModelProto, min_bytes: int = STRIP_MIN_BYTES) -> onnx.ModelProto:
    """Replace tensor bytes above ``min_bytes`` by references to an empty file: dims and types stay.

    For every analysis that needs a model's structure but no weight values (the checker,
    shape and type inference): the model then costs megabytes, and one over 2 GB fits in a
    protobuf. Small tensors stay, because shape inference reads constant shapes (Reshape,
    Expand) from them. External tensors keep their offsets and lengths, pointing nowhere.
    Payload sizes come from dims and element type (``onnxopt.stored_data`` checks that the
    stored bytes match them): reading ``raw_data`` to measure it copies the whole payload.
    """
    for tensor in _stored_tensors(proto):
        if is_external(tensor):
            for entry in tensor.external_data:
                if entry.key == "location":
                    entry.value = STRIPPED_LOCATION  # real locations are checked by onnxopt.stored_data
            continue
        if tensor.data_type == onnx.TensorProto.STRING:
            continue
        length = payload_bytes(tensor.data_type, element_count(tensor))
        if length is None:
            length = _embedded_bytes(tensor)
        if length <= min_bytes:
            continue
        for name in _DATA_FIELDS:
            tensor.ClearField(name)
        tensor.data_location = onnx.TensorProto.EXTERNAL
        del tensor.external_data[:]
        for key, value in (("location", STRIPPED_LOCATION), ("offset", "0"), ("length", str(length))):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value
    return proto


def stripped_copy(proto: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``proto`` with its large payloads stripped (``strip_payloads_in_place``)."""
    light = onnx.ModelProto()
    light.CopyFrom(proto)
    return strip_payloads_in_place(light)


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def virtual_memory_bytes() -> int | None:
    """This process's address-space size (Linux ``/proc``); None where it cannot be read."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE")


@contextlib.contextmanager
def memory_ceiling(extra_bytes: int) -> Iterator[None]:
    """Cap this process's address space at its current size plus ``extra_bytes`` (Linux; elsewhere no cap).

    onnx's shape inference builds whatever shapes a model declares; a crafted dimension
    can make it allocate until the machine's OOM killer steps in (and kills whatever is
    biggest, not necessarily us). Under the cap the allocation fails as a MemoryError.
    """
    current = virtual_memory_bytes() if resource is not None else None
    if current is None:
        yield
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    ceiling = current + extra_bytes
    if hard != resource.RLIM_INFINITY:
        ceiling = min(ceiling, hard)
    if soft != resource.RLIM_INFINITY and soft <= ceiling:
        yield  # already capped at least as tightly
        return
    resource.setrlimit(resource.RLIMIT_AS, (ceiling, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _run_checker(light: onnx.ModelProto, full: bool) -> str | None:
    """The checker's first complaint about an already stripped and sorted copy, or None."""
    with tempfile.TemporaryDirectory(prefix="onnxopt-check-") as folder:
        (Path(folder) / STRIPPED_LOCATION).write_bytes(b"")  # external locations must name a real file
        target = Path(folder) / "model.onnx"
        target.write_bytes(light.SerializeToString())
        try:
            with memory_ceiling(CHECKER_MEMORY_BYTES):
                onnx.checker.check_model(str(target), full_check=full)
        except MemoryError:
            return (f"onnx's shape inference needs more than {CHECKER_MEMORY_BYTES >> 30} GiB for this model "
                    "(a declared dimension far too large for what a node does with it?)")
        except Exception as error:  # whatever onnx raises here is its verdict on the model
            return _first_line(error)
    return None


def _clear_value_info(proto: onnx.ModelProto) -> int:
    """Remove every value_info annotation (main graph, subgraphs, functions); returns how many."""
    removed = 0
    for place in iter_places(proto):
        removed += len(place.body.value_info)
        del place.body.value_info[:]
    return removed


def check_with_onnx(proto: onnx.ModelProto, full: bool = False) -> None:
    """Raise ModelDefect with the checker's first complaint; ``full`` runs strict shape inference as well.

    Scoping defects are reported by ``onnxopt.scopes`` first, with clearer words than the checker's.
    """
    light = stripped_copy(proto)
    check_scopes(light, sort=True)
    complaint = None
    if full and any(len(place.body.sparse_initializer) for place in iter_places(light)
                    if isinstance(place.body, onnx.GraphProto)):
        complaint = _run_checker(light, full=False)  # the sparse tensors themselves (indices, shapes)
        _densify_sparse_initializers(light)
    complaint = complaint or _run_checker(light, full)
    if complaint is None:
        return
    if full and _clear_value_info(light) and _run_checker(light, full) is None:
        raise ModelDefect(f"value_info annotations disagree with what the nodes compute: {complaint}")
    raise ModelDefect(f"invalid ONNX model: {complaint}")
