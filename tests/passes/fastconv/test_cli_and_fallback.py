"""The real CLI with fast-conv, and the behaviour without the kernel library (as if no compiler was found)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from models import large_kernel
from onnxopt.model_io import load
from onnxopt.runtime import create_session, run_session
from tests.passes.fastconv.helpers import relative_error

ONNXOPT = [sys.executable, "-c", "import sys; from onnxopt.cli import main; sys.exit(main())"]
REPO = Path(__file__).resolve().parents[3]


def run_cli(*args: object, env: dict | None = None) -> subprocess.CompletedProcess:
    environment = {**os.environ, **(env or {})}
    return subprocess.run([*ONNXOPT, *map(str, args)], capture_output=True, text=True, timeout=300, env=environment,
                          cwd=REPO)


def test_optimize_with_fast_conv_verifies_and_reports_decisions(tmp_path: Path) -> None:
    source = large_kernel.build(tmp_path / "block.onnx", size="small")
    out, report = tmp_path / "fast.onnx", tmp_path / "report.json"
    done = run_cli("optimize", source, "-o", out, "--passes", "fuse-conv-bn,fast-conv:mode=rules", "--verify",
                   "--report", report)
    assert done.returncode == 0, done.stderr
    records = [r for r in json.loads(report.read_text())["passes"] if r["name"] == "fast-conv"]
    decisions = records[0]["stats"]["decisions"]
    assert [d["decision"] for d in decisions] == ["fft", "keep"]
    assert decisions[0]["shape"]["weight"] == [32, 1, 15, 15] and decisions[0]["fused"] == "Conv+Relu"
    assert records[0]["status"] == "ok" and records[0]["max_rel_error"] < 1e-4
    ops = [node.op for node in load(out).graph.nodes]
    assert ops[0] == "FFTConvRelu"
    compared = run_cli("compare", source, out, "--max-abs-error", "1e-3")
    assert compared.returncode == 0, compared.stderr
    bench = run_cli("bench", source, out, "--runs", "5", "--warmup", "1", "--threads", "1", "--json",
                    tmp_path / "bench.json")
    assert bench.returncode == 0, bench.stderr
    assert len(json.loads((tmp_path / "bench.json").read_text())["models"]) == 2


def test_passes_lists_the_fastconv_family() -> None:
    done = run_cli("passes", "--json")
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert "fast-conv" in text and "strassen-matmul" in text and "min_speedup" in text


def test_without_the_library_rules_still_rewrite_and_the_model_still_runs(tmp_path: Path) -> None:
    source = large_kernel.build(tmp_path / "block.onnx", size="small")
    out = tmp_path / "fast.onnx"
    env = {"ONNXOPT_KERNELS_LIBRARY": "none"}
    done = run_cli("-v", "optimize", source, "-o", out, "--passes", "fast-conv:mode=rules", env=env)
    assert done.returncode == 0, done.stderr
    assert "native kernels are not built" in done.stderr
    measured = run_cli("optimize", source, "-o", tmp_path / "measured.onnx", "--passes", "fast-conv", "--report",
                       tmp_path / "r.json", env=env)
    assert measured.returncode == 0, measured.stderr
    record = next(r for r in json.loads((tmp_path / "r.json").read_text())["passes"] if r["name"] == "fast-conv")
    assert record["status"] == "unchanged"
    assert record["stats"]["decisions"][0]["reason"] == "kernel library unavailable: cannot measure"
    inputs = large_kernel.sample_inputs("small")
    expected = run_session(create_session(source), inputs)["output"]
    actual = run_session(create_session(out, use_kernels=False), inputs)["output"]
    assert relative_error(actual, expected) < 1e-5


@pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake not installed")
def test_native_build_without_a_compiler_warns_and_installs_nothing(tmp_path: Path) -> None:
    # The install-time wrapper must never fail the installation: no compiler means a warning, no library.
    env = {**os.environ, "CXX": str(tmp_path / "no-such-compiler")}
    configure = subprocess.run(["cmake", "-S", str(REPO / "native"), "-B", str(tmp_path / "build")], env=env,
                               capture_output=True, text=True, timeout=300)
    assert configure.returncode == 0, configure.stderr
    assert "native kernels could not be built" in configure.stderr
    install = subprocess.run(["cmake", "--install", str(tmp_path / "build"), "--prefix", str(tmp_path / "prefix")],
                             capture_output=True, text=True, timeout=120)
    assert install.returncode == 0, install.stderr
    assert not list((tmp_path / "prefix").rglob("*onnxopt_kernels*"))


def test_numpy_reference_agrees_with_onnxruntime_for_the_sample_block(tmp_path: Path) -> None:
    # The float64 reference the pass measures errors against is itself checked against onnxruntime.
    from onnxopt.passes.fastconv.accuracy import reference_output
    from onnxopt.passes.fastconv.match import match_conv, reader_counts
    from onnxopt.shape_info import infer_tensor_infos

    model = load(large_kernel.build(tmp_path / "block.onnx", size="tiny"))
    conv = model.graph.nodes[0]
    pattern = match_conv(conv, model, infer_tensor_infos(model), reader_counts(model), 1)
    x = large_kernel.sample_inputs("tiny")["image"]
    reference = reference_output(pattern, {"x": x})
    from onnxopt.passes.fastconv.islands import original_island
    from tests.passes.fastconv.helpers import session

    actual = session(original_island(pattern), with_kernels=False).run(None, {"x": x})[0]
    assert np.max(np.abs(actual - reference)) / np.max(np.abs(reference)) < 1e-6
