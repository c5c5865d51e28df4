"""Helpers shared by the fp16 tests: run the pass, inspect the result, compare numerics."""

from __future__ import annotations

import numpy as np
import onnx

from onnxopt.fp16_judge import judge_run, relative_error
from onnxopt.model_io import Model, check_proto, to_proto
from onnxopt.pass_api import PassContext, PassResult
from onnxopt.passes.precision.fp16 import Fp16Pass
from onnxopt.passes.precision.tensor_types import type_conflict
from tests.util import outputs

F32, F16, BF16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16
# fp16 keeps 11 significant bits: one rounding is <= 4.9e-4 relative; these small graphs
# chain a handful, so 4e-3 passes a correct conversion and fails a wrong one (a weight left
# unconverted is not an error, but a wrong cast or value is off by far more).
FP16_REL = 4e-3
BF16_REL = 3e-2  # bfloat16 keeps 8 significant bits


def convert(model: Model, data=None, **options) -> tuple[Model, PassResult]:
    """Run the fp16 pass on a copy of ``model``."""
    work = model.copy()
    instance = Fp16Pass(Fp16Pass.make_options(options) if options else None)
    result = instance.run(work, PassContext(data=data))
    return work, result


def initializer_types(model: Model) -> dict[str, int]:
    return {init.name: init.data_type for init in to_proto(model).graph.initializer}


def io_types(model: Model) -> tuple[list[int], list[int]]:
    proto = to_proto(model)
    return ([v.type.tensor_type.elem_type for v in proto.graph.input],
            [v.type.tensor_type.elem_type for v in proto.graph.output])


def cast_nodes(graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    return [node for node in graph.node if node.op_type == "Cast"]


def cast_chains(graph: onnx.GraphProto) -> list[tuple[str, str]]:
    """Pairs of Casts where one feeds the other directly."""
    produced_by_cast = {node.output[0]: node.name for node in cast_nodes(graph)}
    return [(produced_by_cast[node.input[0]], node.name)
            for node in cast_nodes(graph) if node.input[0] in produced_by_cast]


def node_by_output(graph: onnx.GraphProto, output: str) -> onnx.NodeProto:
    return next(node for node in graph.node if output in node.output)


def kept_reasons(result: PassResult) -> dict[str, str]:
    return {row["node"]: row["reason"] for row in result.stats["decisions"]}


def assert_consistent(model: Model) -> None:
    """Declared types agree with the ops (strict inference) and onnx's checker accepts the model."""
    assert type_conflict(model) is None
    check_proto(to_proto(model), "converted model")  # onnx.checker on a weight-stripped copy


def assert_close(original: Model, converted: Model, feed: dict[str, np.ndarray], rel: float = FP16_REL,
                 judge: bool = True) -> dict[str, float]:
    """Outputs of ``converted`` within ``rel`` of the fp32 model under onnxruntime and, when
    ``judge``, under the fp16-faithful reference evaluator. Returns the judged errors."""
    expected = outputs(original, feed)
    actual = outputs(converted, feed)
    errors = {}
    for name, value in expected.items():
        assert actual[name].dtype == value.dtype, name
        assert relative_error(value, actual[name]) <= rel, (name, relative_error(value, actual[name]))
    if judge:
        judged = judge_run(converted, feed)
        for name, value in expected.items():
            errors[name] = relative_error(value, judged[name])
            assert errors[name] <= rel, (name, errors[name])
    return errors
