"""Dynamic int8 for MatMul/Gemm with constant weights: activations quantized at run time.

Why dynamic: transformers have activations whose ranges shift from input to input; a
range computed per call from the actual values (``DynamicQuantizeLinear``) needs no
calibration data and keeps accuracy. Weights are int8, symmetric, per output column.

Weights are bounded by ``weight_limit``: ±64 by default, so that onnxruntime's u8×s8 kernels
cannot saturate their int16 pair sums on CPUs without VNNI (``onnxopt.int8_kernels``);
±127 only for a model that records it needs a VNNI (or ARM64) CPU.

The graph uses standard ONNX ops only —
``DynamicQuantizeLinear → MatMulInteger → Cast → Mul(x_scale × w_scale)`` — a pattern
onnxruntime's CPU optimizer fuses into one ``DynamicQuantizeMatMul`` kernel (measured:
the same speed as emitting that contrib op directly), while any ONNX runtime can still
execute the unfused form. Conv is not handled: onnxruntime's ConvInteger is slower than
its float Conv on every shape we measured, so dynamic mode never touches Conv.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from onnxopt.int8_kernels import SAFE_WEIGHT_LIMIT
from onnxopt.model_io import Model, read_constant
from onnxopt.passes.quantization.common import NameScope, quantize_array, weight_params

DYNAMIC_OPS = ("MatMul", "Gemm")


def dynamic_role_ok(node: gs.Node) -> bool:
    """True when ``node`` is a MatMul/Gemm with a float activation A and a 2-D constant B."""
    if node.op not in DYNAMIC_OPS or len(node.inputs) < 2:
        return False
    a, b = node.inputs[0], node.inputs[1]
    if isinstance(a, gs.Constant) or not isinstance(b, gs.Constant):
        return False
    if np.dtype(b.dtype) != np.float32 or len(b.shape) != 2:
        return False
    if a.dtype is not None and np.dtype(a.dtype) != np.float32:
        return False
    if node.op == "Gemm":
        if int(node.attrs.get("transA", 0)):
            return False
        if len(node.inputs) > 2 and not isinstance(node.inputs[2], gs.Constant):
            return False
    return True


def find_dynamic_candidates(graph: gs.Graph, allowed: set[str], excluded) -> list[str]:
    """Main-graph MatMul/Gemm nodes that dynamic quantization can rewrite."""
    return [node.name for node in graph.nodes
            if node.name and node.op in allowed and not excluded(node) and dynamic_role_ok(node)]


def apply_dynamic(model: Model, selected: set[str], per_channel: bool = True,
                  cache: dict[tuple, tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None,
                  weight_limit: int = SAFE_WEIGHT_LIMIT) -> Model:
    """A copy of ``model`` with the ``selected`` MatMul/Gemm nodes quantized dynamically."""
    cache = {} if cache is None else cache
    work = model.copy()
    graph = work.graph
    names = NameScope(graph)
    for node in list(graph.nodes):
        if node.name not in selected or not dynamic_role_ok(node):
            continue
        _rewrite(graph, node, names, per_channel, cache, weight_limit)
    graph.toposort()
    return work


def _weights_kn(node: gs.Node, per_channel: bool, cache: dict,
                weight_limit: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """B as int8 [K, N] within ±weight_limit, its per-column (or scalar) scale with alpha folded in, zero points."""
    b = node.inputs[1]
    key = (b.name, node.op == "Gemm" and bool(int(node.attrs.get("transB", 0))), per_channel, weight_limit)
    if key not in cache:
        values = np.asarray(read_constant(b), dtype=np.float32)
        if key[1]:
            values = values.T
        params = weight_params(values, 1 if per_channel else None, limit=weight_limit)
        cache[key] = (np.ascontiguousarray(quantize_array(values, params)), params.scale, params.zero_point)
    quantized, scale, zero = cache[key]
    alpha = float(node.attrs.get("alpha", 1.0)) if node.op == "Gemm" else 1.0
    return quantized, (scale * np.float32(alpha)).astype(np.float32), zero


def _rewrite(graph: gs.Graph, node: gs.Node, names: NameScope, per_channel: bool, cache: dict,
             weight_limit: int) -> None:
    base = node.name
    activation = node.inputs[0]
    output = node.outputs[0]
    quantized_b, scale_b, zero_b = _weights_kn(node, per_channel, cache, weight_limit)

    a_q = gs.Variable(names.fresh(f"{base}_input_quantized"), dtype=np.uint8)
    a_scale = gs.Variable(names.fresh(f"{base}_input_scale"), dtype=np.float32, shape=[])
    a_zero = gs.Variable(names.fresh(f"{base}_input_zero_point"), dtype=np.uint8, shape=[])
    quantize = gs.Node("DynamicQuantizeLinear", names.fresh(f"{base}_DynamicQuantizeLinear"),
                       inputs=[activation], outputs=[a_q, a_scale, a_zero])
    b_const = gs.Constant(names.fresh(f"{base}_weight_quantized"), quantized_b)
    b_zero = gs.Constant(names.fresh(f"{base}_weight_zero_point"), np.asarray(zero_b))
    accumulated = gs.Variable(names.fresh(f"{base}_int32"), dtype=np.int32)
    matmul = gs.Node("MatMulInteger", names.fresh(f"{base}_MatMulInteger"),
                     inputs=[a_q, b_const, a_zero, b_zero], outputs=[accumulated])
    as_float = gs.Variable(names.fresh(f"{base}_int32_as_float"), dtype=np.float32)
    cast = gs.Node("Cast", names.fresh(f"{base}_Cast"), attrs={"to": onnx.TensorProto.FLOAT},
                   inputs=[accumulated], outputs=[as_float])
    w_scale = gs.Constant(names.fresh(f"{base}_weight_scale"), np.asarray(scale_b, dtype=np.float32))
    combined = gs.Variable(names.fresh(f"{base}_output_scale"), dtype=np.float32)
    scale_mul = gs.Node("Mul", names.fresh(f"{base}_scale_Mul"), inputs=[a_scale, w_scale], outputs=[combined])
    new_nodes = [quantize, matmul, cast, scale_mul]

    has_bias = node.op == "Gemm" and len(node.inputs) > 2 and node.inputs[2].name
    node.outputs.clear()
    if has_bias:
        scaled = gs.Variable(names.fresh(f"{base}_scaled"), dtype=np.float32)
        new_nodes.append(gs.Node("Mul", names.fresh(f"{base}_Mul"), inputs=[as_float, combined], outputs=[scaled]))
        beta = float(node.attrs.get("beta", 1.0))
        bias_values = np.asarray(read_constant(node.inputs[2]), dtype=np.float32) * np.float32(beta)
        bias = gs.Constant(names.fresh(f"{base}_bias"), bias_values.astype(np.float32))
        new_nodes.append(gs.Node("Add", names.fresh(f"{base}_bias_Add"), inputs=[scaled, bias], outputs=[output]))
    else:
        new_nodes.append(gs.Node("Mul", names.fresh(f"{base}_Mul"), inputs=[as_float, combined], outputs=[output]))
    node.inputs.clear()
    graph.nodes.remove(node)
    graph.nodes.extend(new_nodes)
