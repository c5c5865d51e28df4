"""The qdq pass: dynamic int8, the speed check, sensitivity fallback and outlier smoothing."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from onnxopt.error_budget import cosine_distance, relative_l2
from onnxopt.model_io import Model, to_proto
from onnxopt.pass_api import PassContext
from onnxopt.passes.quantization.qdq import QdqPass
from onnxopt.runtime import session_options
from tests.passes.quantization.test_qdq import nodes_of, relative_error, run_qdq, tensor_text
from tests.util import model_from_text, outputs

RNG = np.random.default_rng(11)
HIDDEN = 256


def linear_text(rows: int = 64) -> str:
    w1 = (RNG.standard_normal((HIDDEN, HIDDEN)) / np.sqrt(HIDDEN)).astype(np.float32)
    w2 = (RNG.standard_normal((HIDDEN, HIDDEN)) / np.sqrt(HIDDEN)).astype(np.float32)
    bias = (RNG.standard_normal(HIDDEN) * 0.1).astype(np.float32)
    return f"""
<ir_version: 8, opset_import: ["" : 17]>
mlp (float[1, {rows}, {HIDDEN}] x) => (float[1, {rows}, {HIDDEN}] y)
<{tensor_text("w1", w1)}, {tensor_text("w2", w2)}, {tensor_text("bias", bias)}>
{{
    [up] h = MatMul(x, w1)
    hb = Add(h, bias)
    a = Relu(hb)
    [down] y = MatMul(a, w2)
}}
"""


LINEAR_TEXT = linear_text()


def linear_feeds(count: int = 4, seed: int = 4, outlier_channel: int | None = None) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    feeds = []
    for _ in range(count):
        x = rng.standard_normal((1, 64, HIDDEN)).astype(np.float32)
        if outlier_channel is not None:
            x[..., outlier_channel] *= 60.0
        feeds.append({"x": x})
    return feeds


def ort_optimized_op_types(model: Model, tmp_path) -> list[str]:
    import onnxruntime as ort

    options = session_options(optimize=True)
    target = tmp_path / "optimized.onnx"
    options.optimized_model_filepath = str(target)
    ort.InferenceSession(to_proto(model).SerializeToString(), options, providers=["CPUExecutionProvider"])
    return [node.op_type for node in onnx.load(str(target)).graph.node]


def test_dynamic_without_data_rewrites_matmuls_onnxruntime_fuses(tmp_path):
    model = model_from_text(LINEAR_TEXT)
    work = model.copy()
    result = QdqPass(QdqPass.make_options({"only_if_faster": False})).run(work, PassContext())
    assert result.modified and result.stats["mode"] == "dynamic"
    assert [node.op for node in work.graph.nodes].count("DynamicQuantizeLinear") == 2
    integer = nodes_of(work, "MatMulInteger")
    assert len(integer) == 2
    for node in integer:
        assert node.inputs[1].values.dtype == np.int8
        assert node.inputs[3].values.shape == (HIDDEN,)  # per-column zero points
    assert not nodes_of(work, "MatMul")
    # onnxruntime turns each DynamicQuantizeLinear -> MatMulInteger -> Cast -> Mul into one kernel.
    fused = ort_optimized_op_types(work, tmp_path)
    assert fused.count("DynamicQuantizeMatMul") == 2 and "MatMulInteger" not in fused
    feed = linear_feeds(1, seed=8)[0]
    error = relative_error(outputs(model, feed)["y"], outputs(work, feed)["y"])
    assert 0 < error < 0.03


def test_dynamic_gemm_folds_alpha_beta_and_transposed_weights():
    w = tensor_text("w", (RNG.standard_normal((5, 12)) * 0.4).astype(np.float32))
    c = tensor_text("c", (RNG.standard_normal(5) * 0.1).astype(np.float32))
    model = model_from_text(f"""
<ir_version: 8, opset_import: ["" : 17]>
gemm (float[3, 12] x) => (float[3, 5] y)
<{w}, {c}>
{{
    y = Gemm <transB = 1, alpha = 0.5, beta = 2.0> (x, w, c)
}}
""")
    work = model.copy()
    QdqPass(QdqPass.make_options({"mode": "dynamic", "only_if_faster": False})).run(work, PassContext())
    assert tuple(nodes_of(work, "MatMulInteger")[0].inputs[1].shape) == (12, 5)
    feed = {"x": RNG.standard_normal((3, 12)).astype(np.float32)}
    assert relative_error(outputs(model, feed)["y"], outputs(work, feed)["y"]) < 0.02


def test_speed_check_keeps_int8_that_runs_faster():
    model = model_from_text(LINEAR_TEXT)
    _work, result = run_qdq(model, linear_feeds(), only_if_faster=True, mode="dynamic")
    # Two 64x256x256 MatMuls run about 3x faster in int8 on a VNNI CPU; the check must keep them.
    # Dynamic MatMuls are pre-selected by the shape rules (no islands); the whole model decides.
    assert result.modified
    assert result.stats["int8_over_fp32_time"] < 1.0
    rows = {row["node"]: row for row in result.stats["decisions"]}
    assert set(rows) == {"up", "down"} and {row["decision"] for row in rows.values()} == {"int8"}
    assert result.stats["preselected_by_rules"] == 2 and all("time_ratio" not in row for row in rows.values())
    assert set(result.stats["variant_time_ratios_by_threads"]) == {1, "default"}


def test_sensitivity_fallback_leaves_the_worst_layer_float():
    model = model_from_text(LINEAR_TEXT)
    feeds = linear_feeds(outlier_channel=5)  # one huge channel ruins the per-tensor scale of "up"
    _, unconstrained = run_qdq(model, feeds, mode="static", method="minmax", smooth_alpha=0.0)
    assert unconstrained.stats["quantized_nodes"] == 2
    full_error = relative_l2([outputs(model, f) for f in feeds[:2]],
                             [outputs(run_qdq(model, feeds, mode="static", method="minmax", smooth_alpha=0.0)[0], f)
                              for f in feeds[:2]])
    budget = full_error / 3
    work, result = run_qdq(model, feeds, mode="static", method="minmax", smooth_alpha=0.0, max_error=budget,
                           sensitivity_batches=2)
    assert result.stats["sensitivity_fallback"] == 1
    rows = {row["node"]: row for row in result.stats["decisions"]}
    assert rows["up"]["decision"] == "float" and "accuracy" in rows["up"]["reason"]
    assert rows["down"]["decision"] == "int8"
    assert rows["up"]["sensitivity"] > rows["down"]["sensitivity"], "the outlier layer hurts most on its own"
    assert result.stats["output_error"] <= budget < result.stats["output_error_all_quantized"]
    assert "up" in result.notes[-1]
    up = next(node for node in work.graph.nodes if node.name == "up")
    assert up.inputs[1].inputs == []  # float weight, no DequantizeLinear
    down = next(node for node in work.graph.nodes if node.name == "down")
    assert down.inputs[1].inputs[0].op == "DequantizeLinear"


def test_user_metric_drives_the_fallback(tmp_path, monkeypatch):
    (tmp_path / "my_metric.py").write_text(
        "import numpy as np\n"
        "def worst(references, candidates):\n"
        "    return max(float(np.abs(c['y'] - r['y']).max()) for r, c in zip(references, candidates))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    model = model_from_text(LINEAR_TEXT)
    _, result = run_qdq(model, linear_feeds(outlier_channel=5), mode="static", smooth_alpha=0.0,
                        metric="my_metric:worst", max_error=1e-9, sensitivity_batches=1)
    # Nothing meets an impossible budget: every layer goes back to float and the model is unchanged.
    assert not result.modified
    assert result.stats["sensitivity_fallback"] == 2
    assert {row["node"]: row["decision"] for row in result.stats["decisions"]} == {"down": "float", "up": "float"}


def test_smoothing_moves_an_outlier_channel_into_the_weights():
    model = model_from_text(LINEAR_TEXT)
    feeds = linear_feeds(count=6, outlier_channel=5)
    plain, _ = run_qdq(model, feeds, mode="dynamic", smooth_alpha=0.0)
    smoothed, result = run_qdq(model, feeds, mode="dynamic")
    assert result.stats["smoothed_inputs"] >= 1
    smooth_mul = [node for node in smoothed.graph.nodes if node.op == "Mul" and node.name.startswith("x_smooth")]
    assert len(smooth_mul) == 1
    test = linear_feeds(count=3, seed=99, outlier_channel=5)
    reference = [outputs(model, f) for f in test]
    plain_error = cosine_distance(reference, [outputs(plain, f) for f in test])
    smoothed_error = cosine_distance(reference, [outputs(smoothed, f) for f in test])
    assert smoothed_error < 0.5 * plain_error


def test_smoothing_is_exact_in_float():
    from onnxopt.passes.quantization.smoothing import apply_smoothing, choose_smoothing, smoothing_candidates

    model = model_from_text(LINEAR_TEXT)
    feeds = linear_feeds(count=3, outlier_channel=5)
    groups = smoothing_candidates(model.graph, ["up", "down"])
    chosen = choose_smoothing(model, groups, feeds, dynamic=True)
    assert chosen and chosen[0].tensor == "x"
    smoothed = apply_smoothing(model, chosen)
    feed = feeds[0]
    np.testing.assert_allclose(outputs(smoothed, feed)["y"], outputs(model, feed)["y"], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("metric", ["rel_l2", "cosine", "max_abs"])
def test_error_metrics_are_zero_on_identical_outputs(metric):
    from onnxopt.error_budget import error_function

    values = [{"y": np.arange(6, dtype=np.float32).reshape(2, 3) + 1}]
    shifted = [{"y": values[0]["y"] + 0.5}]
    function = error_function(metric)
    assert function(values, values) == pytest.approx(0.0, abs=1e-12)
    assert function(values, shifted) > 0
