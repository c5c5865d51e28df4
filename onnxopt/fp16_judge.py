"""Judge half-precision models with half-precision semantics.

onnxruntime on the CPU runs many float16 ops in fp32: it wraps ops that lack fp16
kernels in Casts and then drops the cancelling Cast pairs, so a model whose fp16
activations overflow to Inf on a GPU can look perfect on the CPU. To verify a conversion
we therefore run it under onnx's ``ReferenceEvaluator`` (numpy), which computes fp16 and
bf16 ops in their own type — sums and matmuls accumulate in half, so it is stricter than
GPU kernels that accumulate in fp32.

The evaluator is only faithful if every op implementation keeps half tensors half. We
check that on every run: each intermediate tensor that the model types as float16 or
bfloat16 must come back with that dtype, otherwise ``UnfaithfulJudgeError`` names the op
that upcast. The evaluator is slow (pure numpy, no fusion): use it on small models and
small batches.
"""

from __future__ import annotations

import os
from pathlib import Path

import ml_dtypes
import numpy as np
import onnx
import onnx.external_data_helper
from onnx.reference import ReferenceEvaluator

from onnxopt.external_data import is_external
from onnxopt.model_io import Model, iter_model_tensor_protos, to_proto

_HALF_DTYPES = {
    onnx.TensorProto.FLOAT16: np.dtype(np.float16),
    onnx.TensorProto.BFLOAT16: np.dtype(ml_dtypes.bfloat16),
}


class UnfaithfulJudgeError(RuntimeError):
    """An op implementation of the reference evaluator left half precision."""


def _as_proto(model: Model | onnx.ModelProto | str | os.PathLike[str]) -> onnx.ModelProto:
    if isinstance(model, Model):
        proto = to_proto(model)
        if model.base_dir is not None and any(is_external(t) for t in iter_model_tensor_protos(proto)):
            # The evaluator needs the values in the proto; the judge is for small models.
            onnx.external_data_helper.load_external_data_for_model(proto, str(model.base_dir))
        return proto
    if isinstance(model, onnx.ModelProto):
        return model
    return onnx.load(str(Path(model)))


def _half_tensors(proto: onnx.ModelProto) -> dict[str, tuple[np.dtype, str]]:
    """Main-graph tensors typed half (declared or inferred), with the op that makes each."""
    inferred = onnx.shape_inference.infer_shapes(proto, strict_mode=False)
    producers = {out: node.op_type for node in inferred.graph.node for out in node.output}
    found = {}
    for value in list(inferred.graph.value_info) + list(inferred.graph.output):
        if value.type.HasField("tensor_type"):
            dtype = _HALF_DTYPES.get(value.type.tensor_type.elem_type)
            if dtype is not None and value.name in producers:
                found[value.name] = (dtype, producers[value.name])
    return found


def judge_run(
    model: Model | onnx.ModelProto | str | os.PathLike[str], feed: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Outputs of ``model`` on ``feed`` computed by the reference evaluator in half precision.

    Raises UnfaithfulJudgeError when an op computed a half tensor in another type.
    """
    proto = _as_proto(model)
    half_tensors = _half_tensors(proto)
    evaluator = ReferenceEvaluator(proto)
    with np.errstate(all="ignore"):
        results = evaluator.run(None, feed, intermediate=True)
    for name, (dtype, op) in half_tensors.items():
        value = results.get(name)
        if value is not None and np.asarray(value).dtype != dtype:
            raise UnfaithfulJudgeError(
                f"reference {op} computed {name!r} as {np.asarray(value).dtype}, the model says {dtype}"
            )
    return {output.name: np.asarray(results[output.name]) for output in proto.graph.output}


def relative_error(reference: np.ndarray, actual: np.ndarray) -> float:
    """max |actual - reference| / max |reference| (inf when actual has NaN/Inf)."""
    reference = np.asarray(reference, dtype=np.float64)
    actual = np.asarray(actual, dtype=np.float64)
    if not np.all(np.isfinite(actual)):
        return float("inf")
    scale = float(np.abs(reference).max()) if reference.size else 0.0
    error = float(np.abs(actual - reference).max()) if reference.size else 0.0
    return error / scale if scale > 0 else error
