"""onnxopt's presets against the tools users would pick instead, on the sample models.

For each model: build (or reuse) the fp32 original, run every onnxopt preset
(``onnxopt optimize IN -o OUT --preset P``) and every peer (``bench.peers``) in a process
of its own — recording wall time and peak RSS (``bench.measure``) — then load every
result in onnxruntime and measure, side by side in one run: file size, node count,
latency relative to fp32 (interleaved, ``onnxopt.benchmark``) and fidelity (MiniLM
embedding cosine vs the PyTorch reference, digits accuracy on the held-out split, output
error vs fp32 for the others). A tool that crashes, or writes a model onnxruntime cannot
load, gets a row saying so: that is a result. A preset the CLI does not know (yet) is
skipped with a note.

Run from the project root:

    python -m bench.compare                                # full run, realistic sizes
    python -m bench.compare --models minilm,digits --size tiny --runs 20   # quick look

Writes ``bench/results/compare.md`` and ``compare.json`` (``--out`` to change).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.metadata
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from bench.measure import run_measured
from bench.peers import NEEDS_CALIBRATION, NOTE_PREFIX, PEERS
from onnxopt.benchmark import BenchConfig, benchmark, machine_info, model_file_bytes
from onnxopt.data import make_feeds
from onnxopt.errors import BadInputError
from onnxopt.external_data import external_info, is_external
from onnxopt.model_io import iter_model_tensor_protos, read_proto
from onnxopt.runtime import create_session

logger = logging.getLogger("bench.compare")

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODELS = ("minilm", "digits", "resnet50", "mobilenetv2", "bert", "gpt2")
DEFAULT_PRESETS = ("default", "fp16", "int8", "int4")
# Presets that calibrate on data; the others get no --calib.
CALIBRATED_PRESETS = {"int8", "int4"}
UNKNOWN_PRESET_MARKERS = ("unknown preset", "unknown pass")
# Samples of the seeded inputs of random-weight models (sequence lengths come with each model's size).
RANDOM_EVAL_SAMPLES = 8
RANDOM_CALIB_SAMPLES = 16
OPTIMIZER_TIMEOUT_S = 3600
NOTE_MAX_CHARS = 160  # in the markdown table; the JSON keeps notes whole


# --------------------------------------------------------------------------- models


@dataclass
class Fidelity:
    """What a variant's outputs are judged by; ``headline`` is the one number in the table."""

    headline: str
    metrics: dict[str, float] = field(default_factory=dict)


Judge = Callable[[ort.InferenceSession, ort.InferenceSession, list[dict[str, np.ndarray]]], Fidelity]


@dataclass
class ModelSpec:
    """A sample model: where its fp32 file comes from, its data and how its fidelity is judged.

    ``data(size, workdir)`` returns (evaluation DATA, calibration DATA), both in onnxopt's
    DATA format, so onnxopt's ``--calib`` and the peers' calibration readers see the same
    samples; ``judge(candidate, fp32, eval_feeds)`` measures a variant.
    """

    name: str
    source: Callable[[str], Path]
    data: Callable[[str, Path], tuple[Path, Path]]
    judge: Judge
    eval_batch: int = 1
    latency_batch: int = 1


def _cached(name: str) -> Callable[[str], Path]:
    def source(size: str) -> Path:
        from models.cache import cached_model

        return cached_model(name, size)

    return source


def _stacked(feeds: list[dict[str, np.ndarray]], target: Path) -> Path:
    """Feeds with a batch axis, concatenated along it into one DATA .npz."""
    np.savez(target, **{name: np.concatenate([feed[name] for feed in feeds]) for name in feeds[0]})
    return target


def _sample_data(name: str) -> Callable[[str, Path], tuple[Path, Path]]:
    """Seeded inputs on the distribution the random-weight model was built for (``models.evaluate``)."""

    def make(size: str, workdir: Path) -> tuple[Path, Path]:
        from models.evaluate import sample_feeds

        evaluation = sample_feeds(name, size, batch_size=1, count=RANDOM_EVAL_SAMPLES, seed=1)
        calibration = sample_feeds(name, size, batch_size=1, count=RANDOM_CALIB_SAMPLES, seed=1000)
        return _stacked(evaluation, workdir / "eval.npz"), _stacked(calibration, workdir / "calib.npz")

    return make


def _minilm_data(size: str, workdir: Path) -> tuple[Path, Path]:
    from models.evaluate import MINILM_REFERENCE

    return MINILM_REFERENCE, MINILM_REFERENCE.with_name("minilm_calib.npz")


def _digits_data(size: str, workdir: Path) -> tuple[Path, Path]:
    from models.digits import CALIBRATION_PATH, TEST_PATH

    return TEST_PATH, CALIBRATION_PATH


def _digits_model(size: str) -> Path:
    from models.digits import model_path

    return model_path()


def judge_against_fp32(candidate: ort.InferenceSession, fp32: ort.InferenceSession,
                       feeds: list[dict[str, np.ndarray]]) -> Fidelity:
    """Output error vs the fp32 model on the same inputs (``models.evaluate.output_error``)."""
    from models.evaluate import output_error

    error = output_error(candidate, fp32, feeds)
    metrics = {f"{key}_vs_fp32": value for key, value in error.as_dict().items()}
    return Fidelity(f"max abs {error.max_abs:.2e}, rel {error.max_rel:.2e}, cos {error.cosine:.6f}", metrics)


def judge_minilm(candidate: ort.InferenceSession, fp32: ort.InferenceSession,
                 feeds: list[dict[str, np.ndarray]]) -> Fidelity:
    """Sentence-embedding cosine vs the PyTorch reference on real sentences, plus error vs fp32."""
    from models.evaluate import minilm_cosine

    cosine = minilm_cosine(candidate)
    metrics = {"mean_cosine_vs_reference": cosine["mean_cosine"], "min_cosine_vs_reference": cosine["min_cosine"],
               "max_abs_error_vs_reference": cosine["max_abs_error"],
               **judge_against_fp32(candidate, fp32, feeds).metrics}
    return Fidelity(f"cos vs reference: mean {cosine['mean_cosine']:.6f}, min {cosine['min_cosine']:.6f}", metrics)


def judge_digits(candidate: ort.InferenceSession, fp32: ort.InferenceSession,
                 feeds: list[dict[str, np.ndarray]]) -> Fidelity:
    """Top-1 accuracy on the 540 held-out images, plus error vs fp32."""
    from models.digits import top1_accuracy

    accuracy = top1_accuracy(candidate)
    return Fidelity(f"accuracy {accuracy:.4f}",
                    {"accuracy": accuracy, **judge_against_fp32(candidate, fp32, feeds).metrics})


SPECS: dict[str, ModelSpec] = {
    "minilm": ModelSpec("minilm", _cached("minilm_pooled"), _minilm_data, judge_minilm, eval_batch=8),
    "digits": ModelSpec("digits", _digits_model, _digits_data, judge_digits, eval_batch=60, latency_batch=16),
}
for _name in ("resnet18", "resnet50", "mobilenetv2", "bert", "gpt2"):
    SPECS[_name] = ModelSpec(_name, _cached(_name), _sample_data(_name), judge_against_fp32)


# --------------------------------------------------------------------------- optimizers


@dataclass
class Row:
    """One variant of one model: how it was made and what it measures."""

    model: str
    variant: str
    tool: str
    status: str  # "reference", "ok", "skipped", "failed", "unloadable"
    note: str = ""
    file_bytes: int | None = None
    nodes: int | None = None
    optimize_wall_s: float | None = None
    optimize_peak_rss_bytes: int | None = None
    latency_p50_ms: float | None = None
    latency_ratio_to_fp32: float | None = None
    fidelity: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    path: str | None = None


def count_nodes(graph: onnx.GraphProto) -> int:
    """Nodes of a graph and of every subgraph inside it."""
    total = 0
    for node in graph.node:
        total += 1
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                total += count_nodes(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                total += sum(count_nodes(sub) for sub in attr.graphs)
    return total


def _variants(presets: list[str], peers: list[str]) -> list[tuple[str, str, str]]:
    """(label, tool, name) for every variant to make."""
    return ([(f"onnxopt {preset}", "onnxopt", preset) for preset in presets]
            + [(peer, "peer", peer) for peer in peers])


def _command(tool: str, name: str, source: Path, target: Path, calib: Path | None, calib_batch: int) -> list[str]:
    if tool == "onnxopt":
        command = [sys.executable, "-m", "onnxopt.cli", "optimize", str(source), "-o", str(target), "--preset", name]
        if name in CALIBRATED_PRESETS and calib is not None:
            command += ["--calib", str(calib), "--batch-size", str(calib_batch)]
        return command
    command = [sys.executable, "-m", "bench.peers", name, str(source), str(target)]
    if name in NEEDS_CALIBRATION and calib is not None:
        command += ["--calib", str(calib), "--batch-size", str(calib_batch)]
    return command


def make_variant(spec: ModelSpec, label: str, tool: str, name: str, source: Path, workdir: Path,
                 calib: Path | None, timeout_s: float) -> Row:
    """Run one optimizer in its own process; a crash or refusal becomes the row's status."""
    target = workdir / f"{label.replace(' ', '_')}.onnx"
    for stale in workdir.glob(target.name + "*"):
        stale.unlink()
    logger.info("%s: %s", spec.name, label)
    # Run inside the workdir: some tools drop temporary files into the current folder.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")]))}
    measured = run_measured(_command(tool, name, source, target, calib, spec.eval_batch), timeout_s=timeout_s,
                            cwd=workdir, env=env)
    notes = [line[len(NOTE_PREFIX):] for line in measured.stdout.splitlines() if line.startswith(NOTE_PREFIX)]
    row = Row(spec.name, label, tool, "ok", note="; ".join(notes), optimize_wall_s=measured.wall_s,
              optimize_peak_rss_bytes=measured.peak_rss_bytes, path=str(target))
    if measured.timed_out:
        row.status, row.note = "failed", f"timed out after {timeout_s:.0f} s"
    elif measured.returncode != 0:
        message = measured.last_error_line()
        if tool == "onnxopt" and any(marker in message for marker in UNKNOWN_PRESET_MARKERS):
            row.status, row.note = "skipped", f"preset not available yet: {message}"
            row.optimize_wall_s = row.optimize_peak_rss_bytes = None
        else:
            row.status, row.note = "failed", f"exit {measured.returncode}: {message}"
    elif not target.exists():
        row.status, row.note = "failed", "exited 0 but wrote no model"
    if row.status != "ok":
        row.path = None
    return row


# --------------------------------------------------------------------------- measuring


def _private_copy(source: Callable[[str], Path], size: str, folder: Path, attempts: int = 3) -> Path:
    """Copy the fp32 model (and its external data) out of the shared cache.

    Other processes may rebuild a cached model and remove the old file while we measure
    it; a private copy keeps the whole comparison on one and the same file.
    """
    folder.mkdir(parents=True, exist_ok=True)
    for attempt in range(attempts):
        path = source(size)
        try:
            proto = read_proto(path)
            names = {external_info(t).get("location", "") for t in iter_model_tensor_protos(proto) if is_external(t)}
            for name in sorted(names):
                shutil.copy2(path.parent / name, folder / name)
            shutil.copy2(path, folder / path.name)
            return folder / path.name
        except (BadInputError, FileNotFoundError):
            if attempt == attempts - 1:
                raise
            logger.info("%s vanished from the cache while copying; asking again", path)
    raise AssertionError("unreachable")


def describe(row: Row, path: Path) -> None:
    """Size and node count; a file onnx cannot parse is a failed row."""
    try:
        proto = read_proto(path)
    except BadInputError as error:
        row.status, row.note = "unloadable", str(error)
        return
    row.file_bytes = model_file_bytes(path, proto)
    row.nodes = count_nodes(proto.graph)


def measure_model(spec: ModelSpec, size: str, presets: list[str], peers: list[str], workdir: Path,
                  runs: int, warmup: int, threads: int, timeout_s: float) -> list[Row]:
    """Every variant of one model, measured side by side."""
    workdir.mkdir(parents=True, exist_ok=True)
    fp32 = _private_copy(spec.source, size, workdir / "fp32")
    eval_data, calib = spec.data(size, workdir)
    rows = [Row(spec.name, "fp32", "original", "reference", path=str(fp32))]
    for label, tool, name in _variants(presets, peers):
        rows.append(make_variant(spec, label, tool, name, fp32, workdir, calib, timeout_s))
    for row in rows:
        if row.path:
            describe(row, Path(row.path))
    sessions: dict[int, ort.InferenceSession] = {}
    for index, row in enumerate(rows):
        if row.path is None or row.status not in ("ok", "reference"):
            continue
        try:
            sessions[index] = create_session(row.path, optimize=True)
        except BadInputError as error:
            row.status, row.note = "unloadable", str(error).replace(str(Path(row.path).parent) + os.sep, "")
    if 0 not in sessions:
        raise RuntimeError(f"{spec.name}: onnxruntime cannot load the fp32 model itself")
    feeds = list(make_feeds(read_proto(fp32), eval_data, spec.eval_batch))
    for index, session in list(sessions.items()):
        row = rows[index]
        try:
            fidelity = spec.judge(session, sessions[0], feeds)
        except Exception as error:  # a model that loads but fails at run time is a result too
            row.status, row.note = "failed", f"run failed: {type(error).__name__}: {str(error).splitlines()[0]}"
            del sessions[index]
            continue
        row.fidelity, row.metrics = fidelity.headline, fidelity.metrics
    loadable = [rows[index] for index in sorted(sessions)]
    sessions.clear()  # the benchmark makes its own, one model at a time
    config = BenchConfig(threads=threads, batch_size=spec.latency_batch, data=str(eval_data) if eval_data else None,
                         warmup_runs=warmup, timed_runs=runs, measure_memory=False)
    report = benchmark([row.path for row in loadable], config)
    for row, result in zip(loadable, report.models, strict=True):
        row.latency_p50_ms = result.latency.p50_ms
        row.latency_ratio_to_fp32 = result.ratio_to_first["latency_p50"]
    return rows


# --------------------------------------------------------------------------- reporting


def _mib(count: int | None) -> str:
    return "—" if count is None else f"{count / 2**20:.2f} MiB"


def _milliseconds(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f} ms"


def _seconds(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f} s"


def _cell(value: Any, fmt: str) -> str:
    return "—" if value is None else format(value, fmt)


def markdown(rows: list[Row], header: dict[str, Any]) -> str:
    """The results as markdown: one table per model."""
    lines = ["# onnxopt vs peers", "",
             f"Command: `{header['command']}`  ", f"Date: {header['date']}  ",
             f"Machine: {header['machine'].get('cpu', header['machine']['processor'])}, "
             f"{header['machine']['cpu_count']} cores, "
             f"{header['machine']['platform']}; onnxruntime {header['machine']['onnxruntime']} (CPU).  ",
             "Versions: " + ", ".join(f"{name} {version}" for name, version in header["versions"].items()) + ".  ",
             f"Latency: p50 of {header['runs']} interleaved runs after {header['warmup']} warm-up, onnxruntime "
             f"CPU ({header['threads'] or 'default'} intra-op threads) with its default graph optimizations, ratio "
             "to fp32 (lower is faster). Fidelity: the same sessions. Optimizer time and "
             "peak RSS: the whole optimizer process (interpreter start and imports included).", ""]
    for model in dict.fromkeys(row.model for row in rows):
        model_rows = [row for row in rows if row.model == model]
        fp32 = model_rows[0]
        lines += [f"## {model}", "",
                  "| variant | size | size vs fp32 | nodes | latency p50 | vs fp32 | fidelity | optimize time "
                  "| optimize peak RSS | note |",
                  "|---|---:|---:|---:|---:|---:|---|---:|---:|---|"]
        for row in model_rows:
            size_ratio = (row.file_bytes / fp32.file_bytes) if row.file_bytes and fp32.file_bytes else None
            note = row.note if len(row.note) <= NOTE_MAX_CHARS else row.note[: NOTE_MAX_CHARS - 1] + "…"
            note = note if row.status in ("ok", "reference") else f"**{row.status}**: {note}"
            lines.append(
                f"| {row.variant} | {_mib(row.file_bytes)} | {_cell(size_ratio, '.2f')} | {_cell(row.nodes, 'd')} "
                f"| {_milliseconds(row.latency_p50_ms)} | {_cell(row.latency_ratio_to_fp32, '.2f')} "
                f"| {row.fidelity or '—'} | {_seconds(row.optimize_wall_s)} "
                f"| {_mib(row.optimize_peak_rss_bytes)} | {note.replace('|', '/')} |")
        lines.append("")
    return "\n".join(lines)


def tool_versions() -> dict[str, str]:
    """Versions of onnxopt and every peer, so a table can be reproduced."""
    versions = {}
    for distribution in ("onnxopt", "onnx", "onnxruntime-gpu", "onnxruntime", "onnxconverter-common", "onnxsim",
                         "onnxslim", "onnxoptimizer"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[distribution] = importlib.metadata.version(distribution)
    return versions


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS),
                        help=f"comma-separated, from {', '.join(SPECS)}")
    parser.add_argument("--size", default="base", choices=("tiny", "small", "base"),
                        help="size of the seeded-random models (MiniLM and digits have one size)")
    parser.add_argument("--presets", default=",".join(DEFAULT_PRESETS), help="onnxopt presets to run")
    parser.add_argument("--peers", default=",".join(PEERS), help=f"from {', '.join(PEERS)}")
    parser.add_argument("--runs", type=int, default=100, help="timed runs per variant (interleaved)")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1,
                        help="onnxruntime intra-op threads; 1 keeps ratios stable on a shared machine, 0: its default")
    parser.add_argument("--timeout", type=float, default=OPTIMIZER_TIMEOUT_S, help="seconds per optimizer run")
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "bench" / "results")
    parser.add_argument("--workdir", type=Path, default=PROJECT_ROOT / "bench" / "out" / "compare")
    parser.add_argument("--keep", action="store_true", help="keep the optimized models in --workdir")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")

    names = [name.strip() for name in args.models.split(",") if name.strip()]
    unknown = [name for name in names if name not in SPECS]
    peers = [name.strip() for name in args.peers.split(",") if name.strip()]
    unknown += [name for name in peers if name not in PEERS]
    if unknown:
        parser.error(f"unknown model(s) or peer(s): {', '.join(unknown)}")
    presets = [name.strip() for name in args.presets.split(",") if name.strip()]

    started = time.perf_counter()
    rows: list[Row] = []
    for name in names:
        workdir = args.workdir / f"{name}-{args.size}"
        try:
            rows += measure_model(SPECS[name], args.size, presets, peers, workdir, args.runs, args.warmup,
                                  args.threads, args.timeout)
        except Exception as error:  # one model failing must not lose the others' results
            logger.exception("%s failed", name)
            rows.append(Row(name, "fp32", "original", "failed", note=f"{type(error).__name__}: {error}"))
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    header = {
        "command": "python -m bench.compare " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine_info("cpu"),
        "size": args.size, "runs": args.runs, "warmup": args.warmup, "threads": args.threads,
        "presets": presets, "peers": peers, "seconds": round(time.perf_counter() - started, 1),
        "versions": tool_versions(),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    for row in rows:
        if not args.keep:
            row.path = None  # deleted with the workdir
    (args.out / "compare.json").write_text(json.dumps({**header, "rows": [asdict(r) for r in rows]}, indent=2) + "\n")
    (args.out / "compare.md").write_text(markdown(rows, header) + "\n")
    logger.info("wrote %s and %s (%.0f s)", args.out / "compare.md", args.out / "compare.json", header["seconds"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
