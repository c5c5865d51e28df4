"""strassen-matmul: eligibility, measured decisions that match their numbers, the rewrite, portability."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.numpy_helper
import onnx.parser

from onnxopt import kernels
from onnxopt.graph_edit import all_tensor_names
from onnxopt.model_io import Model, from_proto, to_proto
from onnxopt.pass_api import PassContext
from onnxopt.passes.fastconv.strassen import StrassenMatMul, _replace
from onnxopt.runtime import create_session, run_session
from tests.passes.fastconv.helpers import needs_kernels, relative_error

TEXT = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[batch,96,128] a, float[8,8] s) => (float[batch,96,160] y, float[8,8] t) {
        y = MatMul(a, w)
        t = MatMul(s, s)
    }
"""


def model() -> Model:
    proto = onnx.parser.parse_model(TEXT)
    weight = np.random.default_rng(0).standard_normal((128, 160)).astype(np.float32)
    proto.graph.initializer.append(onnx.numpy_helper.from_array(weight, "w"))
    return from_proto(proto)


def run(model: Model, **options) -> tuple[Model, object]:
    work = model.copy()
    result = StrassenMatMul(StrassenMatMul.make_options(options)).run(work, PassContext())
    return work, result


def test_small_or_non_constant_matmuls_are_not_eligible() -> None:
    _, result = run(model())
    reasons = [d["reason"] for d in result.stats["decisions"]]
    assert reasons == ["smaller than min_dim 512", "right-hand side is not a constant 2-D float32 matrix"]
    assert not result.modified


@needs_kernels
def test_measured_decisions_follow_their_numbers() -> None:
    new, result = run(model(), min_dim=64, rounds=3, batch=2, threads=1)
    decision = result.stats["decisions"][0]
    assert decision["shape"] == {"a": [2, 96, 128], "b": [128, 160], "m": 192}
    assert decision["baseline_ms"] > 0
    assert set(decision["candidates"]) == {"levels1", "levels2"}
    for candidate in decision["candidates"].values():
        assert candidate["best_ms"] > 0 and candidate["rel_error"] < 1e-5
    wins = [name for name, c in decision["candidates"].items() if c["speedup"] >= 1.1 and c["rel_error"] <= 1e-4]
    if decision["decision"] == "keep":
        assert not wins and not result.modified
    else:
        assert wins and f"levels{decision['decision'][-1]}" in wins and result.modified
        assert sorted(node.op for node in new.graph.nodes) == ["MatMul", "StrassenMatMul"]


@needs_kernels
def test_rewrite_keeps_outputs_with_and_without_the_kernels() -> None:
    original = model()
    work = original.copy()
    node = work.graph.nodes[0]
    _replace(work, node, 2, all_tensor_names(work.graph))
    work.graph.toposort()
    proto = to_proto(work)
    onnx.checker.check_model(proto)
    assert sorted(n.op_type for n in proto.graph.node) == ["MatMul", "StrassenMatMul"]
    rng = np.random.default_rng(1)
    feed = {"a": rng.standard_normal((3, 96, 128)).astype(np.float32),
            "s": rng.standard_normal((8, 8)).astype(np.float32)}
    expected = run_session(create_session(original), feed)["y"]
    before = kernels.calls("StrassenMatMul")
    assert relative_error(run_session(create_session(work), feed)["y"], expected) < 1e-5
    assert kernels.calls("StrassenMatMul") == before + 1
    assert relative_error(run_session(create_session(work, use_kernels=False), feed)["y"], expected) < 1e-6
