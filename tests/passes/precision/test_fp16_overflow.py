"""A model that overflows fp16 in the middle: onnxconverter-common's conversion produces
Inf/NaN under fp16 semantics, ours stays finite and close to fp32.

The graph scales its input, projects it, and then reduces: ReduceSumSquare and a
LayerNormalization of the projection both need partial sums far beyond 65504, although
every single activation and every output is of ordinary size. onnxruntime on the CPU
hides the problem (it computes those fp16 ops in fp32), so both conversions are judged
with onnx's reference evaluator, which computes fp16 ops in fp16.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import onnx
import onnx.parser
import pytest

from onnxopt.fp16_judge import UnfaithfulJudgeError, judge_run, relative_error
from onnxopt.model_io import Model, from_proto, to_proto
from onnxopt.pass_api import Contract, Pass, PassContext, PassResult
from onnxopt.pass_manager import PassManager
from onnxopt.passes.precision.fp16 import Fp16Pass
from tests.passes.precision.helpers import assert_consistent, convert, kept_reasons
from tests.util import outputs

RNG = np.random.default_rng(2024)
WEIGHTS = RNG.standard_normal((64, 64)) * 0.125


def _floats(values) -> str:
    return ", ".join(f"{v:.6g}" for v in np.ravel(values))


OVERFLOW_MODEL = f"""<ir_version:8, opset_import:["":17]>
g (float[4,64] x) => (float[4,64] unit, float[4,1] norm, float[4,64] normed)
  <float[64,64] w = {{{_floats(WEIGHTS)}}}, float[1] gain = {{60.0}}, float[1] shift = {{1500.0}},
   float[1] inv_scale = {{0.001}}, float[64] ones = {{{_floats(np.ones(64))}}},
   float[64] zeros = {{{_floats(np.zeros(64))}}}> {{
  a = Mul(x, gain)
  h = MatMul(a, w)
  squares = ReduceSumSquare<keepdims=1, axes=[-1]>(h)
  length = Sqrt(squares)
  unit = Div(h, length)
  norm = Mul(length, inv_scale)
  shifted = Add(h, shift)
  normed = LayerNormalization<axis=-1>(shifted, ones, zeros)
}}"""


@pytest.fixture(scope="module")
def overflow_proto() -> onnx.ModelProto:
    proto = onnx.parser.parse_model(OVERFLOW_MODEL)
    for node in proto.graph.node:
        node.name = node.output[0]
    return proto


@pytest.fixture(scope="module")
def feed() -> dict[str, np.ndarray]:
    return {"x": RNG.standard_normal((4, 64)).astype(np.float32)}


def test_theirs_overflows_ours_is_finite_and_close(overflow_proto, feed):
    from onnxconverter_common.float16 import convert_float_to_float16

    expected = outputs(overflow_proto, feed)
    # Sanity of the construction: fp32 outputs are of ordinary size, the middle is not.
    assert all(np.abs(value).max() < 100 for value in expected.values())

    theirs = convert_float_to_float16(overflow_proto, keep_io_types=True)
    judged_theirs = judge_run(theirs, feed)
    assert not np.all(np.isfinite(judged_theirs["norm"]))  # Inf: the sum of squares overflowed
    assert np.isnan(judged_theirs["normed"]).any()  # NaN: the LayerNormalization mean overflowed
    # onnxruntime on the CPU does not show it: it runs these fp16 ops in fp32.
    assert all(np.all(np.isfinite(value)) for value in outputs(theirs, feed).values())

    ours, result = convert(from_proto(overflow_proto), data=[feed])
    judged_ours = judge_run(ours, feed)
    for name, value in expected.items():
        assert np.all(np.isfinite(judged_ours[name])), name
        assert relative_error(value, judged_ours[name]) <= 1e-2, (name, relative_error(value, judged_ours[name]))
    kept = kept_reasons(result)
    assert "reach" in kept["squares"] and "reach" in kept["length"]
    assert "mean/variance sums" in kept["normed"]
    assert {"a", "h", "unit"}.isdisjoint(kept)  # the cheap parts still run in half
    assert_consistent(ours)


def test_the_judge_sees_fp16_overflow_that_onnxruntime_hides():
    proto = onnx.parser.parse_model("""<ir_version:8, opset_import:["":17]>
    g (float[1,4096] x) => (float[1,1] y) {
      h = Cast<to=10>(x)
      s = ReduceSumSquare<keepdims=1, axes=[-1]>(h)
      y = Cast<to=1>(s)
    }""")
    x = np.full((1, 4096), 8.0, dtype=np.float32)  # 4096 * 64 = 262144 > 65504
    assert np.isinf(judge_run(proto, {"x": x})["y"]).all()
    # onnxruntime's CPU kernel computes in fp32 between the casts: a value fp16 cannot hold.
    assert outputs(proto, {"x": x})["y"].item() == 262144.0


def test_the_judge_refuses_when_half_is_not_computed_in_half():
    # The model says 'h' is float16 but the Cast makes float32: an evaluator run that does
    # not produce the declared half type is reported, never silently accepted.
    proto = onnx.parser.parse_model("""<ir_version:8, opset_import:["":17]>
    g (float[2] x) => (float[2] y) <float16[2] h> {
      h = Cast<to=1>(x)
      y = Relu(h)
    }""")
    with pytest.raises(UnfaithfulJudgeError, match="'h'"):
        judge_run(proto, {"x": np.ones(2, dtype=np.float32)})


class _NaiveHalf(Pass):
    """onnxconverter-common's conversion wrapped as a lossy pass, to test the manager's judge."""

    name: ClassVar[str] = "naive-half"
    contract: ClassVar[Contract] = Contract.LOSSY
    cleanup: ClassVar[bool] = False

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        from onnxconverter_common.float16 import convert_float_to_float16

        converted = from_proto(convert_float_to_float16(to_proto(model), keep_io_types=True))
        model.graph = converted.graph
        return PassResult(True)


def test_pass_manager_rolls_back_a_conversion_that_overflows_only_in_true_half(overflow_proto, feed):
    original = from_proto(overflow_proto)
    manager = PassManager([_NaiveHalf()], verify=True, verify_feeds=[feed])
    result, report = manager.run(original.copy())
    record = report.records[0]
    assert record.status == "rolled back"
    assert "fp16-faithful judge" in record.reason and "NaN/Inf" in record.reason
    assert all(node.op != "Cast" for node in result.graph.nodes), "the original model must be kept"
    _, report = PassManager([Fp16Pass()], verify=True, verify_feeds=[feed]).run(original.copy())
    assert report.records[0].status == "ok", report.records[0].reason
