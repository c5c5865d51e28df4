"""fuse-conv-bn: fold an inference BatchNormalization into the Conv before it.

In inference, BatchNormalization is a per-channel affine map; applied to a Conv output it
can be absorbed into the Conv's weights and bias, removing a whole pass over the
activation. The result differs from the original only by float rounding (reassociation).
"""

from __future__ import annotations

import logging
from collections import Counter

import numpy as np
import onnx_graphsurgeon as gs

from onnxopt.graph_edit import (
    Scope,
    all_tensor_names,
    constant_array,
    detach,
    fresh_name,
    is_standard_op,
    iter_trees,
    output_names,
    producer,
    remove_nodes,
    use_counts,
)
from onnxopt.model_io import Model
from onnxopt.pass_api import Contract, Pass, PassContext, PassResult

logger = logging.getLogger(__name__)

# Rounding of a float16 weight alone exceeds the declared tolerance; only these are fused.
_FUSABLE_DTYPES = (np.float32, np.float64)


class _Refused(Exception):
    """A Conv+BatchNormalization pair that cannot be fused; the message says why."""


class FuseConvBatchNorm(Pass):
    """Fold BatchNormalization (inference form, constant parameters) into the preceding Conv.

    Conditions: the Conv output is read only by the BatchNormalization; Conv weights (and
    bias, if any) and the four BatchNormalization parameters are constants; the weights are
    float32 or float64; the BatchNormalization is in inference mode (no training outputs,
    ``training_mode`` 0, ``spatial`` 1) and has one parameter per output channel. The new
    weights are computed in float64 and stored in the weights' type, as new constants (the
    old ones may be shared). Refusals are counted by reason. Walks If/Loop/Scan bodies and
    local functions.
    """

    name = "fuse-conv-bn"
    contract = Contract.TOLERANCE
    tolerance_rel = 1e-5
    walks_subgraphs = True
    walks_functions = True

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        self._refused: Counter = Counter()
        fused = 0
        taken = all_tensor_names(model.graph)
        for tree in iter_trees(model.graph):
            counts = use_counts(tree[0].graph)
            for scope in tree:
                fused += self._scope(scope, counts, taken)
        stats: dict = {"nodes_fused": fused, "nodes_removed": fused}
        if self._refused:
            stats["refused"] = dict(self._refused)
        return PassResult(fused > 0, stats)

    def _scope(self, scope: Scope, counts: Counter, taken: set[str]) -> int:
        doomed: list[gs.Node] = []
        local = {id(node) for node in scope.graph.nodes}
        for bn in list(scope.graph.nodes):
            if bn.op != "BatchNormalization" or not is_standard_op(bn) or not bn.inputs:
                continue
            conv = producer(bn.inputs[0])
            if conv is None or conv.op != "Conv" or not is_standard_op(conv) or id(conv) not in local:
                continue
            try:
                weight, bias = self._check(scope, conv, bn, counts)
            except _Refused as reason:
                self._refused[str(reason)] += 1
                continue
            self._rewrite(conv, bn, weight, bias, taken)
            doomed.append(bn)
        return remove_nodes(scope.graph, doomed)

    # --- match/check --------------------------------------------------------------------

    def _check(self, scope: Scope, conv: gs.Node, bn: gs.Node, counts: Counter) -> tuple[np.ndarray, np.ndarray]:
        """The fused weight and bias, or _Refused."""
        conv_out = bn.inputs[0]
        if counts[conv_out.name] != 1 or conv_out.name in output_names(scope.graph):
            raise _Refused("Conv output has other readers")
        if len(bn.inputs) != 5:
            raise _Refused("BatchNormalization has an unexpected number of inputs")
        if any(tensor.name for tensor in bn.outputs[1:]):
            raise _Refused("BatchNormalization is in training mode (statistics outputs present)")
        if int(bn.attrs.get("training_mode", 0)) != 0:
            raise _Refused("BatchNormalization is in training mode (training_mode=1)")
        if int(bn.attrs.get("spatial", 1)) != 1:
            raise _Refused("BatchNormalization is per-activation (spatial=0)")
        if scope.opset < 7 and int(bn.attrs.get("is_test", 0)) == 0:
            raise _Refused("BatchNormalization is in training mode (is_test=0)")
        params = [constant_array(tensor) for tensor in bn.inputs[1:]]
        if any(value is None for value in params):
            raise _Refused("BatchNormalization parameters are not constant")
        weight = constant_array(conv.inputs[1]) if len(conv.inputs) > 1 else None
        if weight is None:
            raise _Refused("Conv weights are not constant")
        has_bias = len(conv.inputs) > 2 and conv.inputs[2].name
        bias = constant_array(conv.inputs[2]) if has_bias else np.zeros(weight.shape[0], dtype=weight.dtype)
        if bias is None:
            raise _Refused("Conv bias is not constant")
        if weight.dtype.type not in _FUSABLE_DTYPES:
            raise _Refused(f"weights are {weight.dtype}, not float32/float64")
        channels = weight.shape[0]
        if weight.ndim < 3 or any(np.shape(value) != (channels,) for value in [*params, bias]):
            raise _Refused("parameter shapes do not match the Conv output channels")
        scale, shift, mean, var = (np.asarray(value, dtype=np.float64) for value in params)
        epsilon = float(bn.attrs.get("epsilon", 1e-5))
        factor = scale / np.sqrt(var + epsilon)
        fused_weight = weight.astype(np.float64) * factor.reshape((channels,) + (1,) * (weight.ndim - 1))
        fused_bias = (np.asarray(bias, dtype=np.float64) - mean) * factor + shift
        if not (np.all(np.isfinite(fused_weight)) and np.all(np.isfinite(fused_bias))):
            raise _Refused("fused parameters would not be finite")
        return fused_weight.astype(weight.dtype), fused_bias.astype(weight.dtype)

    # --- rewrite ------------------------------------------------------------------------

    def _rewrite(self, conv: gs.Node, bn: gs.Node, weight: np.ndarray, bias: np.ndarray, taken: set[str]) -> None:
        base = conv.name or conv.outputs[0].name
        new_weight = gs.Constant(fresh_name(f"{base}_bn_weight", taken), weight)
        new_bias = gs.Constant(fresh_name(f"{base}_bn_bias", taken), bias)
        result = bn.outputs[0]
        detach(bn)
        conv.inputs[1] = new_weight
        if len(conv.inputs) > 2:
            conv.inputs[2] = new_bias
        else:
            conv.inputs.append(new_bias)
        conv.outputs[0] = result
        logger.debug("fused BatchNormalization %s into Conv %s", bn.name, conv.name)
