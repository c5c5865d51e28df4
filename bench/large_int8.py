"""``--preset int8`` on a > 2 GB model, with and without DATA: exit code, peak memory, output error.

The claims under test (issue 8): int8 works at any size — every step of ``qdq`` that
builds or runs a copy of the model keeps external data external (sessions hard-link the
data file instead of copying it), so a model past protobuf's 2 GB quantizes with memory
bounded by one onnxruntime session of it plus a few tensors; and an internal failure is
never reported as bad input.

We build the 2.5 GB MLP of ``models.large_mlp --size base`` once, then measure in fresh
processes (``bench.measure``: the command's own peak RSS):

* onnxruntime running the fp32 model once (``onnxopt.memory_probe``): the reference cost;
* ``onnxopt optimize IN -o OUT --preset int8`` without DATA (dynamic int8);
* the same with ``--calib`` DATA (static int8, calibrated on 16 samples);

and compare each output with the original on a batch of 4 samples (onnxruntime, run one
after the other so only one model is in memory at a time).

    python -m bench.large_int8             # ~2.5 GB model, needs ~8 GB disk and ~4 GB free memory
    python -m bench.large_int8 --size small

Writes ``bench/results/large_int8.md`` and ``.json``; deletes the model files unless ``--keep``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import sys
from pathlib import Path

import numpy as np

from bench.large_model import external_files_complete, ort_outputs
from bench.measure import run_measured
from onnxopt.benchmark import machine_info, model_file_bytes
from onnxopt.cpu_features import host_cpu

logger = logging.getLogger("bench.large_int8")
PROJECT_ROOT = Path(__file__).resolve().parents[1]
CHECK_BATCH = 4
CALIBRATION_SAMPLES = 16


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a64, b64 = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    return float(a64 @ b64 / (np.linalg.norm(a64) * np.linalg.norm(b64)))


def run(size: str, workdir: Path, keep: bool) -> dict:
    from models import large_mlp

    workdir.mkdir(parents=True, exist_ok=True)
    source = workdir / f"large_mlp-{size}.onnx"
    if not source.exists():
        large_mlp.build(source, size=size)
    model_bytes = model_file_bytes(source)
    feed = large_mlp.sample_inputs(size, batch_size=CHECK_BATCH, seed=3)
    calib = workdir / "calib.npz"
    np.savez(calib, **large_mlp.sample_inputs(size, batch_size=CALIBRATION_SAMPLES, seed=7))
    probe_feed = workdir / "probe_feed.npz"
    np.savez(probe_feed, **large_mlp.sample_inputs(size, batch_size=1, seed=1))
    result: dict = {"size": size, "model_bytes": model_bytes, "runs": {}}
    reference = run_measured([sys.executable, "-m", "onnxopt.memory_probe", str(source), str(probe_feed),
                              "--runs", "2", "--no-ort-optimize"], cwd=PROJECT_ROOT)
    result["ort_session_peak_rss_bytes"] = reference.peak_rss_bytes
    expected = ort_outputs(source, feed)
    for label, extra in (("int8, no DATA", []), ("int8, --calib DATA", ["--calib", str(calib)])):
        target = workdir / f"int8-{len(result['runs'])}.onnx"
        command = [sys.executable, "-m", "onnxopt.cli", "optimize", str(source), "-o", str(target),
                   "--preset", "int8", "--json", *extra]
        logger.info("%s ...", label)
        measured = run_measured(command, cwd=PROJECT_ROOT)
        row = {"command": "onnxopt optimize IN -o OUT --preset int8" + (" --calib DATA" if extra else ""),
               "returncode": measured.returncode, "wall_s": round(measured.wall_s, 1),
               "peak_rss_bytes": measured.peak_rss_bytes,
               "peak_over_model": round((measured.peak_rss_bytes or 0) / model_bytes, 3),
               "error": None if measured.returncode == 0 else measured.last_error_line()}
        if measured.returncode == 0:
            report = json.loads(measured.stdout)
            record = next(p for p in report["passes"] if p["name"] == "qdq")
            row["qdq"] = {key: record["stats"].get(key) for key in ("mode", "quantized_by_op", "weight_limit",
                                                                    "whole_model_timing", "smoothed_inputs")}
            row["output_bytes"] = model_file_bytes(target)
            row["external_data_complete"] = external_files_complete(target)[0]
            actual = ort_outputs(target, feed)
            name = next(iter(expected))
            scale = float(np.max(np.abs(expected[name])))
            row["max_rel_error"] = float(np.max(np.abs(expected[name] - actual[name]))) / scale
            row["cosine"] = _cosine(expected[name], actual[name])
        result["runs"][label] = row
        if not keep:
            for file in (target, target.with_name(target.name + ".data")):
                file.unlink(missing_ok=True)
    if not keep:
        for file in (source, source.with_name(source.name + ".data"), calib, probe_feed):
            file.unlink(missing_ok=True)
    return result


def _gib(count: int | None) -> str:
    return "—" if not count else f"{count / 2**30:.2f} GiB"


def markdown(result: dict, header: dict) -> str:
    lines = [
        "# `--preset int8` on a > 2 GB model", "",
        f"`{header['command']}` — {header['date']}; CPU {header['cpu']}, {header['machine']['cpu_count']} cores; "
        f"onnxruntime {header['machine']['onnxruntime']}.", "",
        f"Model: `models.large_mlp --size {result['size']}`, {_gib(result['model_bytes'])} (external data). "
        f"onnxruntime running it once (fp32, one session, `onnxopt.memory_probe`): peak RSS "
        f"{_gib(result['ort_session_peak_rss_bytes'])} "
        f"({(result['ort_session_peak_rss_bytes'] or 0) / result['model_bytes']:.2f}× the model).", "",
        "| command | exit | wall | peak RSS | peak / model size | output | outputs vs fp32 (batch of "
        f"{CHECK_BATCH}) | int8 nodes |",
        "|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for row in result["runs"].values():
        close = ("—" if "cosine" not in row else
                 f"cosine {row['cosine']:.5f}, max error {row['max_rel_error']:.3f} of the largest output")
        ops = (row.get("qdq") or {}).get("quantized_by_op") or row.get("error") or "—"
        lines.append(f"| `{row['command']}` | {row['returncode']} | {row['wall_s']:.0f} s | "
                     f"{_gib(row['peak_rss_bytes'])} | {row['peak_over_model']:.2f} | "
                     f"{_gib(row.get('output_bytes'))} | {close} | {ops} |")
    lines += ["", "Peak RSS: the optimizer process's own high-water mark (`bench.measure`)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="base", choices=("tiny", "small", "base"))
    parser.add_argument("--workdir", type=Path, default=PROJECT_ROOT / "bench" / "out" / "large_int8")
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "bench" / "results" / "large_int8")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    header = {"command": "python -m bench.large_int8 " + " ".join(argv if argv is not None else sys.argv[1:]),
              "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
              "cpu": host_cpu().describe(), "machine": machine_info("cpu")}
    result = run(args.size, args.workdir, args.keep)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps({"header": header, **result}, indent=2) + "\n")
    text = markdown(result, header)
    args.out.with_suffix(".md").write_text(text)
    print(text)
    return 0 if all(row["returncode"] == 0 for row in result["runs"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
