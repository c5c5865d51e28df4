"""The shape rules of ``qdq:decide_by=rules``: verdicts per op and shape, and a pass run that uses them."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from onnxopt.pass_api import PassContext
from onnxopt.passes.quantization.qdq import QdqPass
from onnxopt.passes.quantization.speed_rules import rule_verdict
from tests.passes.quantization.test_qdq import nodes_of
from tests.util import model_from_text


def node(op: str, weight_shape: tuple[int, ...] | None, **attrs) -> gs.Node:
    activation = gs.Variable("x", dtype=np.float32)
    second = gs.Constant("w", np.zeros(weight_shape, np.float32)) if weight_shape else gs.Variable("y")
    return gs.Node(op, "n", attrs=attrs, inputs=[activation, second], outputs=[gs.Variable("out")])


def test_verdicts_follow_the_measured_shapes():
    assert rule_verdict(node("MatMul", (384, 1536)))[0]
    assert not rule_verdict(node("MatMul", (768, 96)))[0]  # a narrow head: conversions cost more
    assert not rule_verdict(node("MatMul", None))[0]  # two activations
    assert rule_verdict(node("Gemm", (1024, 768), transB=1))[0]
    assert not rule_verdict(node("Gemm", (100, 1024), transB=1))[0]  # N = 100 after transB
    assert rule_verdict(node("Conv", (128, 64, 3, 3)))[0]
    depthwise, reason = rule_verdict(node("Conv", (96, 1, 3, 3), group=96))
    assert not depthwise and "depthwise" in reason
    assert not rule_verdict(node("Conv", (16, 3, 3, 3)))[0]


TWO_LAYERS = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[1, 8, 256] x) => (float[1, 8, 32] y)
<float[256, 256] w1 = {W1}, float[256, 32] w2 = {W2}>
{{
    [big] h = MatMul(x, w1)
    [narrow] y = MatMul(h, w2)
}}
"""


def test_rules_mode_times_nothing_and_reports_each_decision():
    rng = np.random.default_rng(0)
    text = TWO_LAYERS.format(W1="{" + ", ".join(f"{v:.3f}" for v in rng.standard_normal(256 * 256)) + "}",
                             W2="{" + ", ".join(f"{v:.3f}" for v in rng.standard_normal(256 * 32)) + "}")
    model = model_from_text(text)
    work = model.copy()
    result = QdqPass(QdqPass.make_options({"mode": "dynamic", "decide_by": "rules"})).run(work, PassContext())
    assert result.modified and result.stats["decided_by"] == "rules"
    assert "variant_time_ratios" not in result.stats
    assert all("time_ratio" not in row for row in result.stats["decisions"])
    decisions = {entry["node"]: entry for entry in result.stats["decisions"]}
    assert decisions["big"]["decision"] == "int8" and decisions["narrow"]["decision"] == "float"
    assert decisions["narrow"]["reason"] and result.stats["float_by_rule"] == 1
    assert len(nodes_of(work, "MatMulInteger")) == 1
    assert work.metadata_props["onnxopt.int8.decided_by"] == "rules"
