"""``onnxopt tune`` and ``onnxopt batch`` through the real CLI (click's CliRunner and a subprocess)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
from click.testing import CliRunner

from onnxopt.cli import cli
from tests.cli.test_cli import duplicated_model

DATA = Path(__file__).resolve().parents[1] / "data"
DIGITS = [str(DATA / "digits_cnn.onnx"), "--data", str(DATA / "digits_test.npz"), "--calib",
          str(DATA / "digits_calib.npz")]


def test_tune_writes_the_best_model_the_report_and_prints_the_front(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["tune", *DIGITS, "-o", str(tmp_path / "best.onnx"), "--metric", "accuracy",
                                      "--max-error", "0.005", "--objective", "size", "--search-passes", "fp16",
                                      "--trials", "3", "--runs", "10", "--cache-dir", str(tmp_path / "cache"),
                                      "--report", str(tmp_path / "tune.html")])
    assert result.exit_code == 0, result.output
    assert "Pareto front" in result.output and "★" in result.output and "wrote" in result.output
    onnx.checker.check_model(onnx.load(str(tmp_path / "best.onnx")))
    page = (tmp_path / "tune.html").read_text()
    # The report package's tune page: the error-vs-size scatter, every trial a point, the best named.
    assert "error vs size_bytes" in page and page.count("class='point") + page.count('class="point') >= 2
    assert "best within budget" in page and "fp16" in page
    again = CliRunner().invoke(cli, ["tune", *DIGITS, "-o", str(tmp_path / "best.onnx"), "--metric", "accuracy",
                                     "--max-error", "0.005", "--objective", "size", "--search-passes", "fp16",
                                     "--trials", "3", "--runs", "10", "--cache-dir", str(tmp_path / "cache"),
                                     "--report", str(tmp_path / "tune.json")])
    assert again.exit_code == 0 and "3 cached" in again.output
    document = json.loads((tmp_path / "tune.json").read_text())
    assert document["kind"] == "tune" and len(document["trials"]) == 3 and document["command"].startswith("onnxopt")
    rendered = CliRunner().invoke(cli, ["report", str(tmp_path / "tune.json"), "-o", str(tmp_path / "again.html")])
    assert rendered.exit_code == 0, rendered.output
    assert "error vs size_bytes" in (tmp_path / "again.html").read_text()


def test_tune_exits_1_when_nothing_meets_the_budget(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["tune", *DIGITS, "-o", str(tmp_path / "best.onnx"), "--max-error", "0.01",
                                      "--max-size-mb", "0.001", "--search-passes", "fp16", "--trials", "1",
                                      "--no-cache", "--runs", "10", "--json"])
    assert result.exit_code == 1
    assert "no configuration met the budget" in result.output
    assert not (tmp_path / "best.onnx").exists()


@pytest.mark.parametrize("arguments, message", [
    (["--max-error", "0.01", "--metric", "psnr"], "unknown metric"),
    ([], "fidelity budget"),
    (["--max-error", "0.01", "--executor", "cluster"], "unknown executor"),
    (["--max-error", "0.01", "--time-budget", "soon"], "--time-budget"),
    (["--max-error", "0.01", "--report", "r.txt"], ".json, .md or .html"),
    (["--max-error", "0.01", "--search-passes", "nope"], "unknown pass"),
    (["--min-metric", "0.9", "--metric", "rel_l2"], "--min-metric"),
])
def test_tune_bad_input_exits_2_with_one_line(tmp_path: Path, arguments: list[str], message: str) -> None:
    result = CliRunner().invoke(cli, ["tune", *DIGITS, "-o", str(tmp_path / "o.onnx"), *arguments])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0]


def test_batch_optimizes_many_models_with_one_summary(tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(DATA / "digits_cnn.onnx", models / "digits.onnx")
    duplicated_model(models / "dup.onnx")
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "onnxopt.cli", "batch", str(models / "*.onnx"), "-o", str(out),
                           "--preset", "fp16", "--executor", "process:2", "--report", str(tmp_path / "batch.json")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "digits.onnx" in done.stdout and "dup.onnx" in done.stdout and "2 models, 0 failed" in done.stdout
    document = json.loads((tmp_path / "batch.json").read_text())
    assert document["kind"] == "batch" and [Path(r["model"]).name for r in document["models"]] == ["digits.onnx",
                                                                                                    "dup.onnx"]
    for row in document["models"]:
        assert row["status"] == "ok" and row["size_bytes"] < row["input_bytes"]
        onnx.checker.check_model(onnx.load(row["output"]))
    missing = CliRunner().invoke(cli, ["batch", str(tmp_path / "none-*.onnx"), "-o", str(out)])
    assert missing.exit_code == 2 and "no model matches" in missing.output
