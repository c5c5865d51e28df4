"""Match and check: which Conv nodes (with the Add and Relu/Clip after them) a fast algorithm may replace.

A match is a ``ConvPattern``: the Conv, optionally the residual Add that alone reads its output, and
optionally the Relu/Clip after that, with everything a kernel needs resolved to constants (weights,
bias, explicit pads, clip bounds) and the static shapes used to time it. Refusals carry the reason the
report shows; ``algorithms_for`` says which algorithms fit a pattern (Winograd: 3x3, stride 1, no
dilation, group 1; FFT: 1-D or 2-D, stride 1, no dilation, group 1 or depthwise).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import onnx_graphsurgeon as gs

from onnxopt.graph_edit import constant_array, is_standard_op, output_names, use_counts
from onnxopt.model_io import Model
from onnxopt.shape_info import TensorInfo, known_elem_type, known_shape

FLOAT = 1  # onnx TensorProto.FLOAT
MIN_OPSET_CLIP_INPUTS = 11


class Refused(Exception):
    """A Conv that no fast algorithm may replace; the message says why."""


@dataclass
class ConvPattern:
    """A Conv and the nodes fused after it, resolved to what a kernel needs."""

    conv: gs.Node
    add: gs.Node | None
    residual: gs.Tensor | None
    activation_node: gs.Node | None
    activation: str  # "" | "Relu" | "Clip"
    clip: tuple[float, float] | None
    output: gs.Tensor
    x_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    weight: np.ndarray
    bias: np.ndarray | None
    pads: list[int]
    group: int
    notes: list[str] = field(default_factory=list)

    @property
    def dims(self) -> int:
        return self.weight.ndim - 2

    @property
    def kernel(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.weight.shape[2:])

    @property
    def depthwise(self) -> bool:
        channels = self.x_shape[1]
        one_filter_each = self.weight.shape[0] == channels and self.weight.shape[1] == 1
        return self.group > 1 and self.group == channels and one_filter_each

    @property
    def nodes(self) -> list[gs.Node]:
        return [node for node in (self.conv, self.add, self.activation_node) if node is not None]

    @property
    def label(self) -> str:
        return "+".join(node.op for node in self.nodes)

    def signature(self) -> tuple:
        """What the speed of the pattern depends on (not the weights' values)."""
        return (self.x_shape, tuple(self.weight.shape), tuple(self.pads), self.group, self.add is not None,
                self.activation)

    def describe(self) -> dict:
        return {
            "input": list(self.x_shape),
            "weight": list(self.weight.shape),
            "output": list(self.out_shape),
            "pads": list(self.pads),
            "group": self.group,
            "fused": self.label,
        }


def algorithms_for(pattern: ConvPattern) -> dict[str, str]:
    """Algorithm -> "" when it fits, else the reason it does not (winograd2/4/6, fft)."""
    result: dict[str, str] = {}
    winograd = ""
    if pattern.dims != 2:
        winograd = "Winograd here is 2-D only"
    elif pattern.kernel != (3, 3):
        winograd = f"Winograd here is for 3x3 kernels (kernel {pattern.kernel})"
    elif pattern.group != 1:
        winograd = "Winograd here is for group 1"
    for tile in (2, 4, 6):
        result[f"winograd{tile}"] = winograd
    fft = ""
    if pattern.group != 1 and not pattern.depthwise:
        fft = "grouped convolution that is not depthwise"
    result["fft"] = fft
    return result


def _single_reader(tensor: gs.Tensor, counts: Counter, graph_outputs: set[str]) -> gs.Node | None:
    if counts[tensor.name] != 1 or tensor.name in graph_outputs or len(tensor.outputs) != 1:
        return None
    return tensor.outputs[0]


def _static(shape, batch: int | None) -> tuple[int, ...] | None:
    """The shape with a symbolic batch replaced by ``batch``; None if any other dim is unknown."""
    if shape is None:
        return None
    dims = []
    for index, dim in enumerate(shape):
        if isinstance(dim, int) and dim >= 0:
            dims.append(int(dim))
        elif index == 0 and batch is not None:
            dims.append(batch)
        else:
            return None
    return tuple(dims)


def _explicit_pads(conv: gs.Node, spatial: tuple[int, ...], kernel: tuple[int, ...]) -> list[int]:
    auto_pad = conv.attrs.get("auto_pad", "NOTSET")
    if isinstance(auto_pad, bytes):
        auto_pad = auto_pad.decode()
    dims = len(kernel)
    if auto_pad in ("NOTSET", ""):
        pads = list(conv.attrs.get("pads", [0] * (2 * dims)))
        if len(pads) != 2 * dims:
            raise Refused("pads do not match the kernel rank")
        return [int(p) for p in pads]
    if auto_pad == "VALID":
        return [0] * (2 * dims)
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):  # stride 1: total padding k - 1 per axis
        totals = [k - 1 for k in kernel]
        small = [t // 2 for t in totals]
        large = [t - s for t, s in zip(totals, small, strict=True)]
        begin, end = (small, large) if auto_pad == "SAME_UPPER" else (large, small)
        return begin + end
    raise Refused(f"auto_pad {auto_pad!r}")


def match_conv(conv: gs.Node, model: Model, infos: dict[str, TensorInfo], counts: Counter,
               batch: int | None, fuse: bool = True) -> ConvPattern:
    """The pattern rooted at ``conv``, or Refused with the reason."""
    if not is_standard_op(conv):
        raise Refused("not a standard-domain Conv")
    if len(conv.inputs) < 2:
        raise Refused("Conv without weights")
    x = conv.inputs[0]
    if known_elem_type(x, infos) != FLOAT:
        raise Refused("input is not float32")
    weight = constant_array(conv.inputs[1])
    if weight is None:
        raise Refused("weights are not constant")
    if weight.dtype != np.float32:
        raise Refused(f"weights are {weight.dtype}, not float32")
    if weight.ndim not in (3, 4):
        raise Refused(f"{weight.ndim - 2}-D convolution (1-D and 2-D only)")
    bias = None
    if len(conv.inputs) > 2 and conv.inputs[2].name:
        bias = constant_array(conv.inputs[2])
        if bias is None:
            raise Refused("bias is not constant")
        bias = np.asarray(bias, dtype=np.float32).reshape(-1)
    dims = weight.ndim - 2
    kernel = tuple(int(d) for d in weight.shape[2:])
    if any(int(s) != 1 for s in conv.attrs.get("strides", [1] * dims)):
        raise Refused("stride is not 1")
    if any(int(d) != 1 for d in conv.attrs.get("dilations", [1] * dims)):
        raise Refused("dilated convolution")
    kernel_attr = conv.attrs.get("kernel_shape")
    if kernel_attr is not None and tuple(int(k) for k in kernel_attr) != kernel:
        raise Refused("kernel_shape differs from the weights")
    x_shape = _static(known_shape(x, infos), batch)
    if x_shape is None or len(x_shape) != dims + 2:
        raise Refused("input shape is not static (give --shape for symbolic dims)")
    group = int(conv.attrs.get("group", 1))
    if x_shape[1] != weight.shape[1] * group:
        raise Refused("channels do not match the weights")
    pads = _explicit_pads(conv, x_shape[2:], kernel)
    out_spatial = tuple(x_shape[2 + i] + pads[i] + pads[i + dims] - kernel[i] + 1 for i in range(dims))
    if any(size < 1 for size in out_spatial):
        raise Refused("empty output")
    out_shape = (x_shape[0], int(weight.shape[0]), *out_spatial)
    pattern = ConvPattern(conv, None, None, None, "", None, conv.outputs[0], x_shape, out_shape, weight, bias,
                          pads, group)
    if fuse:
        _fuse_after(pattern, model, infos, counts)
    return pattern


def _fuse_after(pattern: ConvPattern, model: Model, infos: dict[str, TensorInfo], counts: Counter) -> None:
    """Take in the residual Add and the Relu/Clip after the Conv when nothing else reads the intermediates."""
    graph_outputs = output_names(model.graph)
    reader = _single_reader(pattern.output, counts, graph_outputs)
    if reader is not None and reader.op == "Add" and is_standard_op(reader) and len(reader.inputs) == 2:
        other = reader.inputs[1] if reader.inputs[0] is pattern.output else reader.inputs[0]
        other_shape = known_shape(other, infos)
        same = other_shape is not None and _static(other_shape, pattern.out_shape[0]) == pattern.out_shape
        if other is not pattern.output and same and known_elem_type(other, infos) == FLOAT:
            pattern.add, pattern.residual, pattern.output = reader, other, reader.outputs[0]
            reader = _single_reader(pattern.output, counts, graph_outputs)
        else:
            pattern.notes.append("Add not fused (broadcasting or unknown residual shape)")
            return
    if reader is None or not is_standard_op(reader):
        return
    if reader.op == "Relu":
        pattern.activation_node, pattern.activation, pattern.output = reader, "Relu", reader.outputs[0]
    elif reader.op == "Clip":
        bounds = _clip_bounds(reader, model.opset)
        if bounds is None:
            pattern.notes.append("Clip not fused (bounds not constant, or opset below 11)")
            return
        pattern.activation_node, pattern.activation, pattern.clip = reader, "Clip", bounds
        pattern.output = reader.outputs[0]


def _clip_bounds(clip: gs.Node, opset: int) -> tuple[float, float] | None:
    if opset < MIN_OPSET_CLIP_INPUTS:
        return None
    low, high = -np.inf, np.inf
    if len(clip.inputs) > 1 and clip.inputs[1].name:
        value = constant_array(clip.inputs[1])
        if value is None or np.size(value) != 1:
            return None
        low = float(np.asarray(value).reshape(()))
    if len(clip.inputs) > 2 and clip.inputs[2].name:
        value = constant_array(clip.inputs[2])
        if value is None or np.size(value) != 1:
            return None
        high = float(np.asarray(value).reshape(()))
    return low, high


def find_convs(model: Model) -> list[gs.Node]:
    """Conv nodes of the main graph, in graph order."""
    return [node for node in model.graph.nodes if node.op == "Conv"]


def reader_counts(model: Model) -> Counter:
    return use_counts(model.graph)
