"""Side-by-side latency, throughput and peak memory of one or more models.

Why interleaved: on a shared machine, noise (another process, a frequency change, a
thermal dip) comes in bursts. Timing model A for a minute and then model B for a minute
lets a burst land on one of them only, and the ratio lies. We run the models round-robin —
one run of each in turn, the starting model rotating every round — so every burst is
spread over all models alike, and report each model's ratios to the first one.

Why memory is measured elsewhere: a process's peak RSS is a high-water mark that never
falls, so per-model peaks cannot be read inside the process that times them all. Each
model's peak memory is measured first, in one short subprocess per model
(``onnxopt.memory_probe``: RSS before loading vs peak after session creation and a few
runs); the interleaved timing then runs in this process.

Sessions use onnxruntime's own graph optimizations by default, as a deployment would;
``ort_optimize=False`` measures the graph exactly as written.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from onnxopt.cpu_features import host_cpu
from onnxopt.data import input_specs, make_feeds
from onnxopt.errors import BadInputError
from onnxopt.model_io import model_file_bytes, read_valid_proto
from onnxopt.report.schema import header, json_safe
from onnxopt.runtime import create_session, providers_for

logger = logging.getLogger(__name__)

# Distinct feeds cycled through per model; more would only cost memory.
MAX_DISTINCT_FEEDS = 16
MEMORY_PROBE_RUNS = 3
MEMORY_METHOD = (
    "one subprocess per model: peak RSS (VmHWM, or ru_maxrss off Linux) after session creation and "
    f"{MEMORY_PROBE_RUNS} runs, minus RSS just before loading the model; host memory only"
)


@dataclass(frozen=True)
class BenchConfig:
    """How to run the benchmark; the CLI's options map one to one."""

    provider: str = "cpu"
    threads: int = 0  # 0: onnxruntime's default
    batch_size: int = 1
    data: str | None = None  # DATA path, or None for random inputs
    shapes: dict[str, list[int]] = field(default_factory=dict)
    warmup_runs: int = 10
    timed_runs: int = 100
    ort_optimize: bool = True
    measure_memory: bool = True


@dataclass
class LatencyStats:
    """Latency of the timed runs, in milliseconds."""

    p50_ms: float
    p90_ms: float
    mean_ms: float
    min_ms: float
    max_ms: float
    std_ms: float

    @classmethod
    def from_seconds(cls, seconds: list[float]) -> LatencyStats:
        ms = np.asarray(seconds, dtype=np.float64) * 1000.0
        return cls(
            p50_ms=float(np.percentile(ms, 50)),
            p90_ms=float(np.percentile(ms, 90)),
            mean_ms=float(ms.mean()),
            min_ms=float(ms.min()),
            max_ms=float(ms.max()),
            std_ms=float(ms.std()),
        )


@dataclass
class MemoryStats:
    """Peak host memory of one model's session (see ``onnxopt.memory_probe``)."""

    peak_rss_bytes: int | None
    process_peak_rss_bytes: int | None = None
    baseline_rss_bytes: int | None = None
    error: str | None = None


@dataclass
class ModelBench:
    """One model's results, with ratios to the first model of the run."""

    name: str
    path: str
    file_bytes: int
    latency: LatencyStats
    throughput_samples_per_s: float
    samples_per_run: float
    runs: int
    memory: MemoryStats | None
    providers: list[str] = field(default_factory=list)  # what onnxruntime actually ran it on
    ratio_to_first: dict[str, float | None] = field(default_factory=dict)


@dataclass
class BenchReport:
    """Everything one ``bench`` run measured, plus what it ran on."""

    config: dict[str, Any]
    machine: dict[str, Any]
    models: list[ModelBench]

    def as_dict(self) -> dict[str, Any]:
        """The report document (``kind: bench``; schema in docs/reports.md)."""
        return {**header("bench"), "config": self.config, "machine": self.machine,
                "models": [asdict(m) for m in self.models]}

    def write_json(self, path: str | os.PathLike[str]) -> None:
        Path(path).write_text(json.dumps(json_safe(self.as_dict()), indent=2) + "\n")


def machine_info(provider: str) -> dict[str, Any]:
    """What the numbers were measured on."""
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu": host_cpu().describe(),  # timings are facts about this CPU only: its flags go with them
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "onnxruntime": ort.__version__,
        "providers": providers_for(provider),
    }


def samples_in(feed: dict[str, np.ndarray]) -> int:
    """Samples in one feed: the leading axis of its first input (1 for scalars)."""
    first = next(iter(feed.values()))
    return int(first.shape[0]) if first.ndim else 1


def _display_names(paths: list[Path]) -> list[str]:
    names = [path.name for path in paths]
    if len(set(names)) == len(names):
        return names
    return [str(path) for path in paths]


def _feeds_for(path: Path, proto: onnx.ModelProto, config: BenchConfig) -> list[dict[str, np.ndarray]]:
    try:
        feeds = make_feeds(proto, config.data, config.batch_size, config.shapes,
                           max_batches=MAX_DISTINCT_FEEDS, random_count=4)
        materialised = list(feeds)
    except BadInputError as error:
        raise BadInputError(f"{path.name}: {error}") from None
    if not materialised:
        raise BadInputError(f"{path.name}: no input batches to run")
    return materialised


def _check_same_inputs(paths: list[Path], protos: list[onnx.ModelProto]) -> None:
    """Without DATA, each model gets random inputs from its own declared inputs: they must agree."""
    first = {spec.name for spec in input_specs(protos[0])}
    for path, proto in zip(paths[1:], protos[1:], strict=True):
        names = {spec.name for spec in input_specs(proto)}
        if names != first:
            raise BadInputError(
                f"{path.name} takes inputs {sorted(names)} but {paths[0].name} takes {sorted(first)}; "
                "give --inputs DATA holding arrays for all of them"
            )


def _check_provider_started(session: ort.InferenceSession, path: Path, provider: str) -> None:
    """onnxruntime silently falls back to the CPU when a GPU provider cannot start; a benchmark must not."""
    wanted = providers_for(provider)[0]
    active = session.get_providers()
    if wanted not in active:
        raise BadInputError(f"{path.name}: onnxruntime could not start {wanted} (running on {', '.join(active)}); "
                            "check the GPU, its driver and the CUDA/TensorRT libraries")


def probe_memory(path: Path, feed: dict[str, np.ndarray], config: BenchConfig) -> MemoryStats:
    """Run ``onnxopt.memory_probe`` on one model in a fresh process and parse its answer."""
    with tempfile.TemporaryDirectory(prefix="onnxopt-bench-") as folder:
        feed_path = Path(folder) / "feed.npz"
        np.savez(feed_path, **feed)
        command = [sys.executable, "-m", "onnxopt.memory_probe", str(path), str(feed_path),
                   "--provider", config.provider, "--threads", str(config.threads),
                   "--runs", str(MEMORY_PROBE_RUNS)]
        if not config.ort_optimize:
            command.append("--no-ort-optimize")
        completed = subprocess.run(command, capture_output=True, text=True, check=False)
    lines = [line for line in completed.stdout.splitlines() if line.strip().startswith("{")]
    if not lines:
        tail = (completed.stderr.strip().splitlines() or [f"exit code {completed.returncode}"])[-1]
        logger.warning("memory probe of %s failed: %s", path, tail)
        return MemoryStats(peak_rss_bytes=None, error=tail)
    answer = json.loads(lines[-1])
    if "error" in answer:
        return MemoryStats(peak_rss_bytes=None, error=answer["error"])
    return MemoryStats(**answer)


def _ratio(value: float | None, reference: float | None) -> float | None:
    if value is None or reference is None or reference <= 0:
        return None
    return float(value) / float(reference)


def _interleaved_timing(sessions: list[ort.InferenceSession], feeds: list[list[dict[str, np.ndarray]]],
                        config: BenchConfig) -> tuple[list[list[float]], list[list[int]]]:
    """Round-robin runs: one of each model in turn, the starting model rotating each round."""
    count = len(sessions)
    output_names = [[output.name for output in session.get_outputs()] for session in sessions]
    seconds: list[list[float]] = [[] for _ in sessions]
    samples: list[list[int]] = [[] for _ in sessions]
    total_rounds = config.warmup_runs + config.timed_runs
    for round_index in range(total_rounds):
        timed = round_index >= config.warmup_runs
        for offset in range(count):
            index = (round_index + offset) % count
            feed = feeds[index][round_index % len(feeds[index])]
            start = time.perf_counter()
            sessions[index].run(output_names[index], feed)
            elapsed = time.perf_counter() - start
            if timed:
                seconds[index].append(elapsed)
                samples[index].append(samples_in(feed))
        if round_index == config.warmup_runs - 1:
            logger.info("warm-up done (%d runs each)", config.warmup_runs)
    return seconds, samples


def benchmark(model_paths: list[str | os.PathLike[str]], config: BenchConfig | None = None) -> BenchReport:
    """Benchmark models side by side; BadInputError on unusable models, data or options."""
    config = config or BenchConfig()
    if not model_paths:
        raise BadInputError("bench needs at least one model")
    if config.timed_runs < 1:
        raise BadInputError("--runs must be at least 1")
    if config.warmup_runs < 0:
        raise BadInputError("--warmup must not be negative")
    if config.threads < 0:
        raise BadInputError("--threads must not be negative")
    providers_for(config.provider)  # refuse an unknown or unavailable provider before any work
    paths = [Path(path) for path in model_paths]
    protos = [read_valid_proto(path) for path in paths]
    if config.data is None:
        _check_same_inputs(paths, protos)
    feeds = [_feeds_for(path, proto, config) for path, proto in zip(paths, protos, strict=True)]
    sessions = []
    for path in paths:
        logger.info("creating session for %s", path)
        try:
            sessions.append(create_session(path, config.provider, optimize=config.ort_optimize,
                                           threads=config.threads))
        except BadInputError as error:
            raise BadInputError(f"{path.name}: {error}") from None
        _check_provider_started(sessions[-1], path, config.provider)
    memory: list[MemoryStats | None] = [None] * len(paths)
    if config.measure_memory:
        for index, path in enumerate(paths):
            logger.info("measuring peak memory of %s", path)
            memory[index] = probe_memory(path, feeds[index][0], config)
    logger.info("timing %d model(s): %d warm-up + %d timed runs each, interleaved",
                len(paths), config.warmup_runs, config.timed_runs)
    seconds, samples = _interleaved_timing(sessions, feeds, config)
    names = _display_names(paths)
    results = []
    for index, path in enumerate(paths):
        total_seconds = sum(seconds[index])
        results.append(ModelBench(
            name=names[index],
            path=str(path),
            file_bytes=model_file_bytes(path, protos[index]),
            latency=LatencyStats.from_seconds(seconds[index]),
            throughput_samples_per_s=sum(samples[index]) / total_seconds if total_seconds > 0 else 0.0,
            samples_per_run=float(np.mean(samples[index])),
            runs=len(seconds[index]),
            memory=memory[index],
            providers=list(sessions[index].get_providers()),
        ))
    first = results[0]
    for result in results:
        result.ratio_to_first = {
            "latency_p50": _ratio(result.latency.p50_ms, first.latency.p50_ms),
            "latency_mean": _ratio(result.latency.mean_ms, first.latency.mean_ms),
            "throughput": _ratio(result.throughput_samples_per_s, first.throughput_samples_per_s),
            "peak_rss": _ratio(result.memory.peak_rss_bytes if result.memory else None,
                               first.memory.peak_rss_bytes if first.memory else None),
            "file_bytes": _ratio(result.file_bytes, first.file_bytes),
        }
    config_dict = asdict(config)
    config_dict["inputs"] = config.data or "random"
    config_dict["memory_method"] = MEMORY_METHOD if config.measure_memory else None
    return BenchReport(config=config_dict, machine=machine_info(config.provider), models=results)
