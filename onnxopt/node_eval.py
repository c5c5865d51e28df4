"""Evaluate one ONNX node on constant inputs, the way onnxruntime would at run time.

Constant folding replaces a node by its result, so the result must be bit-identical to
what the runtime computes when it runs the original model. We therefore run the node in
a one-node model under onnxruntime on the CPU with its graph optimizations off (the same
kernels the verification uses), and fall back to onnx's reference evaluator only where
onnxruntime cannot run the node (for instance element types its Python API cannot feed).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import onnx
import onnx.numpy_helper
import onnx.reference
import onnx.shape_inference
import onnxruntime as ort

from onnxopt.graph_edit import numpy_to_onnx_dtype
from onnxopt.runtime import session_options
from onnxopt.versioning import minimum_ir_version

logger = logging.getLogger(__name__)

# Inputs up to this size are embedded when predicting output shapes, so inference can read
# shape-like values (the shape of a ConstantOfShape, the repeats of a Tile).
_INFERENCE_VALUE_BYTES = 64 * 1024


class EvaluationError(Exception):
    """Neither onnxruntime nor the reference evaluator could run the node."""


def _one_node_model(
    node: onnx.NodeProto,
    input_types: dict[str, tuple[int, Sequence[int]]],
    opset_imports: Sequence[onnx.OperatorSetIdProto],
    initializers: Sequence[onnx.TensorProto] = (),
) -> onnx.ModelProto:
    embedded = {tensor.name for tensor in initializers}
    graph_inputs = [
        onnx.helper.make_tensor_value_info(name, elem_type, list(shape))
        for name, (elem_type, shape) in input_types.items()
        if name not in embedded
    ]
    graph_outputs = [onnx.helper.make_empty_tensor_value_info(name) for name in node.output if name]
    graph = onnx.helper.make_graph([node], "fold", graph_inputs, graph_outputs, initializer=list(initializers))
    model = onnx.helper.make_model(graph, opset_imports=list(opset_imports))
    model.ir_version = minimum_ir_version(model)
    return model


def predict_output_shapes(
    node: onnx.NodeProto,
    input_types: dict[str, tuple[int, Sequence[int]]],
    small_values: dict[str, np.ndarray],
    opset_imports: Sequence[onnx.OperatorSetIdProto],
) -> dict[str, tuple[int, tuple[int, ...]]]:
    """Element type and static shape of each output that onnx shape inference can determine.

    Lets a caller refuse a fold that would produce a huge tensor before computing it.
    """
    initializers = [
        onnx.numpy_helper.from_array(value, name)
        for name, value in small_values.items()
        if value.nbytes <= _INFERENCE_VALUE_BYTES and value.dtype.kind not in "OSU"
    ]
    model = _one_node_model(node, input_types, opset_imports, initializers)
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except Exception as error:  # inference refuses some nodes; the caller then evaluates and measures
        logger.debug("no shape prediction for %s: %s", node.op_type, error)
        return {}
    found = {}
    for value in inferred.graph.output:
        tensor_type = value.type.tensor_type
        if not value.type.HasField("tensor_type") or not tensor_type.HasField("shape"):
            continue
        dims = tensor_type.shape.dim
        if all(dim.HasField("dim_value") for dim in dims):
            found[value.name] = (tensor_type.elem_type, tuple(int(dim.dim_value) for dim in dims))
    return found


def evaluate_node(
    node: onnx.NodeProto,
    inputs: dict[str, np.ndarray],
    opset_imports: Sequence[onnx.OperatorSetIdProto],
) -> tuple[list[np.ndarray], str]:
    """Outputs of ``node`` (one per output name, in order; empty names skipped) and the engine used.

    ``inputs`` maps each non-empty input name to its value.
    """
    input_types = {}
    for name, value in inputs.items():
        elem_type = numpy_to_onnx_dtype(value.dtype)
        if elem_type is None:
            raise EvaluationError(f"input {name!r} has an unsupported dtype {value.dtype}")
        input_types[name] = (elem_type, value.shape)
    model = _one_node_model(node, input_types, opset_imports)
    names = [name for name in node.output if name]
    errors = []
    try:
        options = session_options(optimize=False)
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        values = session.run(names, inputs)
        return _check_tensors(values, names), "onnxruntime"
    except Exception as error:  # any onnxruntime failure: try the reference evaluator
        errors.append(f"onnxruntime: {str(error).splitlines()[0] if str(error) else type(error).__name__}")
    try:
        evaluator = onnx.reference.ReferenceEvaluator(model)
        values = evaluator.run(names, inputs)
        return _check_tensors(values, names), "reference"
    except Exception as error:  # the reference evaluator lacks some ops
        errors.append(f"reference: {str(error).splitlines()[0] if str(error) else type(error).__name__}")
    raise EvaluationError("; ".join(errors))


def _check_tensors(values: list, names: list[str]) -> list[np.ndarray]:
    checked = []
    for name, value in zip(names, values, strict=True):
        if isinstance(value, np.generic):
            value = np.asarray(value)
        if not isinstance(value, np.ndarray):
            raise EvaluationError(f"output {name!r} is not a tensor")
        checked.append(value)
    return checked
