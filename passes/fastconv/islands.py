"""One-pattern models ("islands") for timing and error measurement, and the custom node of a choice.

An island holds one matched pattern with the node's real shapes and weights: the original standard
nodes, or the custom op (with its function) that would replace them. Timing islands instead of whole
models makes each decision independent of the others and cheap enough to repeat until the noise of a
shared machine averages out.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx.helper as oh
import onnx.numpy_helper

from onnxopt.kernels import DOMAIN
from onnxopt.versioning import minimum_ir_version

from .match import ConvPattern
from .ops import ConvOp, conv_function

# island opset: Clip with input bounds needs 11; Conv and friends are unchanged since.
ISLAND_OPSET = 17


def conv_op_for(pattern: ConvPattern, algorithm: str) -> ConvOp:
    return ConvOp("winograd" if algorithm.startswith("winograd") else "fft", pattern.add is not None,
                  pattern.activation)


def custom_attrs(pattern: ConvPattern, algorithm: str) -> dict:
    """Attributes of the custom node replacing ``pattern`` with ``algorithm``."""
    attrs: dict = {"pads": [int(p) for p in pattern.pads]}
    if algorithm.startswith("winograd"):
        attrs["tile"] = int(algorithm[len("winograd"):])
    else:
        attrs["group"] = int(pattern.group)
    if pattern.activation == "Clip":
        low, high = pattern.clip or (-np.inf, np.inf)
        attrs["clip_min"] = float(low)
        attrs["clip_max"] = float(high)
    return attrs


def _initializers(pattern: ConvPattern) -> list[onnx.TensorProto]:
    bias = pattern.bias if pattern.bias is not None else np.zeros(pattern.weight.shape[0], np.float32)
    return [onnx.numpy_helper.from_array(np.ascontiguousarray(pattern.weight, dtype=np.float32), "w"),
            onnx.numpy_helper.from_array(np.ascontiguousarray(bias, dtype=np.float32), "b")]


def _io(pattern: ConvPattern) -> tuple[list[onnx.ValueInfoProto], list[onnx.ValueInfoProto]]:
    inputs = [oh.make_tensor_value_info("x", onnx.TensorProto.FLOAT, list(pattern.x_shape))]
    if pattern.add is not None:
        inputs.append(oh.make_tensor_value_info("r", onnx.TensorProto.FLOAT, list(pattern.out_shape)))
    return inputs, [oh.make_tensor_value_info("y", onnx.TensorProto.FLOAT, list(pattern.out_shape))]


def _finish(graph: onnx.GraphProto, functions: list[onnx.FunctionProto]) -> onnx.ModelProto:
    imports = [oh.make_opsetid("", ISLAND_OPSET)]
    if functions:
        imports.append(oh.make_opsetid(DOMAIN, 1))
    model = oh.make_model(graph, opset_imports=imports, functions=functions)
    model.ir_version = minimum_ir_version(model)
    return model


def original_island(pattern: ConvPattern) -> onnx.ModelProto:
    """The pattern as standard nodes (explicit pads; same computation as the original)."""
    nodes = [oh.make_node("Conv", ["x", "w", "b"], ["conv"], pads=list(pattern.pads), group=pattern.group)]
    current = "conv"
    if pattern.add is not None:
        nodes.append(oh.make_node("Add", [current, "r"], ["sum"]))
        current = "sum"
    initializers = _initializers(pattern)
    if pattern.activation == "Relu":
        nodes.append(oh.make_node("Relu", [current], ["act"]))
    elif pattern.activation == "Clip":
        low, high = pattern.clip or (-np.inf, np.inf)
        initializers += [onnx.numpy_helper.from_array(np.array(low, np.float32), "low"),
                         onnx.numpy_helper.from_array(np.array(high, np.float32), "high")]
        nodes.append(oh.make_node("Clip", [current, "low", "high"], ["act"]))
    nodes[-1].output[0] = "y"
    inputs, outputs = _io(pattern)
    return _finish(oh.make_graph(nodes, "original", inputs, outputs, initializers), [])


def candidate_island(pattern: ConvPattern, algorithm: str) -> onnx.ModelProto:
    """The pattern as one custom node of ``algorithm`` (winograd2/4/6, fft), with its function."""
    op = conv_op_for(pattern, algorithm)
    inputs = ["x", "w", "b", *(["r"] if pattern.add is not None else [])]
    node = oh.make_node(op.op_type, inputs, ["y"], domain=DOMAIN, **custom_attrs(pattern, algorithm))
    graph_inputs, outputs = _io(pattern)
    graph = oh.make_graph([node], algorithm, graph_inputs, outputs, _initializers(pattern))
    return _finish(graph, [conv_function(op, ISLAND_OPSET)])


def island_feed(pattern: ConvPattern, seed: int = 0) -> dict[str, np.ndarray]:
    """Standard-normal inputs of the island's shapes (activations of a normalised network are about that)."""
    rng = np.random.default_rng(seed)
    feed = {"x": rng.standard_normal(pattern.x_shape).astype(np.float32)}
    if pattern.add is not None:
        feed["r"] = rng.standard_normal(pattern.out_shape).astype(np.float32)
    return feed
