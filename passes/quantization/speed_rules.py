"""Which nodes run faster in int8, decided by shape rules alone (``qdq:decide_by=rules``).

Why rules: timing decides on the machine that optimizes, under its load, which is often
not the machine that deploys. Rules give the same model on every machine and every run
(reproducible builds, CI), at the price of not seeing the host. They encode what the
island timings measured (``bench/int8_rules.py``, ``bench/results/int8_rules.md``): int8
wins where the matmul is large enough to amortise quantizing its input and dequantizing
its output, and loses on depthwise convolutions and on products of two activations.

The thresholds are conservative on purpose. On the sample models (``bench.int8_rules``,
2026-11-29, AVX-512 VNNI, islands under 1 thread and 2) they never quantize a node whose
island ran slower than float, and keep 20 of 189 candidates float that would have won
(small pointwise convolutions, 100-wide classifier heads). CPUs without VNNI gain less
from int8, so a rule tuned to the margin here would lose there.

Each rule returns a verdict and the reason, which goes into the pass's decisions.
"""

from __future__ import annotations

import onnx_graphsurgeon as gs

# A MatMul/Gemm with a constant weight [K, N] is worth int8 from this reduction depth and width on.
MIN_MATMUL_K = 64
MIN_MATMUL_N = 128
# A Conv needs this many multiply-adds per output value (Cin/group · kh · kw) and output channels.
MIN_CONV_REDUCTION = 64
MIN_CONV_OUTPUTS = 64


def _constant_shape(tensor: gs.Tensor) -> tuple[int, ...] | None:
    if isinstance(tensor, gs.Constant):
        return tuple(int(dim) for dim in tensor.shape)
    return None


def rule_verdict(node: gs.Node) -> tuple[bool, str]:
    """(int8 expected faster, why) for a quantization candidate, from its op, attributes and weight shape."""
    if node.op in ("MatMul", "Gemm"):
        weight = _constant_shape(node.inputs[1]) if len(node.inputs) > 1 else None
        if weight is None or len(weight) != 2:
            return False, "product of two activations: no measured int8 gain"
        k, n = weight
        if node.op == "Gemm" and int(node.attrs.get("transB", 0)):
            k, n = n, k
        if k < MIN_MATMUL_K or n < MIN_MATMUL_N:
            return False, f"weight {k}x{n} below {MIN_MATMUL_K}x{MIN_MATMUL_N}: conversions cost more than int8 saves"
        return True, f"weight {k}x{n}"
    if node.op in ("Conv", "ConvTranspose"):
        weight = _constant_shape(node.inputs[1]) if len(node.inputs) > 1 else None
        if weight is None or len(weight) < 3:
            return False, "weight shape unknown"
        group = int(node.attrs.get("group", 1))
        outputs = weight[0] if node.op == "Conv" else weight[1] * group
        per_group_inputs = weight[1] if node.op == "Conv" else weight[0] // max(group, 1)
        reduction = per_group_inputs
        for dim in weight[2:]:
            reduction *= dim
        if group > 1 and per_group_inputs == 1:
            return False, "depthwise convolution: int8 measured slower"
        if reduction < MIN_CONV_REDUCTION or outputs < MIN_CONV_OUTPUTS:
            return False, (f"{reduction} multiply-adds per output, {outputs} outputs: below "
                           f"{MIN_CONV_REDUCTION}/{MIN_CONV_OUTPUTS}")
        return True, f"{reduction} multiply-adds per output, {outputs} outputs"
    # Add, Mul, pools, Concat: only quantized when the user asked for them; they follow the compute ops.
    return True, f"{node.op} requested in op_types"
