"""The lowest IR version a model can be written with.

onnx writes its newest IR version by default (IR 14 with onnx 1.23), which older runtimes
refuse (onnxruntime 1.31 stops at IR 13). We write the lowest IR that the model's opsets
and the features it uses require, so every runtime that supports its ops can load it.
"""

from __future__ import annotations

from collections.abc import Iterable

import onnx
from onnx import TensorProto

# Column of onnx.helper.VERSION_TABLE holding each domain's opset version.
_DOMAIN_COLUMN = {"": 2, "ai.onnx": 2, "ai.onnx.ml": 3, "ai.onnx.training": 4}

# Element types and the first IR version that defines them.
_DTYPE_MIN_IR = {
    TensorProto.BFLOAT16: 4,
    TensorProto.FLOAT8E4M3FN: 9,
    TensorProto.FLOAT8E4M3FNUZ: 9,
    TensorProto.FLOAT8E5M2: 9,
    TensorProto.FLOAT8E5M2FNUZ: 9,
    TensorProto.UINT4: 10,
    TensorProto.INT4: 10,
}
for _name, _ir in (("FLOAT4E2M1", 11), ("FLOAT8E8M0", 12), ("UINT2", 13), ("INT2", 13)):
    if hasattr(TensorProto, _name):
        _DTYPE_MIN_IR[getattr(TensorProto, _name)] = _ir

IR_WITH_FUNCTIONS = 8
IR_INITIALIZERS_NOT_INPUTS = 4


def ir_for_opset(domain: str, version: int) -> int:
    """Lowest IR version released together with (or after) ``domain`` at ``version``."""
    column = _DOMAIN_COLUMN.get(domain)
    if column is None:
        return 3
    for row in onnx.helper.VERSION_TABLE:
        if len(row) > column and row[column] >= version:
            return int(row[1])
    return int(onnx.helper.VERSION_TABLE[-1][1])


def _graph_dtypes(graph: onnx.GraphProto) -> Iterable[int]:
    for tensor in graph.initializer:
        yield tensor.data_type
    for info in list(graph.input) + list(graph.output) + list(graph.value_info):
        if info.type.HasField("tensor_type"):
            yield info.type.tensor_type.elem_type
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR:
                yield attr.t.data_type
            elif attr.type == onnx.AttributeProto.INT and attr.name in ("to", "output_datatype", "dtype"):
                yield attr.i
            elif attr.type == onnx.AttributeProto.GRAPH:
                yield from _graph_dtypes(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    yield from _graph_dtypes(sub)


def minimum_ir_version(model: onnx.ModelProto) -> int:
    """The lowest IR version that can represent ``model``."""
    needed = 3
    for opset in model.opset_import:
        needed = max(needed, ir_for_opset(opset.domain, opset.version))
    if len(model.functions):
        needed = max(needed, IR_WITH_FUNCTIONS)
    input_names = {value.name for value in model.graph.input}
    if any(init.name not in input_names for init in model.graph.initializer):
        needed = max(needed, IR_INITIALIZERS_NOT_INPUTS)
    for dtype in _graph_dtypes(model.graph):
        needed = max(needed, _DTYPE_MIN_IR.get(dtype, 3))
    for function in model.functions:
        for node in function.node:
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.TENSOR:
                    needed = max(needed, _DTYPE_MIN_IR.get(attr.t.data_type, 3))
    return needed
