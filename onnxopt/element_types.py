"""ONNX element types as stored: which codes are valid, their names, and how many bytes N elements take.

Validation checks a tensor's stored data against its dims without decoding it, and the
random-feed guard sizes inputs before allocating them; both need the storage rules of
``onnx.proto`` (sub-byte types packed, complex types as two floats, 16-bit and 8-bit types
one per ``int32_data`` entry), which live here once.
"""

from __future__ import annotations

import onnx
from onnx import TensorProto

# Every element type this onnx release defines, UNDEFINED (0) excluded.
VALID_ELEMENT_TYPES: frozenset[int] = frozenset(
    value for _name, value in TensorProto.DataType.items() if value != TensorProto.UNDEFINED
)

# Bits one element takes in raw_data (and in external data); STRING has no fixed width.
_PACKED_BITS = {"UINT4": 4, "INT4": 4, "FLOAT4E2M1": 4, "UINT2": 2, "INT2": 2, "FLOAT6E2M3": 6, "FLOAT6E3M2": 6}
_BITS = {
    TensorProto.FLOAT: 32,
    TensorProto.UINT8: 8,
    TensorProto.INT8: 8,
    TensorProto.UINT16: 16,
    TensorProto.INT16: 16,
    TensorProto.INT32: 32,
    TensorProto.INT64: 64,
    TensorProto.BOOL: 8,
    TensorProto.FLOAT16: 16,
    TensorProto.DOUBLE: 64,
    TensorProto.UINT32: 32,
    TensorProto.UINT64: 64,
    TensorProto.COMPLEX64: 64,
    TensorProto.COMPLEX128: 128,
    TensorProto.BFLOAT16: 16,
}
for _name in ("FLOAT8E4M3FN", "FLOAT8E4M3FNUZ", "FLOAT8E5M2", "FLOAT8E5M2FNUZ", "FLOAT8E8M0"):
    if hasattr(TensorProto, _name):
        _BITS[getattr(TensorProto, _name)] = 8
for _name, _bits in _PACKED_BITS.items():
    if hasattr(TensorProto, _name):
        _BITS[getattr(TensorProto, _name)] = _bits

# Elements one entry of the typed field holds (onnx.proto: 4-bit types two per int32, 2-bit four).
_PER_ENTRY = {"UINT4": 2, "INT4": 2, "FLOAT4E2M1": 2, "UINT2": 4, "INT2": 4}
# Entries one element takes in the typed field (complex numbers are two floats or doubles).
_ENTRIES_PER_ELEMENT = {TensorProto.COMPLEX64: 2, TensorProto.COMPLEX128: 2}


def is_valid_element_type(code: int) -> bool:
    """True for an element type this onnx release defines (UNDEFINED is not one)."""
    return code in VALID_ELEMENT_TYPES


def element_type_name(code: int) -> str:
    """``FLOAT``, ``INT64``…, or ``type 99`` for a code no release defines."""
    try:
        return TensorProto.DataType.Name(code)
    except ValueError:
        return f"type {code}"


def element_bits(code: int) -> int | None:
    """Bits per element as stored in raw data; None for STRING and unknown codes."""
    return _BITS.get(code)


def payload_bytes(code: int, count: int) -> int | None:
    """Bytes that ``count`` elements take in raw or external data (packed types rounded up)."""
    bits = element_bits(code)
    if bits is None:
        return None
    return (count * bits + 7) // 8


def typed_field(code: int) -> str | None:
    """The ``*_data`` field of TensorProto that may hold this element type, if any."""
    try:
        return onnx.helper.tensor_dtype_to_field(code)
    except (KeyError, ValueError, TypeError):
        return None


def typed_field_entries(code: int, count: int) -> int:
    """How many entries of the typed field ``count`` elements take."""
    name = element_type_name(code)
    per_entry = _PER_ENTRY.get(name, 1)
    return (count + per_entry - 1) // per_entry * _ENTRIES_PER_ELEMENT.get(code, 1)
