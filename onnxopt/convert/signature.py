"""Input signatures: ``--input name:dtype:shape`` for sources that do not carry their own.

A PyTorch ``.pt2`` and a SavedModel know their inputs; a pickled scikit-learn estimator
knows only its feature count, and a user may want another dtype or a symbolic batch
axis. One parser turns ``x:float32:batch,3,224,224`` (a dim is an integer or a name;
``?`` is an anonymous dynamic dim) into the same ``InputSpec`` that ``onnxopt.data``
already uses for random feeds, so converters, agreement checks and the optimizer share
one description of a model's inputs.
"""

from __future__ import annotations

import re

import numpy as np

from onnxopt.data import InputSpec
from onnxopt.errors import BadInputError

# Names a user may write for a dtype, mapped to numpy (ONNX names and numpy names both work).
DTYPES: dict[str, np.dtype] = {
    name: np.dtype(dtype)
    for names, dtype in (
        (("float32", "float", "f32"), np.float32),
        (("float64", "double", "f64"), np.float64),
        (("float16", "half", "f16"), np.float16),
        (("int64", "i64", "long"), np.int64),
        (("int32", "i32", "int"), np.int32),
        (("int16", "i16"), np.int16),
        (("int8", "i8"), np.int8),
        (("uint8", "u8"), np.uint8),
        (("bool",), np.bool_),
    )
    for name in names
}
_DIM_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def parse_dim(text: str, where: str) -> int | str | None:
    """One dimension: a non-negative integer, a symbolic name, or ``?`` (dynamic, unnamed)."""
    text = text.strip()
    if text in ("?", "-1"):
        return None
    if text.isdigit():
        return int(text)
    if _DIM_NAME.match(text):
        return text
    raise BadInputError(f"{where}: dimension {text!r} is neither an integer, a name nor '?'")


def parse_input_option(item: str) -> InputSpec:
    """``name:dtype:shape`` → InputSpec; shape is comma-separated dims, ``[]`` or empty for a scalar."""
    parts = item.split(":")
    if len(parts) != 3 or not parts[0]:
        raise BadInputError(f"--input expects name:dtype:shape (e.g. x:float32:batch,3,224,224), got {item!r}")
    name, dtype_text, shape_text = parts
    dtype = DTYPES.get(dtype_text.strip().lower())
    if dtype is None:
        raise BadInputError(f"--input {item!r}: unknown dtype {dtype_text!r} (choose from {', '.join(sorted(DTYPES))})")
    shape_text = shape_text.strip().strip("[]()").strip()
    shape = tuple(parse_dim(dim, f"--input {item!r}") for dim in shape_text.split(",")) if shape_text else ()
    return InputSpec(name=name, dtype=dtype, shape=shape)


def parse_input_options(items: list[str] | tuple[str, ...]) -> list[InputSpec]:
    """Every ``--input`` option, names unique."""
    specs = [parse_input_option(item) for item in items]
    names = [spec.name for spec in specs]
    duplicated = sorted({name for name in names if names.count(name) > 1})
    if duplicated:
        raise BadInputError(f"--input given twice for {', '.join(duplicated)}")
    return specs


def format_spec(spec: InputSpec) -> str:
    """The ``name:dtype:shape`` text of a spec (``?`` for unnamed dynamic dims)."""
    dims = ",".join("?" if dim is None else str(dim) for dim in spec.shape)
    return f"{spec.name}:{spec.dtype.name}:{dims}"


def merge_specs(
    found: list[InputSpec], given: list[InputSpec], source: str, renamable: bool = False
) -> list[InputSpec]:
    """The source's own signature, with ``--input`` overriding it input by input (by name).

    ``renamable``: the source's input names are ours, not the model's (a scikit-learn
    feature matrix), so a single ``--input`` replaces the single input, name included.
    """
    if not given:
        return found
    if renamable and len(found) == len(given) == 1:
        return given
    known = {spec.name for spec in found}
    if found:
        unknown = [spec.name for spec in given if spec.name not in known]
        if unknown:
            raise BadInputError(
                f"--input names {', '.join(unknown)}, but {source} has inputs {', '.join(sorted(known))}"
            )
        overrides = {spec.name: spec for spec in given}
        return [overrides.get(spec.name, spec) for spec in found]
    return given
