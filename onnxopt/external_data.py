"""External-data tensors: safe location resolution, lazy memory-mapped reads, streaming.

Models over 2 GB keep their weights outside the protobuf. We never read those weights up
front: each tensor is read on demand through a memory map, and untouched tensors are
copied to the output by streaming fixed-size chunks, so peak memory stays far below the
model size. Locations are validated first, because a crafted model can otherwise make a
tool read arbitrary files (``../../etc/passwd``, absolute paths, symlinks out of the folder).
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import onnx.numpy_helper
from onnx_graphsurgeon.ir.tensor import LazyValues

from onnxopt.element_types import payload_bytes
from onnxopt.errors import BadInputError

CHUNK_BYTES = 16 * 1024 * 1024
# Element types stored several to a byte: no numpy view of their bytes has their shape.
_PACKED_TYPES = frozenset(
    getattr(onnx.TensorProto, name) for name in ("INT4", "UINT4", "INT2", "UINT2", "FLOAT4E2M1")
    if hasattr(onnx.TensorProto, name)
)


def is_external(tensor: onnx.TensorProto) -> bool:
    """True when the tensor's bytes live in a separate file."""
    return tensor.data_location == onnx.TensorProto.EXTERNAL


def external_info(tensor: onnx.TensorProto) -> dict[str, str]:
    """The ``external_data`` key/value entries of a tensor as a dict."""
    return {entry.key: entry.value for entry in tensor.external_data}


def resolve_location(base_dir: Path, location: str, tensor_name: str = "") -> Path:
    """Resolve an external-data location, refusing anything outside ``base_dir``.

    Raises BadInputError for absolute paths, ``..`` escapes, symlinks that leave the
    folder, and missing files.
    """
    label = f" of tensor {tensor_name!r}" if tensor_name else ""
    if not location:
        raise BadInputError(f"external data{label} has no location")
    if os.path.isabs(location) or location.startswith(("/", "\\")) or ":" in location[:3]:
        raise BadInputError(f"external data location {location!r}{label} is an absolute path; refused")
    if ".." in Path(location).parts:
        raise BadInputError(f"external data location {location!r}{label} points outside the model folder; refused")
    base_real = Path(os.path.realpath(base_dir))
    candidate = base_dir / location
    real = Path(os.path.realpath(candidate))
    if base_real != real and base_real not in real.parents:
        raise BadInputError(f"external data location {location!r}{label} resolves outside the model folder; refused")
    if not real.is_file():
        raise BadInputError(f"external data file {location!r}{label} not found beside the model")
    return real


def _byte_range(tensor: onnx.TensorProto, path: Path) -> tuple[int, int]:
    info = external_info(tensor)
    offset = int(info.get("offset", 0) or 0)
    length_text = info.get("length")
    file_size = path.stat().st_size
    count = 1
    for dim in tensor.dims:
        count *= int(dim)
    # Without a length entry the tensor is as long as its dims say (the file may hold more after it).
    declared = payload_bytes(tensor.data_type, count)
    length = int(length_text) if length_text else (declared if declared is not None else file_size - offset)
    if offset < 0 or length < 0 or offset + length > file_size:
        raise BadInputError(
            f"external data of tensor {tensor.name!r} asks for bytes {offset}..{offset + length} "
            f"but {path.name} holds {file_size}"
        )
    return offset, length


def iter_external_chunks(tensor: onnx.TensorProto, path: Path) -> Iterator[bytes]:
    """Yield the raw bytes of an external tensor in chunks of at most CHUNK_BYTES."""
    offset, length = _byte_range(tensor, path)
    with open(path, "rb") as handle:
        handle.seek(offset)
        remaining = length
        while remaining > 0:
            chunk = handle.read(min(CHUNK_BYTES, remaining))
            if not chunk:
                raise BadInputError(f"external data file {path.name} ends early (tensor {tensor.name!r})")
            remaining -= len(chunk)
            yield chunk


def read_external_bytes(tensor: onnx.TensorProto, path: Path) -> bytes:
    """All raw bytes of one external tensor, through a memory map (one tensor at a time)."""
    offset, length = _byte_range(tensor, path)
    if length == 0:
        return b""
    with open(path, "rb") as handle:
        page = mmap.ALLOCATIONGRANULARITY
        start = offset - offset % page
        with mmap.mmap(handle.fileno(), length + offset - start, access=mmap.ACCESS_READ, offset=start) as view:
            return view[offset - start : offset - start + length]


def external_array_view(tensor: onnx.TensorProto, path: Path) -> np.ndarray | None:
    """A read-only memory map of an external tensor as a numpy array (no copy), or None when its
    element type has no fixed-width numpy dtype (sub-byte, strings) or its bytes do not fit the shape.

    For a pass that reads a large weight once to transform it: the pages are read on demand
    and belong to the page cache, so the weight is not held twice (file bytes, then array).
    """
    try:
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type)).newbyteorder("<")
    except (KeyError, TypeError, ValueError):
        return None
    if dtype.kind in "OSU" or tensor.data_type in _PACKED_TYPES:
        return None
    offset, length = _byte_range(tensor, path)
    shape = tuple(int(dim) for dim in tensor.dims)
    if length != int(np.prod(shape, dtype=np.int64)) * dtype.itemsize or length == 0:
        return None
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape)


def external_to_array(tensor: onnx.TensorProto, path: Path) -> np.ndarray:
    """Decode an external tensor into a numpy array without touching other tensors."""
    inline = onnx.TensorProto()
    inline.CopyFrom(tensor)
    del inline.external_data[:]
    inline.data_location = onnx.TensorProto.DEFAULT
    inline.raw_data = read_external_bytes(tensor, path)
    return onnx.numpy_helper.to_array(inline)


def raw_bytes_of_inline(tensor: onnx.TensorProto) -> bytes:
    """The little-endian raw bytes of an embedded tensor, whatever field holds them."""
    if tensor.HasField("raw_data"):
        return tensor.raw_data
    return onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(tensor)).raw_data


class ExternalLazyValues(LazyValues):
    """graph-surgeon lazy values that read their bytes from a resolved external file.

    graph-surgeon's own LazyValues resolve external paths against the current directory;
    this one knows the model folder, and the exporter keeps the original TensorProto
    (external reference included), so untouched weights are never materialised.
    """

    def __init__(self, tensor: onnx.TensorProto, path: Path) -> None:
        super().__init__(tensor)
        self.path = path

    def load(self) -> np.ndarray:
        return np.array(external_to_array(self.tensor, self.path))
