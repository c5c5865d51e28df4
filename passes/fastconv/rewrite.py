"""Rewrite: replace a matched pattern by its custom node, adding the op's function to the model once."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from onnxopt.graph_edit import fresh_name, remove_nodes
from onnxopt.model_io import Model

from .islands import conv_op_for, custom_attrs
from .match import ConvPattern
from .ops import conv_function, ensure_function, make_node


def replace_pattern(model: Model, pattern: ConvPattern, algorithm: str, taken: set[str]) -> gs.Node:
    """Swap the pattern's nodes for one ``com.onnxopt`` node computing the same output tensor."""
    op = conv_op_for(pattern, algorithm)
    ensure_function(model, conv_function(op, model.opset))
    base = pattern.conv.name or pattern.output.name
    weight = pattern.conv.inputs[1]
    if not isinstance(weight, gs.Constant):  # e.g. the output of a Constant node: an initializer for the kernel
        weight = gs.Constant(fresh_name(f"{base}_fastconv_w", taken), np.ascontiguousarray(pattern.weight))
    bias = pattern.conv.inputs[2] if len(pattern.conv.inputs) > 2 and pattern.conv.inputs[2].name else None
    if not isinstance(bias, gs.Constant):
        value = pattern.bias if pattern.bias is not None else np.zeros(pattern.weight.shape[0], np.float32)
        bias = gs.Constant(fresh_name(f"{base}_fastconv_b", taken), np.ascontiguousarray(value, dtype=np.float32))
    inputs = [pattern.conv.inputs[0], weight, bias]
    if pattern.residual is not None:
        inputs.append(pattern.residual)
    output = pattern.output
    doomed = pattern.nodes
    for node in doomed:
        node.outputs.clear()
        node.inputs.clear()
    name = fresh_name(f"{base}_{algorithm}", taken)
    node = make_node(op.op_type, inputs, output, name, custom_attrs(pattern, algorithm))
    model.graph.nodes.append(node)
    remove_nodes(model.graph, doomed)
    return node
