"""`onnxopt report` and the report options of `optimize` and `bench`: the real CLI on real models and files."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from onnxopt.cli import cli
from tests.util import DATA_DIR

ONNXOPT = [sys.executable, "-m", "onnxopt.cli"]


def invoke(*args: object):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def _one_line_error(result, fragment: str) -> None:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and fragment in lines[0], result.stderr


def test_example_tables_fit_80_columns_without_folding_values(tmp_path: Path):
    done = subprocess.run([*ONNXOPT, "optimize", "--example", "-o", str(tmp_path / "ex.onnx")],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "COLUMNS": "80"})
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80, "\n".join(line for line in lines if len(line) > 80)
    assert any(re.search(r"weight_bytes_before=415\.0 KiB\s*$", line) for line in lines), done.stdout
    assert not any(line.strip() == "," for line in lines), "no value folded onto a line of its own"
    assert any("half_type=float16" in line for line in lines)


def test_optimize_report_json_renders_to_html_markdown_and_tables(tmp_path: Path):
    report = tmp_path / "r.json"
    result = invoke("optimize", DATA_DIR / "digits_cnn.onnx", "-o", tmp_path / "o.onnx", "--preset", "fp16",
                    "-O", "fp16.keep_fp32=op:Gemm", "--report", report)
    assert result.exit_code == 0, result.output
    doc = json.loads(report.read_text())
    assert doc["kind"] == "optimize" and doc["schema"] == "onnxopt.report"
    assert "fp16: per-node decisions" in result.stdout, "the terminal shows the decisions too"

    result = invoke("report", report, "-o", tmp_path / "r.html")
    assert result.exit_code == 0, result.output
    html = (tmp_path / "r.html").read_text()
    assert html.count("<svg") >= 5 and "per-node decisions (" in html
    assert re.search(r"<table class='sortable' id='decisions-\d+'>", html)
    assert invoke("report", report, "-o", tmp_path / "r.md").exit_code == 0
    assert "## fp16: per-node decisions" in (tmp_path / "r.md").read_text()
    tables = invoke("report", report)
    assert tables.exit_code == 0 and "fp16: per-node decisions" in tables.stdout and "before / after" in tables.stdout
    assert invoke("report", report, "-o", tmp_path / "again.json").exit_code == 0
    assert json.loads((tmp_path / "again.json").read_text())["passes"] == doc["passes"]


def test_report_refuses_what_it_cannot_read(tmp_path: Path):
    _one_line_error(invoke("report", tmp_path / "missing.json"), "no such file")
    (tmp_path / "bad.json").write_text("{not json")
    _one_line_error(invoke("report", tmp_path / "bad.json"), "not JSON")
    (tmp_path / "other.json").write_text(json.dumps({"name": "something else"}))
    _one_line_error(invoke("report", tmp_path / "other.json"), "not an onnxopt report")
    (tmp_path / "new.json").write_text(json.dumps({"schema": "onnxopt.report", "schema_version": 99,
                                                   "kind": "optimize", "passes": [], "before": {}, "after": {}}))
    _one_line_error(invoke("report", tmp_path / "new.json"), "newer")
    _one_line_error(invoke("report", tmp_path / "new.json", "-o", tmp_path / "x.txt"), "newer")
    result = invoke("optimize", DATA_DIR / "digits_cnn.onnx", "-o", tmp_path / "o.onnx", "--report", tmp_path / "r.txt")
    _one_line_error(result, "use a .json, .md or .html")
    assert not (tmp_path / "o.onnx").exists(), "a bad report name is refused before any work"


def test_bench_report_and_its_json_render_latency_and_size_charts(tmp_path: Path):
    first, second = tmp_path / "a.onnx", tmp_path / "b.onnx"
    shutil.copy(DATA_DIR / "digits_cnn.onnx", first)
    assert invoke("optimize", first, "-o", second, "--preset", "fp16").exit_code == 0
    result = invoke("bench", first, second, "--warmup", "1", "--runs", "5", "--no-memory",
                    "--json", tmp_path / "bench.json", "--report", tmp_path / "bench.html")
    assert result.exit_code == 0, result.output
    doc = json.loads((tmp_path / "bench.json").read_text())
    assert doc["kind"] == "bench" and [m["name"] for m in doc["models"]] == ["a.onnx", "b.onnx"]
    html = (tmp_path / "bench.html").read_text()
    assert "latency (ms, lower is faster)" in html and "file size" in html
    latency = re.search(r"<svg[^>]*data-points='(\d+)'.*?</svg>", html, re.S)
    assert latency and int(latency.group(1)) == 4, "p50 and p90 of two models"
    assert invoke("report", tmp_path / "bench.json", "-o", tmp_path / "again.html").exit_code == 0
    assert "bench-table" in (tmp_path / "again.html").read_text()
