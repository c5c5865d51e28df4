"""What up-front validation costs: time and peak memory, on the > 2 GB sample and on embedded models.

The claim under test (issue 9): validating a model before any pass costs little even when
the model is larger than protobuf's 2 GB limit, because no weight is read (data lengths
come from the TensorProto's fields, the external-data ``length`` and the file size; the
checker runs on a weight-stripped copy). For each model, two fresh processes parse it
(``read_proto``, weights stay on disk); one of them then runs ``validate_model``. Peak
RSS of each comes from ``bench.measure`` (the process's own high-water mark); the
difference is what validation adds, and its wall time is measured inside the process.

    python -m bench.validation_cost                  # builds the 2.48 GB MLP, deletes it afterwards
    python -m bench.validation_cost --keep-dir DIR   # reuse or keep the large model in DIR

Writes ``bench/results/validation_cost.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.bad_input_fuzz import cpu_flags
from bench.measure import run_measured
from onnxopt.benchmark import machine_info
from onnxopt.model_io import model_file_bytes

logger = logging.getLogger("bench.validation_cost")

PROJECT_ROOT = Path(__file__).resolve().parents[1]
RESULTS = PROJECT_ROOT / "bench" / "results"
REPEATS = 3


def _measure_in_process(path: Path, validate: bool) -> dict[str, Any]:
    """Parse ``path`` and optionally validate it; print the timings as JSON (run in a child process)."""
    from onnxopt.model_io import read_proto
    from onnxopt.validate import validate_model

    started = time.perf_counter()
    proto = read_proto(path)
    parsed = time.perf_counter()
    timings = []
    if validate:
        for _ in range(REPEATS):
            start = time.perf_counter()
            validate_model(proto, path.resolve().parent, str(path))
            timings.append(time.perf_counter() - start)
    return {"parse_s": parsed - started, "validate_s": min(timings) if timings else None}


def measure(path: Path) -> dict[str, Any]:
    """Peak RSS with and without validation (separate processes) and validation's wall time."""
    result: dict[str, Any] = {"model": path.name, "file_bytes": model_file_bytes(path)}
    for label, validate in (("parse_only", False), ("parse_and_validate", True)):
        command = [sys.executable, "-m", "bench.validation_cost", "--child", str(path)] + (["--validate"] if validate
                                                                                           else [])
        measured = run_measured(command, cwd=PROJECT_ROOT)
        if measured.returncode != 0:
            raise SystemExit(f"{label} on {path} failed: {measured.last_error_line()}")
        result[label] = {"peak_rss_bytes": measured.peak_rss_bytes, **json.loads(measured.stdout.splitlines()[-1])}
    result["validation_peak_rss_added_bytes"] = (result["parse_and_validate"]["peak_rss_bytes"]
                                                 - result["parse_only"]["peak_rss_bytes"])
    result["validate_s"] = result["parse_and_validate"]["validate_s"]
    logger.info("%s: validate %.2f s, +%.1f MiB peak RSS", path.name, result["validate_s"],
                result["validation_peak_rss_added_bytes"] / 2**20)
    return result


def _models(workdir: Path) -> list[Path]:
    from models import large_mlp
    from models.cache import cached_model

    large = workdir / "large_mlp-base.onnx"
    if not large.exists():
        free = shutil.disk_usage(workdir).free
        if free < 1.2 * large_mlp.SIZES["base"].weight_bytes:
            raise SystemExit(f"{workdir}: {free / 2**30:.1f} GiB free, not enough for the 2.48 GB model")
        logger.info("building %s", large)
        large_mlp.build(large, size="base")
    return [large, cached_model("minilm"), cached_model("gpt2", "small"), cached_model("resnet18", "small")]


def markdown(summary: dict[str, Any]) -> str:
    machine = summary["machine"]
    lines = [
        "# Up-front validation: time and peak memory", "",
        f"Command: `{summary['command']}`  ", f"Date: {summary['date']}  ",
        f"Machine: {machine['platform']}, {machine['cpu_count']} cores, onnxruntime {machine['onnxruntime']}; "
        f"CPU flags: {', '.join(summary['cpu_flags'])}.", "",
        f"Validation time: best of {REPEATS} in one process. Peak RSS: two fresh processes per model, one parsing "
        "the model (`read_proto`, weights stay on disk), one parsing and validating; the difference is what "
        "validation adds.", "",
        "| model | size on disk | weights | parse | validate | peak RSS, parse only | peak RSS, parse + validate "
        "| added by validation |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for row in summary["models"]:
        where = "external data" if row["model"].startswith("large_mlp") else "embedded"
        lines.append(
            f"| {row['model']} | {row['file_bytes'] / 2**20:,.0f} MiB | {where} | {row['parse_only']['parse_s']:.2f} s "
            f"| {row['validate_s']:.2f} s | {row['parse_only']['peak_rss_bytes'] / 2**20:.0f} MiB "
            f"| {row['parse_and_validate']['peak_rss_bytes'] / 2**20:.0f} MiB "
            f"| {row['validation_peak_rss_added_bytes'] / 2**20:+.0f} MiB |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--validate", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--keep-dir", type=Path, help="build (or reuse) the large model here and keep it")
    parser.add_argument("--out", type=Path, default=RESULTS / "validation_cost", help="results path without suffix")
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(_measure_in_process(args.child, args.validate)))
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    workdir = args.keep_dir or Path(tempfile.mkdtemp(prefix="onnxopt-validation-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        rows = [measure(path) for path in _models(workdir)]
    finally:
        if args.keep_dir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    summary = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join(["python -m bench.validation_cost", *sys.argv[1:]]),
        "machine": machine_info("cpu"),
        "cpu_flags": cpu_flags(),
        "models": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(summary, indent=2))
    args.out.with_suffix(".md").write_text(markdown(summary))
    print(markdown(summary))


if __name__ == "__main__":
    main()
