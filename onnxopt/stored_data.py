"""Each stored tensor's data must be exactly as long as its dims and element type say.

A weight whose bytes do not match its dims passes onnx.checker on a weight-stripped copy
(the only copy it can afford to check on a large model) and fails much later: "cannot
reshape array of size 216" inside whichever pass first reads it, or an output file that
onnxruntime refuses. The check here needs no tensor decoded: the length of ``raw_data``,
the entry count of the typed field, or for external data the ``offset``/``length`` entries
and the size of the file on disk. Weights of a model over 2 GB stay where they are.
"""

from __future__ import annotations

from pathlib import Path

import onnx

from onnxopt.element_types import element_type_name, payload_bytes, typed_field, typed_field_entries
from onnxopt.errors import ModelDefect
from onnxopt.external_data import external_info, is_external, resolve_location
from onnxopt.proto_walk import iter_places, iter_stored_tensors

TYPED_FIELDS = ("float_data", "int32_data", "string_data", "int64_data", "double_data", "uint64_data")


def element_count(tensor: onnx.TensorProto) -> int:
    """Number of elements the dims of a tensor declare (1 for a scalar)."""
    count = 1
    for dim in tensor.dims:
        count *= int(dim)
    return count


def _integer_entry(what: str, info: dict[str, str], key: str) -> int | None:
    text = info.get(key)
    if text is None or text == "":
        return None
    try:
        value = int(text)
    except ValueError:
        raise ModelDefect(f"{what}: external data {key} {text[:40]!r} is not an integer") from None
    if value < 0:
        raise ModelDefect(f"{what}: external data {key} {value} is negative")
    return value


def external_region(what: str, tensor: onnx.TensorProto, path: Path) -> tuple[int, int]:
    """(offset, length) of an external tensor's bytes, checked against its dims and the file size.

    Without a ``length`` entry the tensor is as long as its dims say, and the file must
    hold that many bytes after ``offset``.
    """
    info = external_info(tensor)
    offset = _integer_entry(what, info, "offset") or 0
    length = _integer_entry(what, info, "length")
    expected = payload_bytes(tensor.data_type, element_count(tensor))
    if expected is None:
        raise ModelDefect(f"{what}: {element_type_name(tensor.data_type)} tensors cannot be stored as external data")
    if length is not None and length != expected:
        raise ModelDefect(
            f"{what}: external data length is {length} bytes, but dims {list(tensor.dims)} of "
            f"{element_type_name(tensor.data_type)} need {expected}"
        )
    file_size = path.stat().st_size
    if offset + expected > file_size:
        raise ModelDefect(
            f"{what}: external data needs bytes {offset}..{offset + expected} but {path.name} holds {file_size} "
            "(truncated?)"
        )
    return offset, expected


def _check_embedded(what: str, tensor: onnx.TensorProto) -> None:
    count = element_count(tensor)
    code = tensor.data_type
    kind = element_type_name(code)
    used = [name for name in TYPED_FIELDS if len(getattr(tensor, name))]
    if tensor.HasField("raw_data"):
        used.insert(0, "raw_data")
    if len(used) > 1:
        raise ModelDefect(f"{what}: stores its data twice ({' and '.join(used)})")
    if not used:
        if count:
            raise ModelDefect(f"{what}: holds no data for its {count} elements (dims {list(tensor.dims)})")
        return
    field = used[0]
    if field == "raw_data":
        expected = payload_bytes(code, count)
        if expected is None:
            raise ModelDefect(f"{what}: {kind} tensors cannot use raw_data")
        actual = len(tensor.raw_data)
        if actual != expected:
            raise ModelDefect(
                f"{what}: raw_data holds {actual} bytes, but dims {list(tensor.dims)} of {kind} need {expected}"
            )
        return
    if field != typed_field(code):
        raise ModelDefect(f"{what}: stores {kind} elements in {field}, which cannot hold them")
    actual, expected = len(getattr(tensor, field)), typed_field_entries(code, count)
    if actual != expected:
        raise ModelDefect(
            f"{what}: {field} holds {actual} entries, but dims {list(tensor.dims)} of {kind} need {expected}"
        )


def check_stored_tensor(what: str, tensor: onnx.TensorProto, base_dir: Path | None) -> None:
    """Raise ModelDefect when one tensor's stored data does not fit its dims and element type.

    External data is checked against its file when ``base_dir`` (the model's folder) is known.
    """
    if tensor.HasField("segment"):
        raise ModelDefect(f"{what}: is stored in segments, which onnxopt does not read")
    if tensor.data_location not in (onnx.TensorProto.DEFAULT, onnx.TensorProto.EXTERNAL):
        raise ModelDefect(f"{what}: has data_location {tensor.data_location}, which ONNX does not define")
    if not is_external(tensor):
        _check_embedded(what, tensor)
        return
    if base_dir is None:
        return
    name = tensor.name or what
    external_region(what, tensor, resolve_location(base_dir, external_info(tensor).get("location", ""), name))


def check_stored_data(model: onnx.ModelProto, base_dir: Path | None) -> bool:
    """Check every stored tensor in every graph and function; True when any is external."""
    found_external = False
    for place in iter_places(model):
        for what, tensor in iter_stored_tensors(place):
            check_stored_tensor(what, tensor, base_dir)
            found_external = found_external or is_external(tensor)
    return found_external
