"""Element types and shapes of every tensor, from onnx shape inference on a weight-free copy.

Rewrites such as "this Reshape is a no-op" or "this MatMul input has rank 2" need shapes
that graph-surgeon only knows where the file carried value_info. We export the model,
replace large weights by external references (inference reads only their dims), and run
onnx's shape inference once per pass. Names are unique across scopes in a valid model;
when a name still appears with conflicting information, we forget it rather than guess.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import onnx
import onnx.shape_inference
import onnx_graphsurgeon as gs

from onnxopt.graph_edit import constant_shape, tensor_onnx_dtype
from onnxopt.model_io import Model, checkable_proto
from onnxopt.onnx_check import strip_payloads_in_place

logger = logging.getLogger(__name__)

Dim = int | str | None


@dataclass(frozen=True)
class TensorInfo:
    """Element type (onnx enum, 0 when unknown) and shape (None when the rank is unknown)."""

    elem_type: int
    shape: tuple[Dim, ...] | None

    @property
    def rank(self) -> int | None:
        return None if self.shape is None else len(self.shape)

    @property
    def static_shape(self) -> tuple[int, ...] | None:
        """The shape when every dimension is a known integer."""
        if self.shape is None or any(not isinstance(dim, int) for dim in self.shape):
            return None
        return tuple(int(dim) for dim in self.shape)  # type: ignore[arg-type]


def _info_from_type(value_type: onnx.TypeProto) -> TensorInfo | None:
    if not value_type.HasField("tensor_type"):
        return None
    tensor_type = value_type.tensor_type
    if not tensor_type.HasField("shape"):
        return TensorInfo(tensor_type.elem_type, None)
    dims: list[Dim] = []
    for dim in tensor_type.shape.dim:
        if dim.HasField("dim_value"):
            dims.append(int(dim.dim_value))
        elif dim.HasField("dim_param") and dim.dim_param:
            dims.append(dim.dim_param)
        else:
            dims.append(None)
    return TensorInfo(tensor_type.elem_type, tuple(dims))


def _collect(graph: onnx.GraphProto, found: dict[str, TensorInfo | None]) -> None:
    def record(name: str, info: TensorInfo | None) -> None:
        if info is None or not name:
            return
        if name in found and found[name] != info:
            found[name] = None  # conflicting facts about one name: trust neither
        else:
            found.setdefault(name, info)

    for value in [*graph.input, *graph.output, *graph.value_info]:
        record(value.name, _info_from_type(value.type))
    for tensor in graph.initializer:
        record(tensor.name, TensorInfo(tensor.data_type, tuple(int(d) for d in tensor.dims)))
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                _collect(attr.g, found)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    _collect(sub, found)


def infer_tensor_infos(model: Model) -> dict[str, TensorInfo]:
    """Type and shape of each tensor name in the main graph and its subgraphs (not functions).

    Returns an empty dict when shape inference fails, so callers simply see "unknown".
    """
    proto = checkable_proto(model)  # large weights as references already: no copy of them is made
    strip_payloads_in_place(proto)
    try:
        inferred = onnx.shape_inference.infer_shapes(proto, check_type=False, strict_mode=False, data_prop=True)
    except Exception as error:  # inference rejects some valid-but-unusual models; shapes are then unknown
        logger.debug("shape inference failed: %s", error)
        inferred = proto
    found: dict[str, TensorInfo | None] = {}
    _collect(inferred.graph, found)
    return {name: info for name, info in found.items() if info is not None}


def known_shape(tensor: gs.Tensor, infos: dict[str, TensorInfo]) -> tuple[Dim, ...] | None:
    """A tensor's shape from its constant value, inferred infos, or its declared shape."""
    shape = constant_shape(tensor)
    if shape is not None:
        return shape
    info = infos.get(tensor.name)
    if info is not None and info.shape is not None:
        return info.shape
    declared = getattr(tensor, "shape", None)
    return tuple(declared) if declared is not None else None


def known_elem_type(tensor: gs.Tensor, infos: dict[str, TensorInfo]) -> int | None:
    """A tensor's ONNX element type from its value, inferred infos, or its declared dtype."""
    dtype = tensor_onnx_dtype(tensor)
    if dtype:
        return dtype
    info = infos.get(tensor.name)
    return info.elem_type if info is not None and info.elem_type else None
