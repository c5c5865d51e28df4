"""Content identity of constant tensors: type key, streamed digests, streamed byte comparison.

Deduplication must never merge two tensors on a hash alone, and must not load a
multi-gigabyte external weight to compare it. Every constant - an external tensor read
through its file, an embedded TensorProto, or an in-memory numpy array - is presented as
the same stream of little-endian bytes, so a hash groups candidates and a chunked
comparison of the two streams confirms each merge. A sample of each payload (its first
and last bytes) splits same-shaped weights - every layer of a large model - before any
full read, and full digests of external tensors are remembered per file region, so a
pass run to a fixed point reads each weight file once, not once per iteration.

Tensors that hold the same values in another layout (a weight stored once as ``W`` and
once as ``Wᵀ``, or reshaped) have different byte streams but the same *multiset* of
elements: ``multiset_digest`` hashes each element on its own and adds the hashes, so it
does not depend on the order of the stream and still reads each tensor once, streaming.
``ElementReader`` reads single elements (through a memory map for external data), so a
candidate layout can be tested on a sample before any full comparison.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx_graphsurgeon.ir.tensor import LazyValues, SparseValues

from onnxopt.external_data import (
    CHUNK_BYTES,
    ExternalLazyValues,
    external_info,
    is_external,
    iter_external_chunks,
    raw_bytes_of_inline,
)
from onnxopt.graph_edit import numpy_to_onnx_dtype

ContentKey = tuple[int, tuple[int, ...]]

# Bytes read from each end of a payload for the cheap first comparison.
SAMPLE_BYTES = 64 * 1024

# Full digests of external tensors, keyed by file region and the file's size and mtime.
_EXTERNAL_DIGESTS: dict[tuple, str] = {}
# Element types stored one element per whole byte or more, but not as one of the unsigned ints below.
_SUB_BYTE_TYPES = frozenset(
    getattr(onnx.TensorProto, name)
    for name in ("INT4", "UINT4", "INT2", "UINT2", "FLOAT4E2M1")
    if hasattr(onnx.TensorProto, name)
)
_WORD_SIZES = (1, 2, 4, 8)
# Odd 64-bit multipliers of splitmix64's finaliser (Steele et al.), the per-element mixer of multiset_digest.
_MIX_ADD = np.uint64(0x9E3779B97F4A7C15)
_MIX_MUL_1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX_MUL_2 = np.uint64(0x94D049BB133111EB)


def _string_bytes(values: np.ndarray) -> bytes:
    """An unambiguous byte encoding of a string tensor (length-prefixed UTF-8 elements)."""
    parts = []
    for item in np.asarray(values, dtype=object).reshape(-1):
        encoded = item if isinstance(item, bytes) else str(item).encode()
        parts.append(len(encoded).to_bytes(8, "little") + encoded)
    return b"".join(parts)


def _array_chunks(array: np.ndarray) -> Iterator[bytes]:
    array = np.asarray(array)
    if array.dtype.kind in "OSU":
        yield _string_bytes(array)
        return
    if array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    flat = np.ascontiguousarray(array).reshape(-1)
    step = max(1, CHUNK_BYTES // max(1, flat.itemsize))
    for start in range(0, flat.size, step):
        yield flat[start : start + step].tobytes()


def content_key(constant: gs.Constant) -> ContentKey | None:
    """(ONNX element type, shape) of a constant, or None when it cannot be compared safely."""
    values = constant._values
    if isinstance(values, SparseValues):
        return None
    if constant._export_dtype is not None and np.dtype(constant._export_dtype) != np.dtype(constant.dtype):
        return None  # stored in one type, written in another: bytes would not match the file
    if isinstance(values, LazyValues):
        proto = values.tensor
        if not isinstance(proto, onnx.TensorProto):
            return None
        if is_external(proto) and not isinstance(values, ExternalLazyValues):
            return None  # no known folder to stream it from
        return int(proto.data_type), tuple(int(dim) for dim in proto.dims)
    array = np.asarray(values)
    dtype = numpy_to_onnx_dtype(array.dtype)
    if dtype is None:
        return None
    return dtype, tuple(int(dim) for dim in array.shape)


def iter_content_chunks(constant: gs.Constant) -> Iterator[bytes]:
    """The constant's payload as little-endian bytes, in chunks of at most CHUNK_BYTES.

    External tensors are streamed from their file; nothing is cached in the graph.
    """
    values = constant._values
    if isinstance(values, LazyValues):
        proto = values.tensor
        if proto.data_type == onnx.TensorProto.STRING:
            yield _string_bytes(values.load())
            return
        if is_external(proto):
            yield from iter_external_chunks(proto, values.path)
            return
        raw = raw_bytes_of_inline(proto)
        for start in range(0, len(raw), CHUNK_BYTES):
            yield raw[start : start + CHUNK_BYTES]
        return
    yield from _array_chunks(values)


def _external_region(proto: onnx.TensorProto, path: Path) -> tuple[int, int]:
    info = external_info(proto)
    offset = int(info.get("offset", 0) or 0)
    length = int(info["length"]) if info.get("length") else path.stat().st_size - offset
    return offset, length


def _head_and_tail(data: bytes | memoryview) -> bytes:
    if len(data) <= 2 * SAMPLE_BYTES:
        return bytes(data)
    return bytes(data[:SAMPLE_BYTES]) + bytes(data[-SAMPLE_BYTES:])


def content_sample(constant: gs.Constant) -> bytes:
    """The first and last SAMPLE_BYTES of the payload (all of it when small).

    Different samples prove different contents; equal samples prove nothing.
    """
    values = constant._values
    if isinstance(values, LazyValues):
        proto = values.tensor
        if proto.data_type == onnx.TensorProto.STRING:
            return _head_and_tail(_string_bytes(values.load()))
        if is_external(proto):
            offset, length = _external_region(proto, values.path)
            with open(values.path, "rb") as handle:
                handle.seek(offset)
                if length <= 2 * SAMPLE_BYTES:
                    return handle.read(length)
                head = handle.read(SAMPLE_BYTES)
                handle.seek(offset + length - SAMPLE_BYTES)
                return head + handle.read(SAMPLE_BYTES)
        return _head_and_tail(raw_bytes_of_inline(proto))
    array = np.asarray(values)
    if array.dtype.kind in "OSU":
        return _head_and_tail(_string_bytes(array))
    flat = np.ascontiguousarray(array).reshape(-1)
    if flat.dtype.byteorder == ">":
        flat = flat.astype(flat.dtype.newbyteorder("<"))
    count = max(1, SAMPLE_BYTES // max(1, flat.itemsize))
    if flat.size <= 2 * count:
        return flat.tobytes()
    return flat[:count].tobytes() + flat[-count:].tobytes()


def _external_cache_key(constant: gs.Constant) -> tuple | None:
    values = constant._values
    if not isinstance(values, ExternalLazyValues):
        return None
    proto = values.tensor
    offset, length = _external_region(proto, values.path)
    status = os.stat(values.path)
    return (str(values.path), offset, length, proto.data_type, tuple(proto.dims), status.st_size, status.st_mtime_ns)


def content_digest(constant: gs.Constant) -> str:
    """A blake2b digest of type, shape and bytes (streamed). Groups candidates; never proves equality."""
    cache_key = _external_cache_key(constant)
    if cache_key is not None and cache_key in _EXTERNAL_DIGESTS:
        return _EXTERNAL_DIGESTS[cache_key]
    key = content_key(constant)
    digest = hashlib.blake2b(digest_size=20)
    digest.update(repr(key).encode())
    for chunk in iter_content_chunks(constant):
        digest.update(chunk)
    result = digest.hexdigest()
    if cache_key is not None:
        _EXTERNAL_DIGESTS[cache_key] = result
    return result


def streams_equal(left: Iterator[bytes], right: Iterator[bytes]) -> bool:
    """Compare two byte streams whose chunk boundaries may differ, holding one chunk of each."""
    buffers = [memoryview(b""), memoryview(b"")]
    streams = [left, right]
    done = [False, False]
    while True:
        for side in (0, 1):
            while not buffers[side] and not done[side]:
                chunk = next(streams[side], None)
                if chunk is None:
                    done[side] = True
                else:
                    buffers[side] = memoryview(chunk)
        if not buffers[0] or not buffers[1]:
            return not buffers[0] and not buffers[1]  # equal only if both ran out together
        size = min(len(buffers[0]), len(buffers[1]))
        if buffers[0][:size] != buffers[1][:size]:
            return False
        buffers = [buffers[0][size:], buffers[1][size:]]


def contents_equal(first: gs.Constant, second: gs.Constant) -> bool:
    """True when both constants have the same type, shape and bytes (compared chunk by chunk)."""
    key = content_key(first)
    if key is None or key != content_key(second):
        return False
    if first._values is second._values:
        return True  # two graph-surgeon objects sharing one payload (graph copies do this)
    return streams_equal(iter_content_chunks(first), iter_content_chunks(second))


def array_key_bytes(array: np.ndarray) -> tuple[str, tuple[int, ...], bytes]:
    """A hashable exact identity of a small array (dtype, shape, bytes), for attribute keys."""
    array = np.asarray(array)
    return str(array.dtype), tuple(array.shape), b"".join(_array_chunks(array))


def element_size(constant: gs.Constant) -> int | None:
    """Bytes per element when each element is stored in 1, 2, 4 or 8 whole bytes; else None.

    Sub-byte types (INT4, …) are packed two or more to a byte, strings have no fixed size:
    their elements cannot be addressed one at a time.
    """
    key = content_key(constant)
    if key is None or key[0] in _SUB_BYTE_TYPES or key[0] == onnx.TensorProto.STRING:
        return None
    try:
        size = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(key[0])).itemsize
    except (KeyError, TypeError, ValueError):
        return None
    return size if size in _WORD_SIZES else None


def _mix(words: np.ndarray) -> np.ndarray:
    """splitmix64 of each word, in place (uint64 arithmetic wraps, as intended)."""
    words += _MIX_ADD
    words ^= words >> np.uint64(30)
    words *= _MIX_MUL_1
    words ^= words >> np.uint64(27)
    words *= _MIX_MUL_2
    words ^= words >> np.uint64(31)
    return words


def multiset_digest(constant: gs.Constant) -> str | None:
    """A digest of type, element count and the *multiset* of element bit patterns (streamed).

    Equal for any rearrangement of the same elements (transposes, reshapes, both), so it
    groups candidate twins; like ``content_digest`` it never proves equality. None when
    elements are not whole bytes (``element_size``).
    """
    size = element_size(constant)
    if size is None:
        return None
    cache_key = _external_cache_key(constant)
    if cache_key is not None and ("multiset", *cache_key) in _EXTERNAL_DIGESTS:
        return _EXTERNAL_DIGESTS[("multiset", *cache_key)]
    key = content_key(constant)
    assert key is not None
    word = np.dtype(f"<u{size}")
    total = 0
    carry = b""
    with np.errstate(over="ignore"):
        for chunk in iter_content_chunks(constant):
            data = carry + chunk if carry else chunk
            whole = len(data) - len(data) % size
            carry = bytes(data[whole:])
            words = np.frombuffer(data, dtype=word, count=whole // size).astype(np.uint64)
            total = (total + int(np.sum(_mix(words), dtype=np.uint64))) % (1 << 64)
    digest = hashlib.blake2b(digest_size=20)
    digest.update(repr((key[0], int(np.prod(key[1], dtype=np.int64)))).encode())
    digest.update(total.to_bytes(8, "little"))
    result = digest.hexdigest()
    if cache_key is not None:
        _EXTERNAL_DIGESTS[("multiset", *cache_key)] = result
    return result


class ElementReader:
    """Reads single elements of one constant as bit patterns (little-endian unsigned words).

    External tensors are read through a memory map, touching only the pages asked for; an
    embedded tensor's bytes are taken from its proto once per reader (protobuf copies them
    on every access). Nothing is cached in the graph. Requires ``element_size(constant)``.
    """

    def __init__(self, constant: gs.Constant) -> None:
        size = element_size(constant)
        if size is None:
            raise ValueError(f"{constant.name}: elements are not addressable one at a time")
        self.constant = constant
        self.word = np.dtype(f"<u{size}")
        self._words: np.ndarray | None = None

    def _all_words(self) -> np.ndarray:
        if self._words is None:
            values = self.constant._values
            size = self.word.itemsize
            if isinstance(values, LazyValues):
                proto = values.tensor
                if is_external(proto):
                    offset, length = _external_region(proto, values.path)
                    self._words = np.memmap(values.path, dtype=self.word, mode="r", offset=offset,
                                            shape=(length // size,))
                else:
                    self._words = np.frombuffer(raw_bytes_of_inline(proto), dtype=self.word)
            else:
                array = np.ascontiguousarray(values).reshape(-1)
                if array.dtype.byteorder == ">":
                    array = array.astype(array.dtype.newbyteorder("<"))
                self._words = array.view(self.word)
        return self._words

    def bits(self, flat_indices: np.ndarray | list[int]) -> np.ndarray:
        """The bit patterns of the elements at ``flat_indices`` (C order), as a new array."""
        return np.array(self._all_words()[np.asarray(flat_indices, dtype=np.int64)])

    def close(self) -> None:
        self._words = None  # drops the memory map or the copied bytes
