"""Real searches on the trained digits CNN: real optimize runs, real onnxruntime, real files."""

from __future__ import annotations

import json

import onnx
import pytest

import onnxopt
from models.digits import RECORDED_ACCURACY, top1_accuracy
from onnxopt.errors import BadInputError

TRIAL_FIELDS = ("index", "key", "config", "pipeline", "phase", "status", "reason", "cached", "feasible", "violations",
                "size_bytes", "latency_ms", "latency_ratio", "baseline_latency_ms", "error", "metric_value",
                "optimize_s", "trial_s", "peak_rss_bytes", "optimize_peak_rss_bytes", "host", "passes")


def _search(digits, tmp_path, trials, **kwargs):
    options = {"data": digits["data"], "calib": digits["calib"], "metric": "accuracy", "max_error": 0.005,
               "objective": "size", "passes": ["weight-only", "fp16"], "cache_dir": tmp_path / "cache",
               "isolate": False, "timed_runs": 20, "min_timing_s": 0.05, "trials": trials,
               "overrides": ["weight-only.method=rtn"]}  # GPTQ costs seconds per trial; RTN is enough here
    options.update(kwargs)
    return onnxopt.tune(digits["model"], kwargs.pop("output", tmp_path / "best.onnx"), **options)


def test_a_search_finds_a_model_smaller_than_int4_within_half_a_point_and_resumes_from_its_cache(digits, tmp_path):
    report = tmp_path / "tune.json"
    first = _search(digits, tmp_path, 7, report=report)
    assert first.best is not None and first.best["feasible"]
    int4 = next(t for t in first.trials if t["phase"] == "preset:int4")
    assert first.best["size_bytes"] < int4["size_bytes"]  # int4 is on the way, not the end
    written = onnx.load(str(first.output))
    assert written.graph.node
    assert top1_accuracy(first.output) >= RECORDED_ACCURACY - 0.005
    document = json.loads(report.read_text())
    assert document["schema"] == "onnxopt.report" and document["kind"] == "tune"
    assert document["best"]["key"] == first.best["key"] and document["objectives"][:2] == ["size_bytes", "error"]
    assert {t["id"] for t in document["trials"] if t["pareto"]} == set(document["front"])
    assert document["front"] and document["space"]["grid_size"] > len(document["trials"])
    for trial in document["trials"]:
        if trial["status"] == "ok":
            assert all(name in trial for name in TRIAL_FIELDS), set(TRIAL_FIELDS) - set(trial)
            assert "avx2" in trial["host"]["cpu_flags"] or trial["host"]["machine"] != "x86_64"
    assert document["cost"]["trials_run"] == 7 and document["cost"]["peak_rss_bytes_max"] > 0

    more = _search(digits, tmp_path, 9)
    assert [t["key"] for t in more.trials][:7] == [t["key"] for t in first.trials]
    assert more.document["cost"]["trials_cached"] == 7 and more.document["cost"]["trials_run"] == 2
    again = _search(digits, tmp_path, 9)
    assert again.document["cost"]["trials_run"] == 0 and again.best["key"] == more.best["key"]


def test_a_raising_hanging_or_memory_hungry_trial_is_a_record_and_the_search_goes_on(digits, tmp_path):
    picky = _search(digits, tmp_path, 4, metric="python:tests.tune.helpers:picky_error", max_error=0.05,
                    passes=["weight-only"], isolate=True, executor="process:2", use_cache=False)
    failed = [t for t in picky.trials if t["status"] == "failed"]
    assert failed and all("picky metric refuses" in t["reason"] for t in failed)
    assert len(picky.trials) == 4 and picky.best is not None and picky.best["status"] == "ok"

    hang = _search(digits, tmp_path, 1, metric="python:tests.tune.helpers:slow_error", max_error=1.0,
                   isolate=True, trial_timeout_s=3, use_cache=False)
    assert hang.trials[0]["status"] == "timeout" and "killed" in hang.trials[0]["reason"] and hang.best is None

    hungry = _search(digits, tmp_path, 1, metric="python:tests.tune.helpers:hungry_error", max_error=1.0,
                     isolate=True, trial_memory_mb=1500, use_cache=False)
    assert hungry.trials[0]["status"] == "oom", hungry.trials[0]


def test_bad_input_is_refused_before_any_trial(digits, tmp_path):
    with pytest.raises(BadInputError, match="fidelity budget"):
        onnxopt.tune(digits["model"], tmp_path / "o.onnx", data=digits["data"])
    with pytest.raises(BadInputError, match="labels"):
        onnxopt.tune(digits["model"], tmp_path / "o.onnx", metric="accuracy", max_error=0.01)
    with pytest.raises(BadInputError, match="unknown metric"):
        onnxopt.tune(digits["model"], tmp_path / "o.onnx", data=digits["data"], metric="psnr", max_error=1)
    with pytest.raises(BadInputError, match=r"\.json, \.md or \.html"):
        onnxopt.tune(digits["model"], tmp_path / "o.onnx", data=digits["data"], max_error=0.01,
                     report=tmp_path / "r.txt")
    with pytest.raises(BadInputError, match="cannot be loaded"):
        onnxopt.tune(digits["model"], tmp_path / "o.onnx", data=digits["data"], max_error=0.01,
                     metric="python:no_such_module:f")
