"""The pruning passes through the real CLI: options from the command line, DATA, verification, the report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from click.testing import CliRunner

from onnxopt.cli import cli
from onnxopt.model_io import save
from tests.passes.pruning.graphs import random_mlp, token_feeds


def invoke(*args: object):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def test_optimize_prunes_with_calibration_data_verifies_and_reports_decisions(tmp_path: Path):
    model = random_mlp(seed=2, hidden=32)
    source = tmp_path / "mlp.onnx"
    save(model, source)
    batches = token_feeds(model, 8, seed=3, batch=2)
    np.savez(tmp_path / "calib.npz", x=np.concatenate([feed["x"] for feed in batches]))
    report = tmp_path / "report.json"
    result = invoke("optimize", source, "-o", tmp_path / "out.onnx", "--passes",
                    "prune-neurons:ratio=0.5:round_to=8:measure_latency=false", "--calib", tmp_path / "calib.npz",
                    "--batch-size", "2", "--verify", "--report", report)
    assert result.exit_code == 0, result.output
    written = onnx.load(str(tmp_path / "out.onnx"))
    onnx.checker.check_model(written, full_check=True)
    assert sorted(tuple(init.dims) for init in written.graph.initializer if len(init.dims) == 2) == [(8, 16),
                                                                                                   (16, 8)]
    passes = json.loads(report.read_text())["passes"]
    (record,) = [entry for entry in passes if entry["name"] == "prune-neurons"]
    assert record["status"] == "ok" and record["stats"]["teacher"] == "original model"
    (decision,) = [entry for entry in record["stats"]["decisions"] if entry["decision"] == "pruned"]
    assert decision["kept_units"] == 16 and "error_after_recovery" in decision


def test_sparsify_from_the_cli_and_the_tensorrt_report(tmp_path: Path):
    source = tmp_path / "mlp.onnx"
    save(random_mlp(k=16, hidden=32, n=16), source)
    result = invoke("optimize", source, "-o", tmp_path / "sparse.onnx", "--passes", "sparsify",
                    "-O", "sparsify.pattern=2:4", "-O", "sparsify.min_weight_elements=16")
    assert result.exit_code == 0, result.output
    checked = invoke("check", "--target", "tensorrt", tmp_path / "sparse.onnx")
    assert checked.exit_code == 0 and "2 of 2 weights satisfy 2:4" in checked.output


def test_passes_lists_the_pruning_family():
    result = invoke("passes", "--json")
    assert result.exit_code == 0
    names = {entry["name"]: entry for entry in json.loads(result.output)["passes"]}
    for name in ("prune-neurons", "prune-heads", "prune-layers", "sparsify"):
        assert names[name]["contract"] == "lossy"


def test_a_bad_option_is_one_line_and_exit_two(tmp_path: Path):
    source = tmp_path / "mlp.onnx"
    save(random_mlp(), source)
    result = CliRunner().invoke(cli, ["optimize", str(source), "-o", str(tmp_path / "o.onnx"), "--passes",
                                      "sparsify", "-O", "sparsify.pattern=5:4"])
    assert result.exit_code == 2
    assert "pattern must be 'unstructured' or 'N:M'" in result.output
