"""int8 on the real sample models: accuracy of the trained ones, TensorRT lint on all of them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.cache import cached_model
from models.digits import CALIBRATION_PATH, RECORDED_ACCURACY, model_path, top1_accuracy
from models.evaluate import minilm_cosine, sample_feeds
from onnxopt.api import optimize
from onnxopt.cpu_features import host_cpu
from onnxopt.data import make_feeds
from onnxopt.model_io import load, read_proto, save
from onnxopt.pass_api import PassContext
from onnxopt.passes.quantization.qdq import QdqPass
from onnxopt.target_rules import check_model
from tests.util import DATA_DIR

MINILM_CALIBRATION = DATA_DIR / "minilm_calib.npz"


def quantize_file(source: Path, target: Path, data: Path | None, **options) -> dict:
    model = load(source)
    feeds = make_feeds(read_proto(source), data, 1) if data is not None else None
    result = QdqPass(QdqPass.make_options(options)).run(model, PassContext(data=feeds))
    assert result.modified, result.notes
    save(model, target)
    return result.stats


def test_digits_int8_keeps_accuracy(tmp_path):
    fp32 = top1_accuracy(model_path())
    assert fp32 == pytest.approx(RECORDED_ACCURACY, abs=1e-3)
    target = tmp_path / "digits_int8.onnx"
    stats = quantize_file(model_path(), target, CALIBRATION_PATH, only_if_faster=False)
    assert stats["quantized_by_op"] == {"Conv": 3, "Gemm": 2}
    assert top1_accuracy(target) >= fp32 - 0.01


@pytest.mark.parametrize("mode", ["static", "dynamic"])
def test_minilm_int8_embeddings_stay_close(tmp_path, mode):
    # The reference sentences are not the calibration sentences.
    target = tmp_path / f"minilm_{mode}.onnx"
    stats = quantize_file(cached_model("minilm"), target, MINILM_CALIBRATION, mode=mode, only_if_faster=False,
                          calibration_batches=16)
    assert stats["quantized_by_op"]["MatMul"] >= 36
    assert stats["smoothed_inputs"] > 0
    cosine = minilm_cosine(target)
    assert cosine["mean_cosine"] >= 0.995, (cosine, host_cpu().describe())


SAMPLE_MODELS = ["resnet18", "resnet50", "mobilenetv2", "bert", "gpt2", "large_mlp", "minilm"]


@pytest.mark.parametrize("name", SAMPLE_MODELS)
def test_int8_tensorrt_preset_output_passes_the_tensorrt_lint(tmp_path, name):
    source = cached_model(name, "tiny")
    if name == "minilm":
        calibration = MINILM_CALIBRATION
    else:
        feeds = sample_feeds(name, "tiny", batch_size=1, count=4, seed=50)
        calibration = tmp_path / "calib.npz"
        np.savez(calibration, **{key: np.concatenate([feed[key] for feed in feeds]) for key in feeds[0]})
    target = tmp_path / f"{name}_trt.onnx"
    result = optimize(source, target, preset="int8-tensorrt", calib=calibration,
                      overrides=["qdq.calibration_batches=8"])
    record = next(r for r in result.report.records if r.name == "qdq")
    assert record.status == "ok", record.reason
    assert record.stats["quantized_nodes"] > 0
    assert check_model(target, "tensorrt") == []


def test_digits_int8_tensorrt_passes_lint_and_uint8_does_not(tmp_path):
    trt = tmp_path / "digits_trt.onnx"
    optimize(model_path(), trt, preset="int8-tensorrt", calib=CALIBRATION_PATH)
    assert check_model(trt, "tensorrt") == []
    asymmetric = tmp_path / "digits_uint8.onnx"
    optimize(model_path(), asymmetric, preset="int8-tensorrt", calib=CALIBRATION_PATH,
             overrides=["qdq.activation_type=uint8"])
    assert any(v.rule == "int8-only" for v in check_model(asymmetric, "tensorrt"))
    assert top1_accuracy(trt) >= RECORDED_ACCURACY - 0.01


def test_minilm_int8_preset_without_any_data_stays_close(tmp_path):
    # No DATA at all: dynamic int8, outlier smoothing measured on random ids through the real embeddings.
    target = tmp_path / "minilm_int8_nodata.onnx"
    result = optimize(cached_model("minilm_pooled"), target, preset="int8")
    record = next(r for r in result.report.records if r.name == "qdq")
    assert record.status == "ok" and record.stats["mode"] == "dynamic", record.reason
    assert any("random token ids" in note for note in record.notes)
    assert record.stats["smoothed_inputs"] > 0
    cosine = minilm_cosine(target)
    assert cosine["mean_cosine"] >= 0.995, (cosine, host_cpu().describe())
