"""Every name and string in a model must be UTF-8, or the model is damaged.

onnx.proto declares names, op types and domains as protobuf ``string``s, which must be
UTF-8. The upb protobuf runtime does not reject invalid bytes when parsing: it hands them
back as ``bytes`` instead of ``str``, and the first code that formats, compares or passes
such a name to onnx's C++ checker fails far from the cause (a ``UnicodeDecodeError`` from
the checker, a ``TypeError`` in a pass). Walking every string field once, before anything
else reads the model, turns that into one message naming the field. Attribute strings and
string tensors are ``bytes`` by declaration but UTF-8 by the spec, and graph-surgeon
decodes them on import, so they are checked too. Large numeric payloads are never touched.
"""

from __future__ import annotations

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from onnx import AttributeProto, TensorProto

from onnxopt.errors import ModelDefect

_SKIPPED_TENSOR_FIELDS = frozenset(
    {"raw_data", "float_data", "int32_data", "int64_data", "double_data", "uint64_data", "string_data"}
)


def _is_repeated(field: FieldDescriptor) -> bool:
    # protobuf >= 5.28 has ``is_repeated``; 7.x removed ``label``.
    repeated = getattr(field, "is_repeated", None)
    return bool(repeated) if repeated is not None else field.label == FieldDescriptor.LABEL_REPEATED


def _shown(value: bytes) -> str:
    return repr(value[:40]) + ("…" if len(value) > 40 else "")


def _check_utf8(value: bytes, where: str) -> None:
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        raise ModelDefect(f"{where} is not valid UTF-8 ({_shown(value)}); the file is damaged") from None


def _fields(message: Message) -> list[tuple[FieldDescriptor, object]]:
    if isinstance(message, TensorProto):
        # Never list raw_data and the typed fields: reading raw_data copies the whole payload.
        names = [field for field in message.DESCRIPTOR.fields if field.name not in _SKIPPED_TENSOR_FIELDS]
        present = []
        for field in names:
            if _is_repeated(field):
                value = getattr(message, field.name)
                if len(value):
                    present.append((field, value))
            elif message.HasField(field.name):
                present.append((field, getattr(message, field.name)))
        return present
    return message.ListFields()


def check_text(message: Message, where: str = "model") -> None:
    """Raise ModelDefect naming the first string field of ``message`` (recursively) that is not UTF-8."""
    for field, value in _fields(message):
        values = value if _is_repeated(field) else [value]
        here = f"{where}.{field.name}"
        if field.type == FieldDescriptor.TYPE_STRING:
            for item in values:
                if isinstance(item, bytes):  # upb's way of returning a string that is not UTF-8
                    raise ModelDefect(f"{here} is not valid UTF-8 ({_shown(item)}); the file is damaged")
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            for position, item in enumerate(values):
                label = _message_label(item, here, position if _is_repeated(field) else None)
                check_text(item, label)
        elif field.type == FieldDescriptor.TYPE_BYTES and isinstance(message, AttributeProto):
            for item in values:
                _check_utf8(item, here)
    if isinstance(message, TensorProto) and message.data_type == TensorProto.STRING:
        for item in message.string_data:
            _check_utf8(item, f"{where}.string_data")


def _message_label(item: Message, here: str, position: int | None) -> str:
    name = getattr(item, "name", None) if item.DESCRIPTOR.fields_by_name.get("name") else None
    if isinstance(name, str) and name:
        return f"{here}[{name!r}]"
    return f"{here}[{position}]" if position is not None else here
