"""One trial: optimize with a configuration, measure fidelity, size and latency. A pure job.

A trial is a function of its job (model, DATA, pipeline, settings): it never reads the
search's state, so any executor can run it anywhere and its result can be cached. It runs
the real ``onnxopt.optimize`` (the pipeline written as a TOML file, so any option value
travels), then, with onnxruntime as deployed (its graph optimizations on, the settings'
threads):

1. fidelity: the original and the optimized model on the evaluation DATA, compared with
   the user's metric (``onnxopt.tune.objective.measure_fidelity``);
2. latency: ``onnxopt.benchmark`` times the original and the optimized model interleaved,
   round-robin, in one process, so the ratio survives a busy machine; the timing phase
   holds the host's latency lock so that trials sharing a host do not time each other;
3. size: the written file (plus external data); memory: each model's session peak RSS in
   a subprocess of its own (``onnxopt.memory_probe``), when the objective needs it.

Failures raise; ``onnxopt.tune.isolation`` turns them into a record with a reason.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from onnxopt.benchmark import BenchConfig, benchmark
from onnxopt.data import make_feeds
from onnxopt.errors import OnnxoptError
from onnxopt.memory_probe import peak_rss_bytes
from onnxopt.model_io import model_file_bytes, read_proto
from onnxopt.runtime import create_session, run_session
from onnxopt.tune.hosts import host_tags, latency_lock
from onnxopt.tune.objective import labels_for, measure_fidelity

logger = logging.getLogger(__name__)

# Random feeds used for fidelity when no DATA is given (enough to compare, never to calibrate).
RANDOM_EVAL_FEEDS = 8
MAX_TIMED_RUNS = 5000
_MAX_NOTE_CHARS = 200


def toml_value(value: Any) -> str:
    """A value in TOML syntax (JSON's string escapes are valid TOML basic strings)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"option value {value!r} cannot be written to a pipeline file")
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    return json.dumps(str(value))


def pipeline_toml(steps: list[dict[str, Any]]) -> str:
    """A pipeline file (``[[pass]]`` tables) for ``onnxopt optimize --config``."""
    lines = []
    for step in steps:
        lines += ["[[pass]]", f"name = {json.dumps(step['name'])}"]
        lines += [f"{key} = {toml_value(value)}" for key, value in step.get("options", {}).items()]
        lines.append("")
    return "\n".join(lines)


def _load_labels(path: str | None) -> np.ndarray | None:
    if path is None:
        return None
    source = Path(path)
    files = sorted(source.glob("*.npz")) if source.is_dir() else [source]
    parts = []
    for file in files:
        with np.load(file, allow_pickle=False) as archive:
            labels = labels_for({name: archive[name] for name in archive.files})
        if labels is None:
            return None
        parts.append(labels)
    return np.concatenate(parts) if parts else None


def _pass_summary(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The lossy passes' outcome (and any tolerance pass that changed something), short."""
    summary = []
    for record in records:
        if record.get("contract") == "exact" or (record.get("contract") == "tolerance" and not record.get("modified")):
            continue
        stats = {key: value for key, value in (record.get("stats") or {}).items()
                 if isinstance(value, (int, float, str, bool)) and len(str(value)) <= 80}
        summary.append({"name": record["name"], "status": record["status"], "modified": record["modified"],
                        "seconds": round(record.get("seconds") or 0.0, 3), "reason": record.get("reason", ""),
                        "notes": [note[:_MAX_NOTE_CHARS] for note in (record.get("notes") or [])[:4]],
                        "stats": stats})
    return summary


def _outputs(path: Path, feeds: list[dict[str, np.ndarray]], threads: int) -> tuple[list[dict[str, np.ndarray]], float]:
    """Outputs on every feed as deployed (onnxruntime's optimizations on), and seconds per run."""
    session = create_session(path, optimize=True, threads=threads)
    names = {item.name for item in session.get_inputs()}
    started = time.perf_counter()
    outputs = [run_session(session, {k: v for k, v in feed.items() if k in names}) for feed in feeds]
    return outputs, (time.perf_counter() - started) / max(len(feeds), 1)


def _write_model(source: Path, target: Path) -> None:
    """Move the optimized model (and its external data, same base name) to where the job wants it."""
    target.parent.mkdir(parents=True, exist_ok=True)
    data = source.with_name(source.name + ".data")
    if data.exists():
        shutil.move(str(data), str(target.with_name(target.name + ".data")))
    staging = target.with_name(f".{target.name}.{os.getpid()}")
    shutil.move(str(source), str(staging))
    os.replace(staging, target)


def _timed_runs(settings: dict[str, Any], per_run_s: float) -> int:
    """At least ``timed_runs``, and enough runs to time ``min_timing_s`` of the original: tiny models need many."""
    runs = int(settings.get("timed_runs", 50))
    minimum = float(settings.get("min_timing_s", 0.5))
    if per_run_s > 0 and minimum > 0:
        runs = max(runs, math.ceil(minimum / per_run_s))
    return min(runs, MAX_TIMED_RUNS)


def run_trial(job: dict[str, Any]) -> dict[str, Any]:
    """Run one trial job (paths already local to this machine); raise on failure."""
    from onnxopt.api import optimize

    settings = job["settings"]
    model_path = Path(job["model_path"])
    calib = job.get("calib_path")
    data = job.get("data_path")
    threads = int(settings.get("threads", 1))
    batch_size = int(settings.get("batch_size", 1))
    shapes = settings.get("shapes") or {}
    started = time.perf_counter()
    result: dict[str, Any] = {"host": host_tags()}
    with tempfile.TemporaryDirectory(prefix="onnxopt-trial-") as folder:
        work = Path(folder)
        (work / "pipeline.toml").write_text(pipeline_toml(job["pipeline"]))
        # Named as its final file: external data keeps the name the model refers to.
        candidate = work / (Path(job["output"]).name if job.get("output") else "model.onnx")
        optimized = optimize(model_path, candidate, config=work / "pipeline.toml", target=settings["target"],
                             calib=calib or data, batch_size=1, shapes=shapes)
        report = optimized.as_dict()
        result["optimize_s"] = round(time.perf_counter() - started, 3)
        result["optimize_peak_rss_bytes"] = peak_rss_bytes()
        result["passes"] = _pass_summary(report.get("passes", []) or [])
        failures = optimized.report.failures
        if failures:
            raise TrialFailed("; ".join(f"pass {record.name} {record.status}: {record.reason}" for record in failures))
        result["input_bytes"] = optimized.input_bytes
        result["size_bytes"] = model_file_bytes(candidate)
        result["size_ratio"] = result["size_bytes"] / optimized.input_bytes if optimized.input_bytes else None

        evaluating = time.perf_counter()
        proto = read_proto(model_path)
        feeds = list(make_feeds(proto, data, batch_size, shapes, random_count=RANDOM_EVAL_FEEDS))
        references, per_run_s = _outputs(model_path, feeds, threads)
        candidates, _ = _outputs(candidate, feeds, threads)
        result.update(measure_fidelity(settings["metric"], references, candidates, _load_labels(data)))
        result["evaluate_s"] = round(time.perf_counter() - evaluating, 3)

        timing = time.perf_counter()
        config = BenchConfig(threads=threads, batch_size=batch_size, data=data, shapes=shapes,
                             warmup_runs=int(settings.get("warmup_runs", 5)),
                             timed_runs=_timed_runs(settings, per_run_s),
                             measure_memory=bool(settings.get("measure_memory", False)))
        with latency_lock():
            bench = benchmark([model_path, candidate], config)
        original, ours = bench.models
        result["latency_ms"] = ours.latency.p50_ms
        result["latency_p90_ms"] = ours.latency.p90_ms
        result["baseline_latency_ms"] = original.latency.p50_ms
        result["latency_ratio"] = ours.ratio_to_first.get("latency_p50")
        if ours.memory is not None:
            result["session_peak_rss_bytes"] = ours.memory.peak_rss_bytes
            result["baseline_session_peak_rss_bytes"] = original.memory.peak_rss_bytes if original.memory else None
        result["bench_s"] = round(time.perf_counter() - timing, 3)

        output = job.get("output")
        if output:
            _write_model(candidate, Path(output))
            result["model_path"] = str(output)
    result["status"] = "ok"
    result["reason"] = ""
    result["trial_s"] = round(time.perf_counter() - started, 3)
    result["peak_rss_bytes"] = peak_rss_bytes()
    return result


class TrialFailed(OnnxoptError):
    """A configuration that cannot be realised: a pass of it was rolled back or raised."""


def run_optimize_job(job: dict[str, Any]) -> dict[str, Any]:
    """``onnxopt batch``'s job: optimize one model with a resolved pipeline; raise on failure."""
    from onnxopt.api import optimize

    started = time.perf_counter()
    output = Path(job["output"])
    output.parent.mkdir(parents=True, exist_ok=True)
    options = job.get("options") or {}
    with tempfile.TemporaryDirectory(prefix="onnxopt-batch-") as folder:
        pipeline = Path(folder) / "pipeline.toml"
        pipeline.write_text(pipeline_toml(job["pipeline"]))
        done = optimize(job["model_path"], output, config=pipeline, target=options.get("target", "ort-cpu"),
                        verify=bool(options.get("verify")), inputs=job.get("data_path"), calib=job.get("calib_path"),
                        batch_size=int(options.get("batch_size", 1)), shapes=options.get("shapes") or {})
    summary = done.as_dict()
    failures = [f"pass {r.name} {r.status}: {r.reason}" for r in done.report.failures]
    verification = summary.get("verification") or {}
    return {"status": "failed" if failures else "ok", "reason": "; ".join(failures),
            "input_bytes": done.input_bytes, "size_bytes": done.output_bytes, "size_ratio": summary.get("size_ratio"),
            "nodes_before": (summary.get("before") or {}).get("nodes"),
            "nodes_after": (summary.get("after") or {}).get("nodes"), "pipeline": done.pipeline,
            "model_path": str(output), "optimize_s": round(time.perf_counter() - started, 3),
            "peak_rss_bytes": peak_rss_bytes(), "host": host_tags(),
            "max_abs_error": verification.get("max_abs_error"), "min_cosine": verification.get("min_cosine")}
