"""int8 models and the CPUs they run on, through the real CLI: targets, metadata, ``check``, ``--threads``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from onnxopt.cpu_features import host_cpu
from onnxopt.int8_kernels import REQUIRES_KEY, VNNI_REQUIREMENT, find_int8_kernels, meets_requirement
from onnxopt.model_io import load, save
from onnxopt.targets import TARGET_KEY
from tests.passes.quantization.test_qdq_dynamic import LINEAR_TEXT
from tests.util import model_from_text

ONNXOPT = [sys.executable, "-m", "onnxopt.cli"]
NO_VNNI = "avx2,fma"
VNNI = "avx2,fma,avx512f,avx512bw,avx512_vnni"


def run(*args: object) -> subprocess.CompletedProcess:
    return subprocess.run([*ONNXOPT, *map(str, args)], capture_output=True, text=True, check=False)


@pytest.fixture(scope="module")
def linear_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("linear") / "linear.onnx"
    save(model_from_text(LINEAR_TEXT), path)
    return path


def quantize(source: Path, target_path: Path, *extra: str) -> subprocess.CompletedProcess:
    done = run("optimize", source, "-o", target_path, "--passes", "qdq:only_if_faster=false", *extra)
    assert done.returncode == 0, done.stderr
    return done


def test_vnni_target_records_its_requirement_and_check_refuses_a_cpu_without_it(linear_path, tmp_path):
    target = tmp_path / "vnni.onnx"
    quantize(linear_path, target, "--target", "ort-cpu:vnni")
    model = load(target)
    assert model.metadata_props[REQUIRES_KEY] == VNNI_REQUIREMENT
    assert model.metadata_props[TARGET_KEY] == "ort-cpu:vnni"
    assert max(kernel.max_abs_weight for kernel in find_int8_kernels(model)) == 127
    # The target comes from the model; the CPU is one without VNNI: exit 1, one line saying why.
    refused = run("check", target, "--cpu-flags", NO_VNNI)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    lines = [line for line in (refused.stdout + refused.stderr).splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert "[cpu-requirement]" in lines[0] and "avx512_vnni" in lines[0] and "avx2 fma" in lines[0]
    accepted = run("check", target, "--cpu-flags", VNNI)
    assert accepted.returncode == 0, accepted.stdout
    arm = run("check", target, "--cpu-flags", "aarch64")
    assert arm.returncode == 0, arm.stdout
    # On this host: accepted exactly when the host has what the model needs.
    here = run("check", target)
    assert here.returncode == (0 if meets_requirement(VNNI_REQUIREMENT, host_cpu()) else 1), here.stdout
    # --target ort-cpu asks for "any CPU": the full-range nodes are listed.
    anywhere = run("check", target, "--target", "ort-cpu", "--cpu-flags", VNNI)
    assert anywhere.returncode == 1 and anywhere.stdout.count("[int8-saturation]") == 2


def test_default_target_runs_on_any_cpu(linear_path, tmp_path):
    target = tmp_path / "any.onnx"
    quantize(linear_path, target)
    model = load(target)
    assert REQUIRES_KEY not in model.metadata_props
    assert model.metadata_props[TARGET_KEY] == "ort-cpu"
    assert max(kernel.max_abs_weight for kernel in find_int8_kernels(model)) <= 64
    for flags in (NO_VNNI, VNNI, "aarch64"):
        done = run("check", target, "--cpu-flags", flags)
        assert done.returncode == 0, (flags, done.stdout)


def test_full_range_model_without_metadata_is_refused_on_a_saturating_cpu(linear_path, tmp_path):
    from onnxruntime.quantization import QuantType, quantize_dynamic

    foreign = tmp_path / "ort_dynamic.onnx"
    quantize_dynamic(linear_path, foreign, per_channel=True, weight_type=QuantType.QInt8)
    done = run("check", foreign, "--target", "ort-cuda", "--cpu-flags", NO_VNNI)
    assert done.returncode == 1 and "[cpu-requirement]" in done.stdout and "±64" in done.stdout
    assert run("check", foreign, "--target", "ort-cuda", "--cpu-flags", VNNI).returncode == 0


def test_threads_option_reaches_the_timing_and_the_metadata(linear_path, tmp_path):
    target = tmp_path / "timed.onnx"
    done = run("optimize", linear_path, "-o", target, "--passes", "qdq:mode=dynamic", "--threads", "1", "--json")
    assert done.returncode == 0, done.stderr
    model = load(target)
    assert model.metadata_props["onnxopt.int8.decided_by"] == "timing"
    timed_on = model.metadata_props["onnxopt.int8.timed_on"]
    assert "1 thread" in timed_on and "default" not in timed_on and host_cpu().describe() in timed_on


def test_rules_decide_the_same_on_every_run_without_timing(linear_path, tmp_path):
    first, second = tmp_path / "rules1.onnx", tmp_path / "rules2.onnx"
    for path in (first, second):
        done = run("optimize", linear_path, "-o", path, "--passes", "qdq:mode=dynamic:decide_by=rules")
        assert done.returncode == 0, done.stderr
    assert first.read_bytes() == second.read_bytes()
    model = load(first)
    assert model.metadata_props["onnxopt.int8.decided_by"] == "rules"
    assert "onnxopt.int8.timed_on" not in model.metadata_props
    assert len(list(find_int8_kernels(model))) == 2  # two 256x256 weights: above the rules' size floor


def test_int8_of_an_external_data_model_times_its_islands_and_keeps_the_data_external(tmp_path):
    # Islands of an external-data model read their weights from its folder (this failed as
    # "tensor 'W0' is external but the model has no folder", exit 2, on the > 2 GB MLP).
    from models.cache import cached_model

    target, calib = tmp_path / "mlp_int8.onnx", tmp_path / "calib.npz"
    np.savez(calib, input=np.random.default_rng(0).standard_normal((4, 256)).astype(np.float32))
    done = run("optimize", cached_model("large_mlp", "tiny"), "-o", target, "--preset", "int8", "--calib", calib,
               "--json")
    assert done.returncode == 0, done.stderr
    assert '"status": "ok"' in done.stdout and '"time_ratio"' in done.stdout  # the islands' timings, per node
    assert target.with_name(target.name + ".data").exists()
    # Whether int8 wins is timed on this (shared) machine; whatever was quantized keeps the ±64 bound.
    kernels = list(find_int8_kernels(load(target)))
    qdq = next(record for record in json.loads(done.stdout)["passes"] if record["name"] == "qdq")
    if kernels:
        assert all(kernel.max_abs_weight <= 64 for kernel in kernels)
    else:
        assert {row["decision"] for row in qdq["stats"]["decisions"]} == {"float"}, qdq
