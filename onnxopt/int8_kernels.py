"""What onnxruntime's integer matmul kernels compute on each kind of CPU, and which int8 weights are safe.

The hazard: onnxruntime (MLAS) runs u8 activations × s8 weights — MatMulInteger,
ConvInteger, QLinearConv/QLinearMatMul, the DynamicQuantizeMatMul and QGemm it fuses from
Q/DQ graphs — with a kernel chosen by the CPU:

* x86-64 with AVX2 but no VNNI, and AVX-512 without VNNI (Haswell … Skylake-SP, Zen 1-3):
  ``vpmaddubsw`` multiplies adjacent u8·s8 pairs and adds each pair into a *saturating*
  int16 before widening to int32. 255·127 + 255·127 = 64770 > 32767: a pair of full-range
  values clips, and the output is silently wrong (MiniLM's embeddings drop from cosine 0.996
  to 0.88 on such a CPU);
* x86-64 with AVX512-VNNI, AVX-VNNI or AMX-INT8: ``vpdpbusd``/``tdpbusd`` add four products
  straight into int32 — no intermediate limit;
* ARM64: s8 weights meet activations shifted to s8 (``smull``/``smlal`` into int16, then
  pairwise into int32, or ``sdot`` into int32). Two products of at most 128·127 = 16256
  never overflow int16, as long as no weight is -128 (every weight we write is within ±127);
* u8 × u8 (U8U8) kernels widen both operands to 16 bits on every CPU: never saturate, but
  run about 1.8x slower than U8S8 on a VNNI CPU (measured on MiniLM), so they are not the default.

The rule that follows: with s8 weights within ±64, no pair can exceed 2 · 255 · 64 = 32640,
whatever the activations and whatever the pairing the kernel uses — correct on every CPU.
Full-range (±127) weights are correct only on CPUs that never saturate, and a model using
them must say so (``REQUIRES_KEY`` in its metadata) so that ``onnxopt check`` can compare
that with the host.

``int16_pair_matmul`` is a numpy model of the saturating path (pairwise int16, then int32),
so a test on any machine can prove that the int8 nodes a pass emits compute exactly what an
AVX2 CPU computes; ``find_int8_kernels`` finds every integer matmul in a model and the
weights it runs with; ``saturation_risks`` lists those that could saturate.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from onnxopt.cpu_features import CpuInfo
from onnxopt.graph_edit import constant_array, producer
from onnxopt.graph_walk import iter_all_graphs
from onnxopt.model_io import Model

INT16_MIN, INT16_MAX = -(2**15), 2**15 - 1
U8_MAX = 255
# The largest |s8 weight| for which two u8·s8 products can never exceed int16: 2·255·64 = 32640.
SAFE_WEIGHT_LIMIT = INT16_MAX // (2 * U8_MAX)
FULL_WEIGHT_LIMIT = 127

# What an int8 model assumes of the CPU that runs it.
CPU_ANY = "any"  # weights within ±64: right on every CPU
CPU_VNNI = "vnni"  # full-range weights: right only where u8·s8 products accumulate in int32
CPU_KINDS = (CPU_ANY, CPU_VNNI)
# x86 flags whose onnxruntime u8·s8 kernels accumulate in int32; "aarch64" stands for any ARM64 CPU.
NO_SATURATION_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")
ARM64_REQUIREMENT = "aarch64"
REQUIRES_KEY = "onnxopt.int8.requires"
VNNI_REQUIREMENT = "|".join((*NO_SATURATION_FLAGS, ARM64_REQUIREMENT))


def weight_limit(cpu_kind: str) -> int:
    """The largest |int8 weight| a model for ``cpu_kind`` may hold."""
    if cpu_kind not in CPU_KINDS:
        raise ValueError(f"unknown CPU kind {cpu_kind!r} (choose from {', '.join(CPU_KINDS)})")
    return SAFE_WEIGHT_LIMIT if cpu_kind == CPU_ANY else FULL_WEIGHT_LIMIT


def requirement_of(cpu_kind: str) -> str | None:
    """The ``REQUIRES_KEY`` metadata value a model for ``cpu_kind`` carries (None: runs anywhere)."""
    return VNNI_REQUIREMENT if cpu_kind == CPU_VNNI else None


def meets_requirement(requirement: str, cpu: CpuInfo) -> bool:
    """True when ``cpu`` has at least one of the ``|``-separated features of ``requirement``."""
    wanted = [item.strip().lower() for item in requirement.split("|") if item.strip()]
    if not wanted:
        return True
    if cpu.is_arm64 and ARM64_REQUIREMENT in wanted:
        return True
    return cpu.has_any(wanted)


def saturates_u8s8(cpu: CpuInfo) -> bool:
    """True when onnxruntime's u8·s8 kernels on ``cpu`` add pairs of products in saturating int16."""
    return not meets_requirement(VNNI_REQUIREMENT, cpu)


# --- numpy model of the kernels ------------------------------------------------------------------------------

def exact_int_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` of integer matrices as int64: what every kernel should compute.

    Through float64 BLAS (numpy's integer matmul has none): exact while every partial sum
    stays below 2**53, i.e. for any K below 2**37 with 8-bit operands.
    """
    product = np.asarray(a, dtype=np.float64) @ np.asarray(b, dtype=np.float64)
    return np.rint(product).astype(np.int64)


def int16_pair_matmul(a: np.ndarray, b: np.ndarray, overflow: str = "saturate") -> np.ndarray:
    """``a [M, K] @ b [K, N]`` the way a pairwise-int16 kernel computes it, as int64.

    Products of K-adjacent pairs ``a[m, 2j] b[2j, n] + a[m, 2j+1] b[2j+1, n]`` are added in
    int16 — saturating (x86 ``vpmaddubsw``) or wrapping (ARM ``smlal``) — and the pair sums
    then accumulate in wide integers. K is padded with a zero column when odd.

    Computed as the exact product plus a correction on the pairs that can leave int16 at
    all (given the largest |a|): the same numbers as summing every clipped pair, without
    materialising M·K/2·N pair sums.
    """
    if overflow not in ("saturate", "wrap"):
        raise ValueError("overflow must be 'saturate' or 'wrap'")
    a64 = np.asarray(a, dtype=np.int64)
    b64 = np.asarray(b, dtype=np.int64)
    if a64.shape[1] % 2:
        a64 = np.pad(a64, ((0, 0), (0, 1)))
        b64 = np.pad(b64, ((0, 1), (0, 0)))
    result = exact_int_matmul(a64, b64)
    if a64.size == 0 or b64.size == 0:
        return result
    largest_a = int(np.abs(a64).max())
    reach = largest_a * (np.abs(b64[0::2]) + np.abs(b64[1::2]))  # [K/2, N]: the largest |pair| possible
    pairs, columns = np.nonzero(reach > INT16_MAX)
    step = max(1, (1 << 24) // max(1, a64.shape[0]))
    for start in range(0, pairs.size, step):
        j, n = pairs[start : start + step], columns[start : start + step]
        sums = a64[:, 2 * j] * b64[2 * j, n] + a64[:, 2 * j + 1] * b64[2 * j + 1, n]  # [M, pairs]
        if overflow == "saturate":
            kept = np.clip(sums, INT16_MIN, INT16_MAX)
        else:
            kept = (sums - INT16_MIN) % 2**16 + INT16_MIN
        np.add.at(result, (np.arange(a64.shape[0])[:, None], n[None, :]), kept - sums)
    return result


def int16_pair_matmul_reference(a: np.ndarray, b: np.ndarray, overflow: str = "saturate") -> np.ndarray:
    """The same as ``int16_pair_matmul``, literally: every pair sum materialised (small inputs only)."""
    a64 = np.asarray(a, dtype=np.int64)
    b64 = np.asarray(b, dtype=np.int64)
    if a64.shape[1] % 2:
        a64 = np.pad(a64, ((0, 0), (0, 1)))
        b64 = np.pad(b64, ((0, 1), (0, 0)))
    pairs = a64[:, 0::2, None] * b64[None, 0::2, :] + a64[:, 1::2, None] * b64[None, 1::2, :]
    if overflow == "saturate":
        pairs = np.clip(pairs, INT16_MIN, INT16_MAX)
    else:
        pairs = (pairs - INT16_MIN) % 2**16 + INT16_MIN
    return pairs.sum(axis=1)


def worst_pair_sum(weights: np.ndarray, activation_max: int = U8_MAX) -> int:
    """A bound on |a·w + a'·w'| for any two weights of ``weights`` and activations in [0, activation_max].

    It does not depend on which weights a kernel pairs (packing orders differ between
    kernels and CPUs): two of the largest magnitude is the worst any pairing can do.
    """
    largest = _max_abs(np.asarray(weights))
    return int(activation_max * 2 * largest)


# --- finding the integer matmuls of a model ------------------------------------------------------------------

@dataclass
class Int8Kernel:
    """One node that onnxruntime runs through an integer matmul kernel, with its stored weights."""

    node: str
    op: str
    weights: np.ndarray | None  # the stored integer values (None: not a constant)
    weight_signed: bool
    activation_signed: bool | None  # None: unknown
    activation_tensor: str | None = None  # the integer activation it reads (None: quantized inside the op)

    @property
    def max_abs_weight(self) -> int | None:
        return None if self.weights is None else _max_abs(self.weights)


def _max_abs(values: np.ndarray) -> int:
    """max |v| of an integer array without a widened copy (int8 weights of a large model are big)."""
    if values.size == 0:
        return 0
    return max(int(values.max()), -int(values.min()))


# Operator-form integer ops: op type -> (activation input index, weight input index).
_OPERATOR_FORMS = {
    "MatMulInteger": (0, 1),
    "ConvInteger": (0, 1),
    "QLinearMatMul": (0, 3),
    "QLinearConv": (0, 3),
    "DynamicQuantizeMatMul": (None, 1),  # A is float, quantized to u8 inside
    "MatMulIntegerToFloat": (0, 1),
    "QGemm": (0, 3),
}
# Float ops that onnxruntime runs in integer form when both operands come out of DequantizeLinear.
_QDQ_COMPUTE = {"MatMul": 1, "Gemm": 1, "Conv": 1, "ConvTranspose": 1}


def _is_signed(dtype: object) -> bool | None:
    if dtype is None:
        return None
    try:
        kind = np.dtype(dtype)
    except TypeError:
        return None
    if kind == np.int8:
        return True
    if kind == np.uint8:
        return False
    return None


def _dequantized_source(tensor: gs.Tensor) -> gs.Tensor | None:
    """The integer tensor a DequantizeLinear turns into ``tensor``, or None."""
    node = producer(tensor)
    if node is None or node.op != "DequantizeLinear" or not node.inputs:
        return None
    return node.inputs[0]


def _integer_signed(tensor: gs.Tensor) -> bool | None:
    """Whether an integer tensor is int8 (True) or uint8 (False), from its type or what produced it."""
    known = _is_signed(tensor.dtype)
    if known is not None:
        return known
    node = producer(tensor)
    if node is not None and node.op == "DynamicQuantizeLinear":
        return False
    if node is not None and node.op == "QuantizeLinear":
        if len(node.inputs) > 2 and node.inputs[2].name:
            zero = constant_array(node.inputs[2])
            return _is_signed(zero.dtype) if zero is not None else _is_signed(node.inputs[2].dtype)
        return False  # QuantizeLinear's default output type is uint8
    return None


def _kernel(node: gs.Node, activation: gs.Tensor | None, weight: gs.Tensor) -> Int8Kernel:
    values = constant_array(weight)
    signed = _is_signed(values.dtype) if values is not None else _integer_signed(weight)
    activation_signed = None
    if activation is not None:
        activation_signed = _integer_signed(activation)
    elif node.op == "DynamicQuantizeMatMul":
        activation_signed = False
    return Int8Kernel(node.name, node.op, None if values is None else np.asarray(values), bool(signed),
                      activation_signed, activation.name if activation is not None else None)


def find_int8_kernels(model: Model) -> Iterator[Int8Kernel]:
    """Every node of every graph that onnxruntime runs through an integer matmul kernel."""
    for graph in iter_all_graphs(model.graph):
        for node in graph.nodes:
            if node.op in _OPERATOR_FORMS:
                act_index, weight_index = _OPERATOR_FORMS[node.op]
                if len(node.inputs) <= weight_index:
                    continue
                activation = node.inputs[act_index] if act_index is not None else None
                yield _kernel(node, activation, node.inputs[weight_index])
            elif node.op in _QDQ_COMPUTE and len(node.inputs) > _QDQ_COMPUTE[node.op]:
                activation = _dequantized_source(node.inputs[0])
                weight = _dequantized_source(node.inputs[_QDQ_COMPUTE[node.op]])
                if activation is None or weight is None:
                    continue  # weight-only or float: onnxruntime computes it in float
                yield _kernel(node, activation, weight)


@dataclass(frozen=True)
class SaturationRisk:
    """An integer matmul whose weights can overflow int16 pairs on CPUs without VNNI."""

    node: str
    op: str
    max_abs_weight: int | None  # None: the weights are not constant, so nothing bounds them

    def __str__(self) -> str:
        if self.max_abs_weight is None:
            return f"{self.op} {self.node!r}: s8 operand is not a constant, nothing bounds its values"
        return (f"{self.op} {self.node!r}: s8 weights reach ±{self.max_abs_weight} "
                f"(pairs up to {2 * U8_MAX * self.max_abs_weight} > {INT16_MAX})")


def saturation_risks(model: Model, limit: int = SAFE_WEIGHT_LIMIT) -> list[SaturationRisk]:
    """Integer matmuls with s8 weights beyond ±``limit`` (saturation on AVX2 / AVX-512 without VNNI)."""
    risks = []
    for kernel in find_int8_kernels(model):
        if not kernel.weight_signed:
            continue  # u8 weights run in U8U8 kernels, which widen to 16 bits: no saturation anywhere
        largest = kernel.max_abs_weight
        if largest is None or largest > limit:
            risks.append(SaturationRisk(kernel.node, kernel.op, largest))
    return risks
