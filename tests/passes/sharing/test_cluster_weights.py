"""cluster-weights: k-means quality, the emitted graph (bit-exact with its numpy decoding, folded by
onnxruntime), sizes, data-aware fitting, refusals, real models and the real CLI."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnx.numpy_helper
import onnx.parser
import onnxruntime as ort
import pytest
from click.testing import CliRunner

from onnxopt.cli import cli
from onnxopt.data import make_feeds
from onnxopt.errors import BadInputError
from onnxopt.model_io import Model, from_proto, load, model_file_bytes, save, to_proto
from onnxopt.pass_api import Contract, PassContext
from onnxopt.passes import PRESETS, get_pass
from onnxopt.passes.sharing.cluster_plan import GroupLayout
from onnxopt.passes.sharing.cluster_weights import ClusterWeights
from onnxopt.passes.sharing.kmeans import fit_codebooks, nearest_indices
from onnxopt.runtime import create_session, run_session
from tests.util import assert_bit_exact, op_types, outputs, run_pass

RNG = np.random.default_rng(5)
# Mean squared error of the optimal 16-level quantizer of a unit Gaussian (Lloyd-Max).
LLOYD_MAX_16_GAUSSIAN = 0.009497


def _model(text: str, weights: dict[str, np.ndarray]) -> Model:
    proto = onnx.parser.parse_model(text)
    proto.graph.initializer.extend(onnx.numpy_helper.from_array(value, name) for name, value in weights.items())
    return from_proto(proto)


def _matmul(k: int = 96, n: int = 64, opset: int = 17, weight: np.ndarray | None = None) -> Model:
    weight = RNG.standard_normal((k, n)).astype(np.float32) * 0.1 if weight is None else weight
    return _model(f"""
        <ir_version: 8, opset_import: ["" : {opset}]>
        g (float[batch, {k}] x) => (float[batch, {n}] y) {{
            y = MatMul(x, w)
        }}
    """, {"w": weight})


def _rebuilt_weight(model: Model, name: str = "w") -> np.ndarray:
    """The dense weight the clustered graph computes, read from onnxruntime itself."""
    proto = to_proto(model)
    proto.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    session = create_session(proto)
    feed = {i.name: np.zeros([d if isinstance(d, int) else 1 for d in i.shape], np.float32)
            for i in session.get_inputs()}
    return session.run([name], feed)[0]


def _folded_ops(model: Model) -> list[str]:
    """Ops left after onnxruntime's basic graph optimizations (constant folding) at session load."""
    with tempfile.TemporaryDirectory() as folder:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.optimized_model_filepath = str(Path(folder) / "folded.onnx")
        ort.InferenceSession(to_proto(model).SerializeToString(), options, providers=["CPUExecutionProvider"])
        return [node.op_type for node in onnx.load(options.optimized_model_filepath).graph.node]


# --- k-means ----------------------------------------------------------------------------


def test_kmeans_reaches_the_optimal_quantizer_of_a_gaussian():
    values = RNG.standard_normal((3, 30000))
    fitted = fit_codebooks(values, 16, storage_dtype=np.float64)
    mse = float(np.mean((fitted.decode() - values) ** 2))
    assert LLOYD_MAX_16_GAUSSIAN * 0.98 <= mse < LLOYD_MAX_16_GAUSSIAN * 1.03
    assert np.all(np.diff(fitted.centroids, axis=1) >= 0)
    np.testing.assert_array_equal(fitted.indices, nearest_indices(values, fitted.centroids))


def test_kmeans_is_exact_on_few_values_and_keeps_a_pinned_zero():
    few = RNG.choice([-1.5, 0.25, 3.0], size=(4, 200))
    np.testing.assert_array_equal(fit_codebooks(few, 4).decode(), few)
    pruned = RNG.standard_normal((2, 1000))
    pruned[:, ::2] = 0.0
    fitted = fit_codebooks(pruned, 8, pin_zero=np.array([True, True]))
    assert np.all(fitted.decode()[pruned == 0.0] == 0.0)


def test_importance_weights_buy_accuracy_where_they_are_large():
    """Heavily weighted elements (here: those between 0.3 and 0.9) draw entries towards them."""
    values = RNG.standard_normal((1, 4000))
    important = (values > 0.3) & (values < 0.9)
    plain = fit_codebooks(values, 8).decode()
    weighted = fit_codebooks(values, 8, weights=np.where(important, 100.0, 1.0)).decode()

    def error(rebuilt: np.ndarray, where: np.ndarray) -> float:
        return float(np.mean((rebuilt[where] - values[where]) ** 2))

    assert error(weighted, important) < 0.5 * error(plain, important)
    assert error(weighted, ~important) > error(plain, ~important)  # paid for by the others


@pytest.mark.parametrize(("shape", "out_axis", "in_axis", "channels", "rows"), [
    ((12, 8), 1, 0, 1, 12), ((12, 8), 1, 0, 2, 4), ((12, 8), 1, 0, 8, 3), ((12, 8), 0, 1, 4, 8),
    ((12, 8), 0, 1, 2, 2), ((6, 4, 3, 3), 0, None, 2, 0), ((30, 8), 1, 0, 8, 30),
])
def test_group_layout_round_trips_by_the_graphs_steps(shape, out_axis, in_axis, channels, rows):
    layout = GroupLayout(shape, out_axis, in_axis, channels, rows)
    values = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    grouped = layout.to_groups(values)
    assert grouped.shape == (layout.groups, layout.group_size)
    np.testing.assert_array_equal(layout.from_groups(grouped), values)
    if layout.matrix:  # each group holds `channels` output channels and `rows` consecutive reduction rows
        matrix = values if in_axis == 0 else values.T
        np.testing.assert_array_equal(np.sort(grouped[0]), np.sort(matrix[:rows, :channels].reshape(-1)))


# --- the emitted graph --------------------------------------------------------------------


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 6, 7, 8])
@pytest.mark.parametrize("codebook_dtype", ["float16", "int8"])
def test_the_graph_rebuilds_exactly_the_palette_and_onnxruntime_folds_it(bits, codebook_dtype):
    model = _matmul(k=24, n=20)
    new, result = run_pass(ClusterWeights, model, bits=bits, group_channels=4, group_rows=8,
                           codebook_dtype=codebook_dtype, min_weight_elements=16)
    [decision] = result.stats["decisions"]
    assert decision["bits"] == bits and decision["codebook_size"] == 2**bits and decision["codebooks"] == 5 * 3
    rebuilt = _rebuilt_weight(new)
    original = onnx.numpy_helper.to_array(to_proto(model).graph.initializer[0])
    # Every codebook holds at most 2^bits values, and its 8 x 4 elements use no others.
    grouped = GroupLayout((24, 20), 1, 0, 4, 8).to_groups(rebuilt)
    assert max(len(np.unique(row)) for row in grouped) <= 2**bits
    assert np.sqrt(np.mean((rebuilt - original) ** 2)) / np.std(original) < 0.6 / 2 ** (bits - 2)
    feed = {"x": RNG.standard_normal((2, 24)).astype(np.float32)}
    dense = _matmul(k=24, n=20, weight=rebuilt)
    for optimize in (False, True):
        assert_bit_exact(run_session(create_session(dense, optimize=optimize), feed),
                         run_session(create_session(new, optimize=optimize), feed))
    assert _folded_ops(new) == ["MatMul"]


def test_the_weight_leaves_the_file_which_shrinks_to_about_bits_over_32(tmp_path):
    model = _matmul(k=512, n=256)
    save(model, tmp_path / "fp32.onnx")
    new, result = run_pass(ClusterWeights, model, bits=4, group_channels=1)
    save(new, tmp_path / "palette.onnx")
    assert not any(t.name == "w" and t.dtype == np.float32 for t in to_proto(new).graph.initializer)
    ratio = model_file_bytes(tmp_path / "palette.onnx") / model_file_bytes(tmp_path / "fp32.onnx")
    # 4 bits per weight + 16 float16 entries per 512-element column = 4.5 bits of 32.
    assert 4.5 / 32 <= ratio < 4.5 / 32 + 0.01
    payload = 512 * 256 // 2 + 256 * 16 * 2  # packed indices and codebooks; the rest are shift/shape constants
    assert payload <= result.stats["clustered_weight_bytes"] < payload + 256
    ops = op_types(new)
    assert {"BitShift", "Gather", "MatMul"} <= set(ops) and "w" in {n.outputs[0].name for n in new.graph.nodes}


def test_decisions_are_flat_json():
    _, result = run_pass(ClusterWeights, _matmul(), bits=3)
    [decision] = result.stats["decisions"]
    assert json.loads(json.dumps(decision)) == decision
    assert all(isinstance(v, (str, int, float)) for v in decision.values())  # flat: one table row each
    assert decision["shape"] == "96x64"
    assert {"tensor", "bits", "codebook_size", "codebooks", "relative_error", "method"} <= set(decision)
    assert decision["method"] == "kmeans" and 0 < decision["relative_error"] < 0.3


def test_pruned_weights_keep_their_zeros_exact():
    weight = RNG.standard_normal((64, 32)).astype(np.float32)
    weight[RNG.random(weight.shape) < 0.5] = 0.0
    new, _ = run_pass(ClusterWeights, _matmul(64, 32, weight=weight), bits=3, group_channels=1)
    rebuilt = _rebuilt_weight(new)
    np.testing.assert_array_equal(rebuilt[weight == 0.0], 0.0)


# --- data-aware fitting -------------------------------------------------------------------


def _correlated_inputs(k: int, rows: int, seed: int) -> np.ndarray:
    """Hidden-state-like inputs: mixed features with very unequal scales (a few outliers)."""
    rng = np.random.default_rng(seed)
    scale = np.where(np.arange(k) % 16 == 0, 8.0, 1.0) * (0.5 + rng.random(k))
    mixing = np.eye(k) + 0.3 * np.random.default_rng(99).standard_normal((k, k)) / np.sqrt(k)
    return (rng.standard_normal((rows, k)) @ mixing * scale).astype(np.float32)


def test_data_lowers_the_output_error_on_inputs_it_never_saw(tmp_path):
    k, n = 64, 48
    model = _matmul(k, n)
    np.savez(tmp_path / "calib.npz", x=_correlated_inputs(k, 512, seed=1))
    held_out = {"x": _correlated_inputs(k, 256, seed=2)}
    reference = outputs(model, held_out)["y"]
    errors = {}
    for name, data in (("data-free", None), ("data", make_feeds(to_proto(model), tmp_path / "calib.npz",
                                                                     batch_size=64))):
        new = model.copy()
        result = ClusterWeights(ClusterWeights.make_options({"bits": 3, "group_channels": 1})).run(
            new, PassContext(data=data))
        errors[name] = float(np.linalg.norm(outputs(new, held_out)["y"] - reference) / np.linalg.norm(reference))
        if data is not None:
            assert result.stats["decisions"][0]["method"] == "feedback"
            assert result.stats["decisions"][0]["output_error"] > 0
    assert errors["data"] < 0.6 * errors["data-free"], errors


def test_method_feedback_without_data_is_refused():
    with pytest.raises(BadInputError, match="needs calibration data"):
        run_pass(ClusterWeights, _matmul(), method="feedback")


# --- what stays float, and why --------------------------------------------------------------


def test_weights_it_must_not_touch_stay_with_reasons():
    big = RNG.standard_normal((64, 32)).astype(np.float32)
    model = _model("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[2, 64] x, float[64, 32] d) => (float[2, 32] a, float[64, 32] b, float[2, 32] c, float[64, 32] o,
                                              float[2, 8] s) {
            a = MatMul(x, shared)
            b = Add(shared, shared)
            c = MatMul(x, d)
            o = Identity(out_w)
            s = MatMul(x, small)
        }
    """, {"shared": big, "d": big.copy(), "out_w": big.copy(), "small": big[:, :8].copy()})
    assert model.initializer_inputs == ["d"]
    _, result = run_pass(ClusterWeights, model, bits=4, min_weight_elements=1000)
    assert not result.modified
    notes = "\n".join(result.notes)
    assert "shared (weight is also read by Add)" in notes
    assert "d (weight is a graph output or an overridable graph input)" in notes
    assert "small (512 elements, below min_weight_elements=1000)" in notes


def test_an_opset_without_bitshift_is_left_alone():
    _, result = run_pass(ClusterWeights, _matmul(opset=10))
    assert not result.modified and "opset" in result.notes[0]


def test_options_are_checked():
    for bad in ({"bits": 1}, {"bits": 9}, {"codebook_dtype": "int4"}, {"method": "magic"}, {"op_types": "Add"}):
        with pytest.raises(BadInputError):
            run_pass(ClusterWeights, _matmul(), **bad)
    cls = get_pass("cluster-weights")
    assert cls is ClusterWeights and cls.contract is Contract.LOSSY
    assert PRESETS["palettize"][:-1] == [p for p in PRESETS["default"] if p != "share-twins"]
    assert PRESETS["palettize"][-1].startswith("cluster-weights")


# --- real models, external data, the CLI -----------------------------------------------------


def test_digits_cnn_keeps_its_accuracy_at_4_bits(tmp_path):
    from models.digits import RECORDED_ACCURACY, calibration_data, model_path, top1_accuracy

    model = load(model_path())
    np.savez(tmp_path / "calib.npz", **calibration_data())
    data = make_feeds(to_proto(model), tmp_path / "calib.npz", batch_size=32)
    result = ClusterWeights(ClusterWeights.make_options({"bits": 4})).run(model, PassContext(data=data))
    assert {d["op"] for d in result.stats["decisions"]} == {"Conv", "Gemm"}
    save(model, tmp_path / "digits4.onnx")
    assert top1_accuracy(tmp_path / "digits4.onnx") >= RECORDED_ACCURACY - 0.005
    assert model_file_bytes(tmp_path / "digits4.onnx") < 0.2 * model_file_bytes(model_path())


def test_external_data_model_is_clustered_and_runs(tmp_path):
    from models import large_mlp

    source = large_mlp.build(tmp_path / "mlp.onnx", size="tiny")
    model = load(source)
    assert model.had_external_data
    result = ClusterWeights(ClusterWeights.make_options({"bits": 6})).run(model, PassContext())
    assert result.stats["weights_clustered"] == 5
    (tmp_path / "out").mkdir()
    save(model, tmp_path / "out" / "mlp6.onnx")
    assert model_file_bytes(tmp_path / "out" / "mlp6.onnx") < 0.25 * model_file_bytes(source)
    feed = large_mlp.sample_inputs("tiny", batch_size=4)
    before, after = outputs(source, feed)["output"], outputs(tmp_path / "out" / "mlp6.onnx", feed)["output"]
    assert np.linalg.norm(after - before) / np.linalg.norm(before) < 0.05


def test_cli_palettize_preset_with_calibration(tmp_path):
    model = _matmul(k=128, n=64)
    save(model, tmp_path / "in.onnx")
    np.savez(tmp_path / "calib.npz", x=_correlated_inputs(128, 64, seed=3))
    result = CliRunner().invoke(cli, ["optimize", str(tmp_path / "in.onnx"), "-o", str(tmp_path / "out.onnx"),
                                      "--preset", "palettize", "--calib", str(tmp_path / "calib.npz"),
                                      "--report", str(tmp_path / "report.json")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "report.json").read_text())
    [record] = [r for r in report["passes"] if r["name"] == "cluster-weights"]
    assert record["status"] == "ok" and record["stats"]["decisions"][0]["method"] == "feedback"
    assert model_file_bytes(tmp_path / "out.onnx") < 0.3 * model_file_bytes(tmp_path / "in.onnx")
    listing = CliRunner().invoke(cli, ["passes"], catch_exceptions=False)
    assert "cluster-weights" in listing.output and "palettize" in listing.output
