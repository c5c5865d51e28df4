"""The fp16 pass on real models: the digits CNN, onnx's shipped models, external data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest

from bench.fp16_sweep import FP16_TOLERANCE, check_model, sweep_models
from onnxopt.data import make_feeds
from onnxopt.examples import __file__ as examples_init
from onnxopt.external_data import is_external
from onnxopt.fp16_judge import judge_run
from onnxopt.model_io import load, save, to_proto
from tests.passes.precision.helpers import F16, assert_close, assert_consistent, convert
from tests.util import DATA_DIR, model_from_text, outputs

DIGITS_MODEL = Path(examples_init).resolve().parent / "digits_cnn.onnx"
MAX_ACCURACY_DROP = 0.005  # the issue's ±0.5 point


def _accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float((logits.argmax(axis=1) == labels).mean())


@pytest.fixture(scope="module")
def digits():
    model = load(DIGITS_MODEL)
    test = np.load(DATA_DIR / "digits_test.npz")
    calib = make_feeds(to_proto(model), DATA_DIR / "digits_calib.npz", batch_size=32)
    converted, result = convert(model, data=calib)
    return model, converted, result, test["input"], test["labels"]


def test_digits_cnn_keeps_its_accuracy_under_onnxruntime_and_the_judge(digits):
    model, converted, result, images, labels = digits
    assert result.stats["nodes_fp32"] == 0 and result.stats["activation_ranges"] == "4 batch(es) of calibration data"
    assert all(t == F16 for t in {i.data_type for i in to_proto(converted).graph.initializer})
    baseline = _accuracy(outputs(model, {"input": images})["logits"], labels)
    assert baseline > 0.98
    runtime = _accuracy(outputs(converted, {"input": images})["logits"], labels)
    judged = _accuracy(judge_run(converted, {"input": images})["logits"], labels)
    assert abs(runtime - baseline) <= MAX_ACCURACY_DROP
    assert abs(judged - baseline) <= MAX_ACCURACY_DROP
    assert_consistent(converted)


def test_digits_cnn_file_is_half_the_size(digits, tmp_path):
    _, converted, _, _, _ = digits
    info = save(converted, tmp_path / "digits_fp16.onnx")
    assert info.bytes_written <= 0.51 * DIGITS_MODEL.stat().st_size
    reloaded = load(tmp_path / "digits_fp16.onnx")
    assert_consistent(reloaded)


def test_external_data_model_round_trip(tmp_path):
    rng = np.random.default_rng(3)
    model = model_from_text("""<ir_version:8, opset_import:["":17]>
    g (float[2,64] x) => (float[2,64] y) {
      h = MatMul(x, w1)
      r = Relu(h)
      y = MatMul(r, w2)
    }""")
    for node in model.graph.nodes:
        if node.op == "MatMul":
            node.inputs[1] = gs.Constant(node.inputs[1].name, (rng.standard_normal((64, 64)) * 0.2).astype(np.float32))
    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    save(model, tmp_path / "in" / "model.onnx", external_data=True)
    source = load(tmp_path / "in" / "model.onnx")
    assert source.had_external_data
    feed = {"x": rng.standard_normal((2, 64)).astype(np.float32)}
    converted, result = convert(source, data=[feed])
    assert result.stats["constants_converted"] == 2
    info = save(converted, tmp_path / "out" / "model.onnx")
    assert info.external_data_path is not None
    assert info.external_data_path.stat().st_size == 2 * 64 * 64 * 2  # two fp16 weights
    written = onnx.load(str(tmp_path / "out" / "model.onnx"), load_external_data=False)
    assert {(t.name, t.data_type, is_external(t)) for t in written.graph.initializer} == {
        ("w1", F16, True), ("w2", F16, True)}
    reloaded = load(tmp_path / "out" / "model.onnx")
    assert_consistent(reloaded)
    assert_close(source, reloaded, feed)


FAST_SWEEP = ("light_squeezenet", "test_Conv2d_groups", "test_ConvTranspose2d", "test_LogSoftmax",
              "test_PixelShuffle", "test_BatchNorm2d_eval", "test_Embedding")


def _by_name(name: str) -> Path:
    return next(path for path in sweep_models() if name in (path.stem, path.parent.name))


@pytest.mark.parametrize("keep_io_types", [True, False], ids=["fp32-io", "half-io"])
@pytest.mark.parametrize("name", FAST_SWEEP)
def test_backend_models_convert_and_stay_close(name, keep_io_types):
    result = check_model(_by_name(name), judge=not name.startswith("light"), keep_io_types=keep_io_types)
    assert not result.skipped
    assert result.finite
    assert result.relative_error <= FP16_TOLERANCE
    if result.judge_error is not None:
        assert result.judge_error <= FP16_TOLERANCE
    if not keep_io_types:
        assert result.nodes_half > 0  # with half inputs even a single op runs in half


@pytest.mark.slow
def test_every_backend_model_converts_and_stays_close():
    paths = sweep_models()
    assert len(paths) > 80
    worst = 0.0
    for path in paths:
        for keep_io_types in (True, False):
            result = check_model(path, judge=path.parent.name != "light", keep_io_types=keep_io_types)
            assert not result.skipped, result.skipped
            assert result.finite, result.name
            assert result.relative_error <= FP16_TOLERANCE, (result.name, result.relative_error)
            if result.judge_error is not None:
                assert result.judge_error <= FP16_TOLERANCE, (result.name, result.judge_error)
            worst = max(worst, result.relative_error)
    assert worst > 0  # the sweep compared something
