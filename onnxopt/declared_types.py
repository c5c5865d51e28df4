"""Element types and dimensions a model declares must be ones a real tensor can have.

An element type code that ONNX does not define, a negative dimension, or a shape whose
bytes no machine can address are defects of the file, not facts to optimize around: onnx's
shape inference stops on some of them with a message about a node far away, others pass
every check and surface later as an allocation of terabytes (random feeds, calibration
buffers) or a reshape of the wrong size inside a pass. This module names the declaration
at fault: graph inputs, outputs and value_info in every graph and function, and the type
and dims of every stored tensor.

"No real tensor" means more than ``MAX_TENSOR_BYTES``: 2^48 bytes (256 TiB) is the whole
virtual address space of a process on x86-64 with 4-level paging and on ARM64 with 48-bit
addresses, the configurations onnxruntime's CPU builds run on. Dimensions of 0 are real
(empty tensors) and symbolic dimensions are left to ``--shape``.

A 1-D tensor that gives a node its output's shape (Expand, Reshape, ConstantOfShape) or
axes (Squeeze, Unsqueeze) makes that output's rank its length. Declared with 2^31
elements, it passes the byte limit, and onnx's own shape inference then builds a shape of
2^31 dimensions and exhausts the machine's memory; no tensor has more than ``MAX_RANK``
dimensions (numpy stops at 64), so such a declaration is refused first.
"""

from __future__ import annotations

import onnx

from onnxopt.element_types import element_bits, element_type_name, is_valid_element_type
from onnxopt.errors import ModelDefect
from onnxopt.proto_walk import Place, iter_places, iter_stored_tensors, iter_value_infos, node_label
from onnxopt.report import human_bytes

MAX_TENSOR_BYTES = 2**48
MAX_RANK = 1024
# Default-domain ops whose output rank onnx's shape inference takes from the length of one input.
_RANK_FROM_LENGTH = {"Expand": 1, "Reshape": 1, "ConstantOfShape": 0, "Unsqueeze": 1, "Squeeze": 1}


def tensor_bytes_bound(element_type: int, dims: list[int]) -> int:
    """Bytes a tensor of these known dims takes (8 bits per element for STRING and unknown types)."""
    count = 1
    for dim in dims:
        count *= dim
    return (count * (element_bits(element_type) or 8) + 7) // 8


def _check_dims(what: str, element_type: int, dims: list[int | None]) -> None:
    for axis, dim in enumerate(dims):
        if dim is not None and dim < 0:
            raise ModelDefect(f"{what} has dimension {axis} = {dim}; dimensions cannot be negative")
    known = [dim for dim in dims if dim is not None]
    size = tensor_bytes_bound(element_type, known)
    if size > MAX_TENSOR_BYTES:
        raise ModelDefect(
            f"{what} declares shape {list(dims)} of {element_type_name(element_type)}: {human_bytes(size)}, "
            f"more than any machine can address ({human_bytes(MAX_TENSOR_BYTES)})"
        )


def _check_element_type(what: str, code: int, allow_undefined: bool) -> None:
    if code == onnx.TensorProto.UNDEFINED and allow_undefined:
        return
    if not is_valid_element_type(code):
        defined = "has no element type" if code == 0 else f"has element type {code}, which ONNX does not define"
        raise ModelDefect(f"{what} {defined}")


def check_type(what: str, value_type: onnx.TypeProto) -> None:
    """Raise ModelDefect when a declared type (tensor, sequence, map, optional) is impossible."""
    kind = value_type.WhichOneof("value")
    if kind in ("tensor_type", "sparse_tensor_type"):
        tensor_type = getattr(value_type, kind)
        _check_element_type(what, tensor_type.elem_type, allow_undefined=True)
        if tensor_type.HasField("shape"):
            dims = [dim.dim_value if dim.HasField("dim_value") else None for dim in tensor_type.shape.dim]
            _check_dims(what, tensor_type.elem_type, dims)
    elif kind == "sequence_type":
        check_type(f"{what} (sequence element)", value_type.sequence_type.elem_type)
    elif kind == "optional_type":
        check_type(f"{what} (optional element)", value_type.optional_type.elem_type)
    elif kind == "map_type":
        _check_element_type(f"{what} (map key)", value_type.map_type.key_type, allow_undefined=False)
        check_type(f"{what} (map value)", value_type.map_type.value_type)


def check_stored_tensor_type(what: str, tensor: onnx.TensorProto) -> None:
    """A stored tensor needs a defined element type and dims that fit in memory."""
    _check_element_type(what, tensor.data_type, allow_undefined=False)
    _check_dims(what, tensor.data_type, list(tensor.dims))


def _check_place(place: Place) -> None:
    for role, value in iter_value_infos(place):
        check_type(place.label(f"{role} {value.name!r}"), value.type)
    for what, tensor in iter_stored_tensors(place):
        check_stored_tensor_type(what, tensor)


def _declared_lengths(model: onnx.ModelProto) -> dict[str, int]:
    """Declared static length of every 1-D value (graph inputs, outputs, value_info), by name."""
    lengths = {}
    for place in iter_places(model):
        for _role, value in iter_value_infos(place):
            shape = value.type.tensor_type.shape if value.type.HasField("tensor_type") else None
            if shape is not None and len(shape.dim) == 1 and shape.dim[0].HasField("dim_value"):
                lengths[value.name] = int(shape.dim[0].dim_value)
    return lengths


def _check_rank_inputs(model: onnx.ModelProto) -> None:
    lengths = _declared_lengths(model)
    for place in iter_places(model):
        for index, node in enumerate(place.body.node):
            position = _RANK_FROM_LENGTH.get(node.op_type) if node.domain in ("", "ai.onnx") else None
            if position is None or len(node.input) <= position:
                continue
            name = node.input[position]
            if lengths.get(name, 0) > MAX_RANK:
                raise ModelDefect(place.label(
                    f"{name!r} is declared with {lengths[name]} elements and gives node {node_label(node, index)} "
                    f"({node.op_type}) its output's rank; no tensor has more than {MAX_RANK} dimensions"))


def check_declared_types(model: onnx.ModelProto) -> None:
    """Raise ModelDefect naming the first impossible element type or shape anywhere in ``model``."""
    for place in iter_places(model):
        _check_place(place)
    _check_rank_inputs(model)
