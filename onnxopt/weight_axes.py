"""Which axis of a weight tensor is which, for the ops that read weights.

Quantization (per-channel scales), the TensorRT lint and pruning all ask the same question
of a Conv/ConvTranspose/MatMul/Gemm weight: along which axis do its output channels lie?
One rule, here, so they cannot disagree.
"""

from __future__ import annotations

import onnx_graphsurgeon as gs


def weight_axis(node: gs.Node, index: int, rank: int) -> int | None:
    """The output-channel axis of a weight input (None: per tensor)."""
    if rank < 2:
        return None
    if node.op == "Conv" and index == 1:
        return 0
    if node.op == "ConvTranspose" and index == 1:
        return 1
    if node.op == "MatMul" and index == 1:
        return rank - 1
    if node.op == "Gemm" and index == 1:
        return 0 if int(node.attrs.get("transB", 0)) else 1
    return None
