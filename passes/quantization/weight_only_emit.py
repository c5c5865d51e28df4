"""The rewrite half of the weight-only pass: quantized weights into graph nodes.

Three forms, all storing sub-byte codes packed:

* ``dq`` (standard ONNX, any runtime with opset 21): the weight becomes
  ``DequantizeLinear(codes INT4/UINT4 [or INT2 at opset 25], scale[, zero point])`` with
  ``block_size`` for blockwise int4 or a per-channel ``axis`` for binary/ternary, feeding the
  original nodes unchanged. onnxruntime with its graph optimizations on fuses
  DequantizeLinear→MatMul into its 4-bit kernel by itself.
* ``matmulnbits`` (onnxruntime's ``com.microsoft`` contrib op): MatMul/Gemm become
  ``MatMulNBits`` (4 bits for int4, 2 bits for binary/ternary); no opset upgrade needed.
  Gemm's ``alpha`` is folded into the scales and ``beta·C`` becomes the op's bias.
* ``gather-block``: embedding Gathers become ``GatherBlockQuantized`` (uint8 data with
  two 4-bit codes per byte), which gathers rows without dequantizing the whole table.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from onnxopt.bit_packing import pack_last_axis, sub_byte_constant
from onnxopt.model_io import read_constant
from onnxopt.passes.quantization.common import NameScope
from onnxopt.passes.quantization.lowbit import QuantizedMatrix
from onnxopt.passes.quantization.packing import matmulnbits_weight, matmulnbits_zero_points, packed_table
from onnxopt.passes.quantization.weight_only_plan import WeightPlan

CONTRIB_DOMAIN = "com.microsoft"
# Opset that introduced each DequantizeLinear storage width (block_size and INT4 came in 21, INT2 in 25).
DQ_OPSET_FOR_BITS = {4: 21, 2: 25}


def stored_bytes(constants: list[gs.Constant]) -> int:
    """Bytes the constants take in the file (sub-byte tensors counted packed)."""
    total = 0
    for constant in constants:
        values = constant._values
        tensor = getattr(values, "tensor", None)
        if tensor is not None and tensor.HasField("raw_data"):
            total += len(tensor.raw_data)
        else:
            total += int(np.asarray(read_constant(constant)).nbytes)
    return total


def _replace_node(graph: gs.Graph, old: gs.Node, op: str, name: str, attrs: dict, inputs: list[gs.Tensor]) -> None:
    """Put a ``com.microsoft`` node where ``old`` was, producing the same output tensors."""
    outputs = list(old.outputs)
    old.inputs.clear()
    old.outputs.clear()
    new = gs.Node(op, name, attrs=attrs, inputs=inputs, outputs=outputs, domain=CONTRIB_DOMAIN)
    graph.nodes[graph.nodes.index(old)] = new


def emit_dq(graph: gs.Graph, names: NameScope, plan: WeightPlan, quantized: QuantizedMatrix,
            block_size: int, storage_bits: int) -> list[gs.Constant]:
    """Replace the weight by a DequantizeLinear of its packed codes; returns the new constants."""
    weight = plan.constant
    dtype = np.dtype(weight.dtype)
    view = plan.view
    base = weight.name
    codes = sub_byte_constant(names.fresh(f"{base}_q{storage_bits}"), view.from_kn(quantized.codes),
                              storage_bits, quantized.signed)
    scale = gs.Constant(names.fresh(f"{base}_scale"), view.group_params(quantized.scales).astype(dtype))
    inputs: list[gs.Tensor] = [codes, scale]
    if quantized.zero_points is not None:
        inputs.append(sub_byte_constant(names.fresh(f"{base}_zero_point"), view.group_params(quantized.zero_points),
                                        storage_bits, quantized.signed))
    attrs = {"axis": view.reduce_axis, "block_size": block_size} if view.blocked else {"axis": view.output_axis}
    restored = gs.Variable(names.fresh(f"{base}_dequantized"), dtype=dtype, shape=list(view.shape))
    node = gs.Node("DequantizeLinear", names.fresh(f"{base}_DequantizeLinear"), attrs=attrs,
                   inputs=inputs, outputs=[restored])
    graph.nodes.append(node)
    for use in plan.uses:
        use.node.inputs[use.slot] = restored
    return [tensor for tensor in inputs if isinstance(tensor, gs.Constant)]


def _mnb_scales(quantized: QuantizedMatrix, k_rows: int, block_size: int) -> np.ndarray:
    """``[N, blocks]`` scales; a per-channel group is repeated over the kernel's blocks."""
    blocks = -(-k_rows // block_size)
    scales = quantized.scales
    if scales.shape[0] != blocks:
        scales = np.repeat(scales[:1], blocks, axis=0)
    return np.ascontiguousarray(scales.T)


def _gemm_bias(node: gs.Node, n_cols: int, dtype: np.dtype) -> np.ndarray | None:
    if len(node.inputs) <= 2 or not node.inputs[2].name:
        return None
    beta = float(node.attrs.get("beta", 1.0))
    bias = np.asarray(read_constant(node.inputs[2]), dtype=np.float64).reshape(-1)
    return (np.broadcast_to(bias, (n_cols,)) * beta).astype(dtype)


def emit_matmulnbits(graph: gs.Graph, names: NameScope, plan: WeightPlan, quantized: QuantizedMatrix,
                     block_size: int, bits: int, accuracy_level: int) -> list[gs.Constant]:
    """Replace each MatMul/Gemm reading the weight by a MatMulNBits; returns the new constants."""
    weight = plan.constant
    dtype = np.dtype(weight.dtype)
    k_rows, n_cols = plan.view.k, plan.view.n
    base = weight.name
    offset = (1 << (bits - 1)) if quantized.signed else 0
    packed = gs.Constant(names.fresh(f"{base}_q{bits}"), matmulnbits_weight(quantized.codes, bits, block_size, offset))
    scales = _mnb_scales(quantized, k_rows, block_size)
    shared_scale = gs.Constant(names.fresh(f"{base}_scale"), scales.reshape(-1).astype(dtype))
    zero_point: gs.Tensor = gs.Variable.empty()
    created = [packed, shared_scale]
    if quantized.zero_points is not None:
        zero_point = gs.Constant(names.fresh(f"{base}_zero_point"),
                                 matmulnbits_zero_points(quantized.zero_points.astype(np.uint8), bits))
        created.append(zero_point)
    attrs = {"K": k_rows, "N": n_cols, "bits": bits, "block_size": block_size, "accuracy_level": accuracy_level}
    for use in plan.uses:
        node = use.node
        scale: gs.Tensor = shared_scale
        alpha = float(node.attrs.get("alpha", 1.0)) if node.op == "Gemm" else 1.0
        if alpha != 1.0:
            scale = gs.Constant(names.fresh(f"{base}_scale_alpha"), (scales.reshape(-1) * alpha).astype(dtype))
            created.append(scale)
        inputs = [node.inputs[0], packed, scale, zero_point]
        bias = _gemm_bias(node, n_cols, dtype) if node.op == "Gemm" else None
        if bias is not None:
            bias_constant = gs.Constant(names.fresh(f"{base}_bias"), bias)
            created.append(bias_constant)
            inputs += [gs.Variable.empty(), bias_constant]
        while inputs and inputs[-1].name == "":
            inputs.pop()
        _replace_node(graph, node, "MatMulNBits", names.fresh(f"{node.name or base}_MatMulNBits"), dict(attrs), inputs)
    return created


def emit_gather_block(graph: gs.Graph, names: NameScope, plan: WeightPlan, quantized: QuantizedMatrix,
                      block_size: int) -> list[gs.Constant]:
    """Replace each embedding Gather by a GatherBlockQuantized of the packed table."""
    weight = plan.constant
    dtype = np.dtype(weight.dtype)
    base = weight.name
    rows = quantized.codes.T  # [K = row width, N = rows] -> [rows, width]
    offset = 8 if quantized.signed else 0
    data = gs.Constant(names.fresh(f"{base}_q4"), packed_table(rows, 4, offset))
    scale = gs.Constant(names.fresh(f"{base}_scale"), np.ascontiguousarray(quantized.scales.T).astype(dtype))
    extra: list[gs.Constant] = []
    if quantized.zero_points is not None:
        extra.append(gs.Constant(names.fresh(f"{base}_zero_point"),
                                 pack_last_axis(quantized.zero_points.T.astype(np.uint8), 4)))
    attrs = {"gather_axis": 0, "quantize_axis": 1, "block_size": block_size, "bits": 4}
    for use in plan.uses:
        node = use.node
        _replace_node(graph, node, "GatherBlockQuantized", names.fresh(f"{node.name or base}_GatherBlockQuantized"),
                      dict(attrs), [data, node.inputs[1], scale, *extra])
    return [data, scale, *extra]
