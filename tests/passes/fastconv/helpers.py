"""Shared helpers of the fastconv tests: models with custom ops, sessions with and without the kernels."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.helper as oh
import onnx.numpy_helper
import onnxruntime as ort
import pytest

from onnxopt import kernels
from onnxopt.kernels import DOMAIN
from onnxopt.passes.fastconv.ops import ConvOp, conv_function

needs_kernels = pytest.mark.skipif(not kernels.available(), reason="onnxopt kernel library not built")


def session(model: onnx.ModelProto | str, with_kernels: bool, threads: int = 2,
            optimize: bool = False) -> ort.InferenceSession:
    """A plain onnxruntime session (not onnxopt.runtime), with or without the library registered."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = threads
    options.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                        else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    if with_kernels:
        options.register_custom_ops_library(kernels.library_path())
    source = model if isinstance(model, str) else model.SerializeToString()
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    expected64 = expected.astype(np.float64)
    return float(np.max(np.abs(actual.astype(np.float64) - expected64)) / np.max(np.abs(expected64)))


def custom_conv_model(algorithm: str, x_shape: list[int], weight: np.ndarray, pads: list[int], *,
                      attrs: dict | None = None, bias: np.ndarray | None = None, residual: bool = False,
                      activation: str = "", group: int = 1, weight_input: bool = False) -> onnx.ModelProto:
    """One custom conv node (with its function) over input ``x`` (and ``r``); weights as initializers."""
    op = ConvOp(algorithm, residual, activation)
    inputs = ["x", "w", "b" if bias is not None else "", *(["r"] if residual else [])]
    node_attrs = {"pads": pads, **({"tile": 4} if algorithm == "winograd" else {"group": group}), **(attrs or {})}
    node = oh.make_node(op.op_type, inputs, ["y"], domain=DOMAIN, **node_attrs)
    dims = weight.ndim - 2
    out_spatial = [x_shape[2 + i] + pads[i] + pads[i + dims] - weight.shape[2 + i] + 1 for i in range(dims)]
    out_shape = [x_shape[0], weight.shape[0], *out_spatial]
    graph_inputs = [oh.make_tensor_value_info("x", onnx.TensorProto.FLOAT, x_shape)]
    if residual:
        graph_inputs.append(oh.make_tensor_value_info("r", onnx.TensorProto.FLOAT, out_shape))
    initializers = [] if weight_input else [onnx.numpy_helper.from_array(weight, "w")]
    if weight_input:
        graph_inputs.append(oh.make_tensor_value_info("w", onnx.TensorProto.FLOAT, list(weight.shape)))
    if bias is not None:
        initializers.append(onnx.numpy_helper.from_array(bias, "b"))
    graph = oh.make_graph([node], "custom", graph_inputs,
                          [oh.make_tensor_value_info("y", onnx.TensorProto.FLOAT, out_shape)], initializers)
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17), oh.make_opsetid(DOMAIN, 1)],
                          functions=[conv_function(op, 17)])
    model.ir_version = 8
    return model


def feeds_for(model: onnx.ModelProto, seed: int = 0, extra: dict | None = None) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feed = {}
    for value in model.graph.input:
        if extra and value.name in extra:
            feed[value.name] = extra[value.name]
            continue
        shape = [d.dim_value for d in value.type.tensor_type.shape.dim]
        feed[value.name] = rng.standard_normal(shape).astype(np.float32)
    return feed
