"""Peak memory of int8 calibration against the number of calibration samples (MiniLM).

Each measurement runs in a fresh subprocess (peak RSS is a high-water mark that never
falls, so one process cannot measure several runs): load MiniLM, then run the ``qdq``
pass in static mode (smoothing statistics + histogram calibration, percentile) on the
first N samples of a DATA file, batch size 1, and report the process's peak RSS and its
RSS just before the pass. The 512-sample DATA is the 64 real calibration sentences of
``tests/data/minilm_calib.npz`` repeated 8 times — memory does not depend on the
sentences, only on how many batches stream through.

With ``--with-onnxruntime`` it also measures onnxruntime's ``quantize_static`` (QDQ,
MinMax) on the same data for a few small N, to show the growth we avoid.

    python -m bench.calibration_memory                 # 32 and 512 samples
    python -m bench.calibration_memory --samples 32,128,512 --with-onnxruntime

Writes ``bench/results/calibration_memory.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PROJECT_ROOT = Path(__file__).resolve().parents[1]
CALIBRATION = PROJECT_ROOT / "tests" / "data" / "minilm_calib.npz"
logger = logging.getLogger("bench.calibration_memory")


def _rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _peak_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak * 1024 if sys.platform.startswith("linux") else peak


def child_onnxopt(data: Path, samples: int) -> dict:
    """In the subprocess: calibrate MiniLM with onnxopt on the first ``samples`` samples."""
    from models.cache import cached_model
    from onnxopt.data import make_feeds
    from onnxopt.model_io import load, read_proto
    from onnxopt.pass_api import PassContext
    from onnxopt.passes.quantization.qdq import QdqPass

    source = cached_model("minilm")
    model = load(source)
    feeds = make_feeds(read_proto(source), data, 1, max_batches=samples)
    before = _rss_bytes()
    started = time.perf_counter()
    options = QdqPass.make_options({"mode": "static", "only_if_faster": False})
    result = QdqPass(options).run(model, PassContext(data=feeds))
    return {"tool": "onnxopt qdq (static, percentile)", "samples": samples, "rss_before_bytes": before,
            "peak_rss_bytes": _peak_bytes(), "seconds": round(time.perf_counter() - started, 1),
            "calibration_batches": result.stats.get("calibration_batches"),
            "statistics_bytes": result.stats.get("calibration_statistics_bytes")}


def child_onnxruntime(data: Path, samples: int) -> dict:
    """In the subprocess: onnxruntime's quantize_static (QDQ, MinMax) on the same samples."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from models.cache import cached_model
    from onnxopt.data import make_feeds
    from onnxopt.model_io import read_proto

    source = cached_model("minilm")

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.feeds = iter(make_feeds(read_proto(source), data, 1, max_batches=samples))

        def get_next(self) -> dict | None:
            return next(self.feeds, None)

    before = _rss_bytes()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        quantize_static(str(source), str(Path(folder) / "q.onnx"), Reader(), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    return {"tool": "onnxruntime quantize_static (QDQ, MinMax)", "samples": samples, "rss_before_bytes": before,
            "peak_rss_bytes": _peak_bytes(), "seconds": round(time.perf_counter() - started, 1)}


def repeated_data(samples: int, folder: Path) -> Path:
    """The real calibration sentences, repeated until there are ``samples`` of them."""
    with np.load(CALIBRATION) as archive:
        arrays = {name: archive[name] for name in archive.files}
    count = len(next(iter(arrays.values())))
    repeats = -(-samples // count)
    target = folder / f"minilm_calib_{samples}.npz"
    np.savez(target, **{name: np.concatenate([values] * repeats)[:samples] for name, values in arrays.items()})
    return target


def measure(tool: str, samples: int, folder: Path) -> dict:
    data = repeated_data(samples, folder)
    command = [sys.executable, "-m", "bench.calibration_memory", "--child", tool, "--data", str(data),
               "--samples", str(samples)]
    # The child runs in the scratch folder: onnxruntime's quantizer writes temporary files into its cwd.
    done = subprocess.run(command, cwd=folder, capture_output=True, text=True, check=False,
                          env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)})
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"tool": tool, "samples": samples, "error": f"exit {done.returncode}: {tail}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def markdown(rows: list[dict], header: dict) -> str:
    lines = ["# Calibration memory (MiniLM, batch size 1)", "", f"`{header['command']}` — {header['date']}", "",
             "| tool | samples | peak RSS MiB | RSS before MiB | growth during calibration MiB | seconds |",
             "|---|---|---|---|---|---|"]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['tool']} | {row['samples']} | failed: {row['error']} | | | |")
            continue
        peak, before = row["peak_rss_bytes"] / 2**20, row["rss_before_bytes"] / 2**20
        lines.append(f"| {row['tool']} | {row['samples']} | {peak:.0f} | {before:.0f} | {peak - before:.0f} "
                     f"| {row['seconds']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", default="32,512", help="comma-separated sample counts")
    parser.add_argument("--with-onnxruntime", action="store_true", help="also measure quantize_static (8, 32)")
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "bench" / "results")
    parser.add_argument("--child", choices=("onnxopt", "onnxruntime"), help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        logging.disable(logging.WARNING)
        worker = child_onnxopt if args.child == "onnxopt" else child_onnxruntime
        print(json.dumps(worker(args.data, int(args.samples))))
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    counts = [int(item) for item in args.samples.split(",") if item.strip()]
    rows = []
    with tempfile.TemporaryDirectory(prefix="calib-memory-") as folder:
        for samples in counts:
            logger.info("onnxopt, %d samples", samples)
            rows.append(measure("onnxopt", samples, Path(folder)))
        if args.with_onnxruntime:
            for samples in (8, 32):
                logger.info("onnxruntime, %d samples", samples)
                rows.append(measure("onnxruntime", samples, Path(folder)))
    header = {"command": "python -m bench.calibration_memory " + " ".join(argv if argv is not None else sys.argv[1:]),
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "calibration_memory.json").write_text(json.dumps({**header, "rows": rows}, indent=2) + "\n")
    (args.out / "calibration_memory.md").write_text(markdown(rows, header) + "\n")
    logger.info("wrote %s", args.out / "calibration_memory.md")
    for row in rows:
        logger.info("%s", row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
