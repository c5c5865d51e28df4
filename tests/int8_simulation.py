"""Run a model's integer matmuls through the numpy model of the saturating u8×s8 kernel.

For every node onnxruntime runs as an integer matmul (``onnxopt.int8_kernels``), the
integer activations it really receives on a feed are captured (its quantized input exposed
as an extra output) and multiplied with its stored int8 weights twice: exactly, and the way
a CPU without VNNI does (adjacent pairs summed in saturating int16). Equal results mean
that node computes the same on every CPU for that input; the static bound
(``worst_pair_sum``) proves it for every input.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from onnxopt.int8_kernels import Int8Kernel, exact_int_matmul, find_int8_kernels, int16_pair_matmul
from onnxopt.model_io import Model
from onnxopt.runtime import create_session, run_session


@dataclass
class NodeCheck:
    kernel: Int8Kernel
    rows: int
    saturated_values: int  # outputs where the saturating kernel differs from the exact product


def _conv_columns(x: np.ndarray, weight_shape: tuple[int, ...], node: gs.Node, pad_value: int) -> list[np.ndarray]:
    """im2col of a 2-D convolution's integer input, one [rows, Cin/g·kh·kw] matrix per group."""
    group = int(node.attrs.get("group", 1))
    kh, kw = weight_shape[2:]
    strides = list(node.attrs.get("strides", [1, 1]))
    dilations = list(node.attrs.get("dilations", [1, 1]))
    pads = list(node.attrs.get("pads", [0, 0, 0, 0]))
    padded = np.pad(x.astype(np.int64), ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])),
                    constant_values=pad_value)
    n, channels, height, width = padded.shape
    out_h = (height - dilations[0] * (kh - 1) - 1) // strides[0] + 1
    out_w = (width - dilations[1] * (kw - 1) - 1) // strides[1] + 1
    patches = np.empty((n, channels, kh, kw, out_h, out_w), dtype=np.int64)
    for i in range(kh):
        for j in range(kw):
            rows = slice(i * dilations[0], i * dilations[0] + strides[0] * out_h, strides[0])
            cols = slice(j * dilations[1], j * dilations[1] + strides[1] * out_w, strides[1])
            patches[:, :, i, j] = padded[:, :, rows, cols]
    per_group = channels // group
    result = []
    for g in range(group):
        block = patches[:, g * per_group : (g + 1) * per_group]
        result.append(block.transpose(0, 4, 5, 1, 2, 3).reshape(n * out_h * out_w, -1))
    return result


def _operands(kernel: Int8Kernel, node: gs.Node, activation: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """(integer activations [rows, K], integer weights [K, N]) pairs as the kernel multiplies them."""
    weights = np.asarray(kernel.weights)
    if kernel.op in ("Conv", "ConvInteger", "QLinearConv"):
        group = int(node.attrs.get("group", 1))
        pad_value = 0 if kernel.activation_signed else 128  # any value in range shows the same bound
        columns = _conv_columns(activation, weights.shape, node, pad_value)
        per_group = weights.shape[0] // group
        return [(cols, weights[g * per_group : (g + 1) * per_group].reshape(per_group, -1).T)
                for g, cols in enumerate(columns)]
    if kernel.op in ("Gemm", "QGemm") and int(node.attrs.get("transB", 0)):
        weights = weights.T
    return [(activation.reshape(-1, activation.shape[-1]), weights)]


def check_integer_nodes(model: Model, feeds: list[dict[str, np.ndarray]]) -> list[NodeCheck]:
    """Every integer matmul of ``model`` on ``feeds``: how many outputs a saturating CPU gets wrong."""
    kernels = [k for k in find_int8_kernels(model) if k.weights is not None and k.activation_tensor]
    probe = model.copy()
    tensors = probe.graph.tensors()
    for kernel in kernels:
        tensor = tensors[kernel.activation_tensor]
        tensor.dtype = np.int8 if kernel.activation_signed else np.uint8
        if tensor not in probe.graph.outputs:
            probe.graph.outputs.append(tensor)
    session = create_session(probe)
    nodes = {node.name: node for node in model.graph.nodes}
    checks = {kernel.node: NodeCheck(kernel, 0, 0) for kernel in kernels}
    for feed in feeds:
        values = run_session(session, feed)
        for kernel in kernels:
            check = checks[kernel.node]
            for a, b in _operands(kernel, nodes[kernel.node], values[kernel.activation_tensor]):
                check.rows += a.shape[0]
                check.saturated_values += int(np.count_nonzero(int16_pair_matmul(a, b) != exact_int_matmul(a, b)))
    return list(checks.values())
