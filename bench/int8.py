"""int8 side by side: onnxopt's ``qdq`` (static and dynamic) against onnxruntime's own quantizers.

For each sample model: the fp32 original, onnxopt ``--preset int8`` with calibration DATA
(static Q/DQ), onnxopt dynamic int8 with DATA (used for outlier smoothing) and without,
onnxruntime's ``quantize_dynamic(per_channel=True)`` and ``quantize_static`` (QDQ, S8S8,
per-channel, after ``quant_pre_process``; run as ``bench.peers`` runs them). Each variant
is judged like ``bench.compare`` judges it (MiniLM: embedding cosine to the PyTorch
reference on sentences not used for calibration; digits: held-out accuracy; others:
output cosine vs fp32), and all variants of a model are timed round-robin in the same
rounds on onnxruntime CPU, graph optimizations on, one thread (stable ratios on a shared
machine), as time relative to fp32.

    python -m bench.int8                      # MiniLM, digits, ResNet-50, MobileNetV2, BERT-base, GPT-2
    python -m bench.int8 --models digits,minilm --size tiny --rounds 9

Writes ``bench/results/int8.md`` and ``int8.json``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import sys
import time
from argparse import Namespace
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench.compare import SPECS
from bench.peers import PEERS
from onnxopt.api import optimize
from onnxopt.benchmark import machine_info
from onnxopt.cpu_features import host_cpu
from onnxopt.data import make_feeds
from onnxopt.model_io import load, read_proto
from onnxopt.paired_timing import relative_times
from onnxopt.runtime import create_session

logger = logging.getLogger("bench.int8")
PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODELS = ("minilm", "digits", "resnet50", "mobilenetv2", "bert", "gpt2")
TRANSFORMERS = {"minilm", "bert", "gpt2"}


@dataclass
class Variant:
    model: str
    name: str
    status: str = "ok"
    note: str = ""
    seconds: float | None = None
    file_bytes: int | None = None
    time_ratio_to_fp32: float | None = None
    fidelity: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    qdq_stats: dict = field(default_factory=dict)


def _onnxopt(source: Path, target: Path, calib: Path | None, overrides: list[str]) -> dict:
    result = optimize(source, target, preset="int8", calib=calib, overrides=overrides)
    record = next(r for r in result.report.records if r.name == "qdq")
    keep = ("mode", "quantized_by_op", "int8_over_fp32_time", "smoothed_inputs", "float_not_faster",
            "variant_time_ratios", "calibration_batches", "method", "weight_limit", "timing_threads")
    stats = {key: value for key, value in record.stats.items() if key in keep}
    stats["status"] = record.status
    stats["notes"] = record.notes
    return stats


def _in_folder(folder: Path, runner, *args) -> None:
    """Run an onnxruntime quantizer with ``folder`` as cwd: it leaves temporary files in its cwd."""
    previous = Path.cwd()
    os.chdir(folder)
    try:
        runner(*args)
    finally:
        os.chdir(previous)


def build_variants(name: str, source: Path, calib: Path, workdir: Path) -> list[tuple[str, Path | None, object]]:
    """(label, output path, maker) for every variant of one model."""
    makers: list[tuple[str, object]] = [
        ("onnxopt int8 static", lambda out: _onnxopt(source, out, calib, [])),
    ]
    if name in TRANSFORMERS:
        makers += [
            ("onnxopt int8 dynamic (DATA)", lambda out: _onnxopt(source, out, calib, ["qdq.mode=dynamic"])),
            ("onnxopt int8 dynamic (no DATA)", lambda out: _onnxopt(source, out, None, [])),
        ]
    arguments = Namespace(calib=calib, batch_size=1)
    makers += [
        ("ort quantize_dynamic", lambda out: _in_folder(workdir, PEERS["ort-dynamic"], source, out, arguments)),
        ("ort quantize_static QDQ", lambda out: _in_folder(workdir, PEERS["ort-static-qdq"], source, out, arguments)),
    ]
    return [(label, workdir / f"{index}.onnx", maker) for index, (label, maker) in enumerate(makers)]


def measure(name: str, size: str, rounds: int, workdir: Path) -> list[Variant]:
    spec = SPECS[name]
    workdir.mkdir(parents=True, exist_ok=True)
    source = spec.source(size)
    eval_data, calib = spec.data(size, workdir)
    proto = read_proto(source)
    eval_feeds = list(make_feeds(proto, eval_data, spec.eval_batch))
    latency_feed = next(iter(make_feeds(proto, eval_data, spec.latency_batch)))
    fp32_session = create_session(source)
    rows = [Variant(name, "fp32", file_bytes=source.stat().st_size, time_ratio_to_fp32=1.0)]
    reference = spec.judge(fp32_session, fp32_session, eval_feeds)
    rows[0].fidelity, rows[0].metrics = reference.headline, reference.metrics
    timed: list[tuple[Variant, Path]] = []
    for label, target, maker in build_variants(name, source, calib, workdir):
        row = Variant(name, label)
        started = time.perf_counter()
        try:
            stats = maker(target)
            row.qdq_stats = stats or {}
        except Exception as error:  # a failing quantizer is a result, not the end of the run
            row.status, row.note = "failed", f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"
            rows.append(row)
            continue
        row.seconds = round(time.perf_counter() - started, 1)
        row.file_bytes = target.stat().st_size
        try:
            judged = spec.judge(create_session(target), fp32_session, eval_feeds)
            row.fidelity, row.metrics = judged.headline, judged.metrics
            timed.append((row, target))
        except Exception as error:
            row.status, row.note = "unloadable", f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"
        rows.append(row)
    if timed:
        comparisons = relative_times(load(source), [load(path) for _, path in timed], latency_feed, threads=1,
                                     rounds=rounds)
        for (row, _), comparison in zip(timed, comparisons, strict=True):
            row.time_ratio_to_fp32 = round(comparison.ratio, 3)
        rows[0].note = f"fp32 {comparisons[0].baseline_ms:.2f} ms per run (median, 1 thread)"
    return rows


def markdown(rows: list[Variant], header: dict) -> str:
    lines = [
        "# int8: onnxopt against onnxruntime's quantizers",
        "",
        f"`{header['command']}` — {header['date']}, {header['machine'].get('cpu_count')} CPUs, "
        f"CPU flags {header.get('cpu', 'not recorded')}, onnxruntime {header['machine'].get('onnxruntime')}, "
        f"{header['rounds']} interleaved rounds, onnxruntime CPU, 1 thread, graph optimizations on; "
        f"load average {header.get('load', 'not recorded')}.",
        "Time is relative to fp32 on the same rounds (below 1: faster).",
        "",
        "| model | variant | time vs fp32 | fidelity | MiB | note |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        ratio = f"{row.time_ratio_to_fp32:.2f}" if row.time_ratio_to_fp32 is not None else "—"
        size = f"{row.file_bytes / 2**20:.1f}" if row.file_bytes else "—"
        note = row.note or "; ".join(row.qdq_stats.get("notes", []))
        lines.append(f"| {row.model} | {row.name} | {ratio} | {row.fidelity} | {size} | {note[:150]} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS))
    parser.add_argument("--size", default="base", choices=("tiny", "small", "base"))
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "bench" / "results")
    parser.add_argument("--workdir", type=Path, default=PROJECT_ROOT / "bench" / "out" / "int8")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    names = [name.strip() for name in args.models.split(",") if name.strip()]
    unknown = [name for name in names if name not in SPECS]
    if unknown:
        parser.error(f"unknown model(s): {', '.join(unknown)}")
    started = time.perf_counter()
    load_before = os.getloadavg()
    rows: list[Variant] = []
    for name in names:
        logger.info("%s", name)
        try:
            rows += measure(name, args.size, args.rounds, args.workdir.resolve() / f"{name}-{args.size}")
        except Exception as error:  # keep the other models' results
            logger.exception("%s failed", name)
            rows.append(Variant(name, "fp32", status="failed", note=f"{type(error).__name__}: {error}"))
    header = {
        "command": "python -m bench.int8 " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine_info("cpu"), "cpu": host_cpu().describe(), "size": args.size, "rounds": args.rounds,
        "seconds": round(time.perf_counter() - started, 1),
        "load": " / ".join(f"{value:.1f}" for value in load_before) + " (1/5/15 min) before, "
                + " / ".join(f"{value:.1f}" for value in os.getloadavg()) + " after",
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "int8.json").write_text(json.dumps({**header, "rows": [asdict(r) for r in rows]}, indent=2) + "\n")
    (args.out / "int8.md").write_text(markdown(rows, header) + "\n")
    logger.info("wrote %s (%.0f s)", args.out / "int8.md", header["seconds"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
