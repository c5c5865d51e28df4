"""The custom ops of the ``com.onnxopt`` domain and the model-local functions that define them.

Every op here is portable by construction: the model carries a FunctionProto of the same name whose
body is the standard subgraph it replaces (Conv, then Add for a residual, then Relu or Clip). A runtime
with onnxopt's kernels registered runs the kernel (onnxruntime looks in custom-op registries before
inlining a local function); any other runtime inlines the body. The names must match the ones the native
library registers (``native/kernels/src/register.cc``): ``<Base>[Add][Relu|Clip]`` with Base
``WinogradConv`` or ``FFTConv``, and ``StrassenMatMul``.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx
import onnx.helper as oh
import onnx_graphsurgeon as gs
from onnx_graphsurgeon.importers.onnx_importer import OnnxImporter

from onnxopt.kernels import DOMAIN
from onnxopt.model_io import Model

ACTIVATIONS = ("", "Relu", "Clip")
WINOGRAD_TILES = (2, 4, 6)
# Clip takes its bounds as inputs from opset 11; the Clip variants need at least that.
MIN_OPSET_CLIP = 11


@dataclass(frozen=True)
class ConvOp:
    """A fused convolution op: algorithm, residual Add, activation."""

    algorithm: str  # "winograd" | "fft"
    residual: bool = False
    activation: str = ""  # "" | "Relu" | "Clip"

    @property
    def op_type(self) -> str:
        base = "WinogradConv" if self.algorithm == "winograd" else "FFTConv"
        return f"{base}{'Add' if self.residual else ''}{self.activation}"

    @property
    def input_names(self) -> list[str]:
        return ["X", "W", "B", *(["R"] if self.residual else [])]

    @property
    def attribute_names(self) -> list[str]:
        names = ["pads", "tile" if self.algorithm == "winograd" else "group"]
        if self.activation == "Clip":
            names += ["clip_min", "clip_max"]
        return names


STRASSEN_OP = "StrassenMatMul"


def _ref(name: str, kind: int) -> onnx.AttributeProto:
    return oh.make_attribute_ref(name, kind)


def conv_function(op: ConvOp, opset: int) -> onnx.FunctionProto:
    """The FunctionProto of ``op``: the standard nodes the kernel replaces, attributes passed through."""
    conv = oh.make_node("Conv", ["X", "W", "B"], ["conv"])
    conv.attribute.append(_ref("pads", onnx.AttributeProto.INTS))
    if op.algorithm == "fft":
        conv.attribute.append(_ref("group", onnx.AttributeProto.INT))
    nodes = [conv]
    current = "conv"
    if op.residual:
        nodes.append(oh.make_node("Add", [current, "R"], ["sum"]))
        current = "sum"
    if op.activation == "Relu":
        nodes.append(oh.make_node("Relu", [current], ["Y"]))
    elif op.activation == "Clip":
        low = oh.make_node("Constant", [], ["low"])
        low.attribute.append(_ref_as("value_float", "clip_min", onnx.AttributeProto.FLOAT))
        high = oh.make_node("Constant", [], ["high"])
        high.attribute.append(_ref_as("value_float", "clip_max", onnx.AttributeProto.FLOAT))
        nodes += [low, high, oh.make_node("Clip", [current, "low", "high"], ["Y"])]
    nodes[-1].output[0] = "Y"
    return oh.make_function(DOMAIN, op.op_type, op.input_names, ["Y"], nodes,
                            [oh.make_opsetid("", opset)], op.attribute_names)


def strassen_function(opset: int) -> onnx.FunctionProto:
    """StrassenMatMul(A, B) = MatMul(A, B); attribute ``levels`` is for the kernel only."""
    return oh.make_function(DOMAIN, STRASSEN_OP, ["A", "B"], ["Y"], [oh.make_node("MatMul", ["A", "B"], ["Y"])],
                            [oh.make_opsetid("", opset)], ["levels"])


def _ref_as(attribute: str, ref: str, kind: int) -> onnx.AttributeProto:
    """An attribute of a body node named ``attribute`` that takes the function's attribute ``ref``."""
    proto = onnx.AttributeProto()
    proto.name = attribute
    proto.ref_attr_name = ref
    proto.type = kind
    return proto


def ensure_function(model: Model, proto: onnx.FunctionProto) -> None:
    """Add ``proto`` to the model's local functions (once) and import the custom domain."""
    graph = model.graph
    for function in graph.functions:
        if function.domain == proto.domain and function.name == proto.name:
            return
    imports = list(graph.import_domains or [oh.make_opsetid("", model.opset)])
    function = OnnxImporter.import_function(proto, model_opset=model.opset, model_import_domains=imports)
    graph.functions.append(function)
    ensure_domain(model)


def ensure_domain(model: Model) -> None:
    graph = model.graph
    imports = list(graph.import_domains or [oh.make_opsetid("", model.opset)])
    if not any(entry.domain == DOMAIN for entry in imports):
        imports.append(oh.make_opsetid(DOMAIN, 1))
        graph.import_domains = imports


def function_exists(model: Model, name: str) -> bool:
    return any(function.domain == DOMAIN and function.name == name for function in model.graph.functions)


def make_node(op_type: str, inputs: list[gs.Tensor], output: gs.Tensor, name: str, attrs: dict) -> gs.Node:
    return gs.Node(op=op_type, name=name, domain=DOMAIN, attrs=attrs, inputs=inputs, outputs=[output])
