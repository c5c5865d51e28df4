"""Apply a Q/DQ placement to a model: insert the pairs, store weights int8 and biases int32.

Kept apart from the placement (which decides *where*) and from calibration (which decides
*ranges*), so the pass can build many variants of one model cheaply — a different set of
quantized nodes for the speed check and the sensitivity search — from the same ranges
and the same quantized weights (``WeightCache``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import onnx_graphsurgeon as gs

from onnxopt.calibration import TensorRange
from onnxopt.int8_kernels import SAFE_WEIGHT_LIMIT
from onnxopt.model_io import Model, read_constant
from onnxopt.passes.quantization.common import (
    NameScope,
    QuantParams,
    bias_scale,
    dequantized_constant,
    params_from_range,
    qdq_pair,
    quantize_array,
    quantize_bias,
    replace_input,
    weight_params,
)
from onnxopt.passes.quantization.qdq_placement import Placement

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ActivationFormat:
    """The integer type of activations: symmetric int8 (zero point 0) or asymmetric uint8."""

    dtype: type = np.uint8
    symmetric: bool = False

    @classmethod
    def named(cls, name: str) -> ActivationFormat:
        return cls(np.int8, True) if name == "int8" else cls(np.uint8, False)


def activation_params(placement: Placement, ranges: dict[str, TensorRange],
                      fmt: ActivationFormat) -> dict[str, QuantParams]:
    """One QuantParams per quantized tensor; tensors of a shared-scale group get the same one."""
    result: dict[str, QuantParams] = {}
    for members in placement.group_members().values():
        known = [ranges[name] for name in members if name in ranges and ranges[name].count]
        low = min((r.rmin for r in known), default=0.0)
        high = max((r.rmax for r in known), default=0.0)
        params = params_from_range(low, high, fmt.dtype, fmt.symmetric)
        for name in members:
            result[name] = params
    return result


@dataclass
class WeightCache:
    """Quantized weights by (tensor name, axis), so variants of a model share the work.

    ``weight_limit`` bounds the int8 codes (±64: no int16 saturation on any CPU; ±127 for
    models that require a VNNI CPU, see ``onnxopt.int8_kernels``).
    """

    per_channel: bool = True
    weight_limit: int = SAFE_WEIGHT_LIMIT
    entries: dict[tuple[str, int | None], tuple[np.ndarray, QuantParams]] = field(default_factory=dict)

    def get(self, constant: gs.Constant, axis: int | None) -> tuple[np.ndarray, QuantParams]:
        axis = axis if self.per_channel else None
        key = (constant.name, axis)
        if key not in self.entries:
            values = np.asarray(read_constant(constant), dtype=np.float32)
            params = weight_params(values, axis, limit=self.weight_limit)
            self.entries[key] = (quantize_array(values, params), params)
        return self.entries[key]


def apply_static(model: Model, placement: Placement, params: dict[str, QuantParams],
                 weights: WeightCache) -> Model:
    """A copy of ``model`` with the placement's Q/DQ inserted (the input model is untouched)."""
    work = model.copy()
    graph = work.graph
    names = NameScope(graph)
    by_name = {node.name: node for node in graph.nodes if node.name}
    tensors = graph.tensors()
    new_nodes: list[gs.Node] = []
    weight_params_of: dict[tuple[str, int], QuantParams] = {}

    for name, spec in placement.activations.items():
        tensor = tensors[name]
        pair, restored = qdq_pair(names, tensor, params[name], name)
        if spec.consumers is None:
            readers = [node for node in list(tensor.outputs) if node is not pair[0]]
        else:
            readers = [by_name[consumer] for consumer in spec.consumers if consumer in by_name]
        replace_input(readers, tensor, restored)
        new_nodes.extend(pair)

    shared: dict[tuple[str, int | None], gs.Variable] = {}
    for spec in placement.weights:
        node = by_name[spec.node]
        constant = node.inputs[spec.index]
        axis = spec.axis if weights.per_channel else None
        quantized, qparams = weights.get(constant, axis)
        weight_params_of[(spec.node, spec.index)] = qparams
        key = (constant.name, axis)
        if key not in shared:
            dq_node, restored = dequantized_constant(names, quantized, qparams, constant.name)
            new_nodes.append(dq_node)
            shared[key] = restored
        node.inputs[spec.index] = shared[key]

    for spec in placement.biases:
        node = by_name[spec.node]
        constant = node.inputs[spec.index]
        input_params = params.get(spec.activation)
        qparams = weight_params_of.get((spec.node, spec.weight_index))
        if input_params is None or qparams is None or input_params.per_channel:
            continue
        scale = bias_scale(input_params.scale, qparams.scale)
        values = np.asarray(read_constant(constant), dtype=np.float32).reshape(-1)
        if scale.ndim and spec.groups > 1:
            scale = np.tile(scale, spec.groups)
        if scale.ndim and scale.shape[0] != values.shape[0]:
            continue
        quantized = quantize_bias(values, scale if scale.ndim else np.full(values.shape, scale, np.float32))
        if quantized is None:
            logger.info("bias of %s kept float: it overflows int32 at its scale", spec.node)
            continue
        bias_params = QuantParams(scale=np.asarray(scale, np.float32),
                                  zero_point=np.zeros(scale.shape, np.int32), axis=0 if scale.ndim else None)
        dq_node, restored = dequantized_constant(names, quantized, bias_params, constant.name)
        new_nodes.append(dq_node)
        node.inputs[spec.index] = restored

    graph.nodes.extend(new_nodes)
    graph.toposort()
    return work
