"""Per-op typing rules for half-precision conversion (fp16 / bf16).

Converting a node to half precision means feeding its float inputs in half and getting
half outputs. That is not the same for every input or output of every op:

* some float inputs must stay fp32 because they hold coordinates or shape-like values
  whose precision matters more than their size (Resize ``roi``/``scales``, Upsample
  ``scales``, GridSample's ``grid``, Dropout's ``ratio``): ``FP32_INPUTS``;
* some inputs accept any type and never need a Cast (Cast, Shape, Size);
* some outputs have a type fixed by an attribute (Cast ``to``, RandomNormal ``dtype``,
  Constant ``value``): the pass rewrites the attribute, so the output follows the node;
* some outputs have a type of their own (LayerNormalization's Mean/InvStdDev follow
  ``stash_type``): they stay what they were;
* some ops compute things that are hopeless in half precision (Range over floats,
  NonMaxSuppression boxes, quantization scales): ``ALWAYS_FP32``.

Everything else is decided from the op's schema at the model's opset: a node may run in
half only if every input slot we convert and every output that follows allows the half
type there. Inputs whose formal type is a fixed ``tensor(float)`` (Resize ``scales``)
stay fp32 automatically; a conflict (a kept input sharing a type variable with a
converted one) keeps the whole node in fp32.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx
import onnx.defs
import onnx_graphsurgeon as gs

FLOAT = onnx.TensorProto.FLOAT
FLOAT16 = onnx.TensorProto.FLOAT16
BFLOAT16 = onnx.TensorProto.BFLOAT16

# Float inputs kept in fp32 even when their node runs in half, with the reason.
FP32_INPUTS: dict[str, dict[int, str]] = {
    "Resize": {1: "roi coordinates", 2: "scales"},
    "Upsample": {1: "scales"},
    "GridSample": {1: "sampling grid coordinates"},
    "Dropout": {1: "ratio"},
}

# Ops that never run in half, and why. The schema check catches most float-only ops by
# itself; these are the ones whose schema allows half but whose results would suffer.
ALWAYS_FP32: dict[str, str] = {
    "Range": "float Range accumulates start + i*delta; half loses the integer steps",
    "NonMaxSuppression": "box coordinates and IoU thresholds need fp32",
    "RoiAlign": "region coordinates need fp32",
    "DynamicQuantizeLinear": "quantization scales are computed in fp32",
    "QuantizeLinear": "quantization scales need fp32 precision",
    "DequantizeLinear": "quantization scales need fp32 precision",
    "Multinomial": "sampling from probabilities needs fp32",
    "DFT": "spectral transforms accumulate large sums",
    "STFT": "spectral transforms accumulate large sums",
    "MelWeightMatrix": "filter bank construction needs fp32",
    "Det": "determinants overflow and cancel in half",
    "SoftmaxCrossEntropyLoss": "loss reductions need fp32",
    "NegativeLogLikelihoodLoss": "loss reductions need fp32",
    "TfIdfVectorizer": "term weights are fp32 by definition",
}

# Ops whose float output type comes from an attribute that the pass rewrites.
TYPE_ATTRIBUTE_OPS = frozenset(
    {"Cast", "Constant", "ConstantOfShape", "RandomNormal", "RandomUniform", "RandomNormalLike",
     "RandomUniformLike", "EyeLike", "Bernoulli"}
)
# Of those, the ones whose ``dtype`` attribute is optional (absent: the output follows input 0).
_OPTIONAL_DTYPE_OPS = frozenset({"RandomNormalLike", "RandomUniformLike", "EyeLike", "Bernoulli"})

# Source-like ops whose mode follows their consumers: run in half only if every consumer
# wants half, so an fp32 consumer never sees a value that went through half for nothing.
FOLLOW_CONSUMERS_OPS = frozenset(
    {"Cast", "Constant", "ConstantOfShape", "RandomNormal", "RandomUniform", "RandomNormalLike",
     "RandomUniformLike", "EyeLike"}
)

# Data-movement ops: no arithmetic, so their mode follows their neighbours to avoid casts.
DATA_MOVEMENT_OPS = frozenset(
    {"Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Identity", "Gather", "GatherElements",
     "GatherND", "Slice", "Concat", "Split", "Expand", "Tile", "Pad", "DepthToSpace", "SpaceToDepth",
     "ReverseSequence", "Compress", "Where", "ScatterND", "ScatterElements", "Scatter", "Trilu", "Dropout"}
)

# Control-flow ops: their float inputs/outputs and their bodies' float inputs/outputs share
# the node's mode.
CONTROL_FLOW_OPS = frozenset({"If", "Loop", "Scan"})


@dataclass(frozen=True)
class OpTyping:
    """How one node's float32 slots behave when the node runs in half precision.

    ``half_inputs``/``fp32_inputs``/``any_inputs`` partition the node's float32 input
    slots; ``half_outputs`` are the float32 outputs whose type becomes half; ``refusal``
    says why the node cannot run in half at all (None when it can).
    """

    half_inputs: frozenset[int]
    fp32_inputs: frozenset[int]
    any_inputs: frozenset[int]
    half_outputs: frozenset[int]
    refusal: str | None = None

    @property
    def changes_anything(self) -> bool:
        return bool(self.half_inputs or self.half_outputs)


def half_type_name(half: int) -> str:
    return "bfloat16" if half == BFLOAT16 else "float16"


def _type_str(half: int) -> str:
    return f"tensor({half_type_name(half)})"


def _any_type_inputs(node: gs.Node) -> frozenset[int]:
    if node.op in ("Cast", "Shape", "Size", "CastLike"):
        return frozenset({0})
    if node.op in _OPTIONAL_DTYPE_OPS and node.attrs.get("dtype") is not None:
        return frozenset({0})
    return frozenset()


def _schema(node: gs.Node, opset: int) -> onnx.defs.OpSchema | None:
    domain = node.domain or ""
    try:
        return onnx.defs.get_schema(node.op, max_inclusive_version=opset, domain=domain)
    except onnx.defs.SchemaError:
        return None


def _formal(params: list, index: int):
    if index < len(params):
        return params[index]
    if params and params[-1].option == onnx.defs.OpSchema.FormalParameterOption.Variadic:
        return params[-1]
    return None


def _refused(inputs: list[int], reason: str) -> OpTyping:
    return OpTyping(frozenset(), frozenset(inputs), frozenset(), frozenset(), reason)


def op_typing(
    node: gs.Node,
    float_inputs: list[bool],
    float_outputs: list[bool],
    opset: int,
    half: int,
    is_local_function: bool,
) -> OpTyping:
    """Classify a node's float32 slots (``float_inputs[i]``: input i is float32)."""
    inputs = [i for i, flag in enumerate(float_inputs) if flag]
    outputs = [i for i, flag in enumerate(float_outputs) if flag]
    any_inputs = _any_type_inputs(node) & frozenset(inputs)
    if is_local_function or (node.op in CONTROL_FLOW_OPS and not node.domain):
        return OpTyping(frozenset(inputs) - any_inputs, frozenset(), any_inputs, frozenset(outputs))
    if (node.domain or "") not in ("", "ai.onnx"):
        return _refused(inputs, f"custom op of domain {node.domain!r}")
    if node.op in ALWAYS_FP32:
        return _refused(inputs, ALWAYS_FP32[node.op])
    schema = _schema(node, opset)
    if schema is None:
        return _refused(inputs, f"no schema for {node.op} at opset {opset}")
    wanted = _type_str(half)
    constraints = {c.type_param_str: set(c.allowed_type_strs) for c in schema.type_constraints}

    def allows(type_str: str) -> bool:
        return wanted in constraints.get(type_str, {type_str})

    kept_fp32 = set(FP32_INPUTS.get(node.op, {})) & set(inputs)
    converted: set[int] = set()
    for index in inputs:
        if index in any_inputs or index in kept_fp32:
            continue
        formal = _formal(schema.inputs, index)
        if formal is None:
            return _refused(inputs, "input beyond the schema")
        if formal.type_str not in constraints and not allows(formal.type_str):
            kept_fp32.add(index)  # a fixed tensor(float) input, e.g. Resize scales
        else:
            converted.add(index)
    converted_vars = {_formal(schema.inputs, i).type_str for i in converted}
    kept_vars = {_formal(schema.inputs, i).type_str for i in kept_fp32}
    half_outputs: set[int] = set()
    for index in outputs:
        formal = _formal(schema.outputs, index)
        if formal is None:
            continue
        follows = formal.type_str in converted_vars or node.op in TYPE_ATTRIBUTE_OPS
        if follows:
            half_outputs.add(index)
    output_vars = {_formal(schema.outputs, i).type_str for i in half_outputs}
    refusal = None
    for index in converted:
        if not allows(_formal(schema.inputs, index).type_str):
            refusal = f"{node.op}-{schema.since_version} has no {half_type_name(half)} for input {index}"
            break
    if refusal is None:
        for index in half_outputs:
            formal = _formal(schema.outputs, index)
            if node.op not in TYPE_ATTRIBUTE_OPS and not allows(formal.type_str):
                refusal = f"{node.op}-{schema.since_version} has no {half_type_name(half)} for output {index}"
                break
            if node.op in TYPE_ATTRIBUTE_OPS and not allows(formal.type_str):
                refusal = f"{node.op}-{schema.since_version} cannot produce {half_type_name(half)}"
                break
    if refusal is None and kept_vars & (converted_vars | output_vars):
        refusal = "an fp32-only input shares its type with converted inputs"
    if refusal is not None:
        return _refused(inputs, refusal)
    return OpTyping(frozenset(converted), frozenset(kept_fp32), any_inputs, frozenset(half_outputs))
