"""The same search on a local Ray cluster (2 CPUs) as in one local process: same trials, same best.

Skipped when the optional ``ray`` extra is not installed (``pip install 'onnxopt[ray]'``).
One test function on purpose: a second Ray cluster on another pytest worker would only
compete for the same two cores.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import onnxopt
from onnxopt.tune.cache import model_bundle
from onnxopt.tune.executors import Executor

ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'onnxopt[ray]')")


def _search(digits, executor, output: Path, isolate: bool):
    # Size objective over passes whose output is deterministic (no timing-based choices), and a
    # user metric that raises on models far from the original: ternary and binary weights.
    return onnxopt.tune(digits["model"], output, data=digits["data"], calib=digits["calib"],
                        metric="python:tests.tune.helpers:picky_error", max_error=0.05, objective="size",
                        passes=["weight-only", "fp16"], overrides=["weight-only.method=rtn"], trials=5,
                        executor=executor, use_cache=False,
                        isolate=isolate, timed_runs=20, min_timing_s=0.05)


def test_a_ray_search_equals_the_local_one_and_records_the_trials_that_raise(digits, tmp_path, monkeypatch):
    local = _search(digits, "local", tmp_path / "local.onnx", isolate=False)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=200 * 1024 * 1024)
    try:
        from onnxopt.tune.ray_executor import RayExecutor, _materialize

        executor = RayExecutor()
        assert executor.workers == 2
        remote = _search(digits, executor, tmp_path / "ray.onnx", isolate=True)
        assert [t["key"] for t in remote.trials] == [t["key"] for t in local.trials]
        assert [t["status"] for t in remote.trials] == [t["status"] for t in local.trials]
        assert remote.best["key"] == local.best["key"]
        assert (tmp_path / "ray.onnx").read_bytes() == (tmp_path / "local.onnx").read_bytes()
        raised = [t for t in remote.trials if "picky metric refuses" in t.get("reason", "")]
        assert raised and all(t["status"] == "failed" for t in raised)
        assert all(t.get("node_id") for t in remote.trials if t["status"] == "ok")
        assert remote.document["settings"]["executor"] == "ray"

        # A worker without the driver's files gets them from the object store.
        bundle = model_bundle(digits["model"])
        elsewhere = type(bundle)("/nonexistent/digits_cnn.onnx", "/nonexistent", bundle.files, bundle.digest)
        reference = ray.put({name: (Path(bundle.root) / name).read_bytes() for name in bundle.files})
        fetched = ray.get(ray.remote(_materialize).remote(elsewhere, [reference]))
        assert Path(fetched).read_bytes() == Path(digits["model"]).read_bytes()

        # An output on a node whose disk is not ours comes back through a task pinned to that node.
        monkeypatch.setattr(Executor, "fetch", lambda self, record, target: False)
        best = next(t for t in remote.trials if t["key"] == remote.best["key"])
        source = tmp_path / "kept.onnx"
        source.write_bytes((tmp_path / "ray.onnx").read_bytes())
        assert executor.fetch({**best, "model_path": str(source)}, tmp_path / "fetched.onnx")
        assert (tmp_path / "fetched.onnx").read_bytes() == source.read_bytes()
        executor.close()
    finally:
        ray.shutdown()
