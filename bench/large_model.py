"""Peak memory of ``onnxopt optimize`` on a model larger than protobuf's 2 GB limit.

The claim under test (issue 2): with the default passes, optimizing a model whose weights
live in external data costs far less memory than the model's size, because weights stay
memory-mapped and untouched tensors are streamed to the output. We build the 2.5 GB MLP
of ``models.large_mlp`` (weights written tensor by tensor), run ``onnxopt optimize IN -o
OUT`` in a process of its own and read that process's peak RSS (``bench.measure``), next
to the same command on the tiny MLP (the interpreter and imports alone). Then we check the
output: its external data file exists and covers every tensor, and — when the machine has
the memory — onnxruntime runs original and output on a small batch with the same result.

    python -m bench.large_model                 # the > 2 GB model
    python -m bench.large_model --size small    # 100 MB, a quick check of the plumbing

Writes ``bench/results/large_model.md`` and ``.json``; deletes the multi-GB files afterwards
unless ``--keep``.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import logging
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from bench.measure import Measured, run_measured
from onnxopt.benchmark import machine_info, model_file_bytes
from onnxopt.external_data import external_info, is_external
from onnxopt.model_io import iter_model_tensor_protos, read_proto

logger = logging.getLogger("bench.large_model")

PROJECT_ROOT = Path(__file__).resolve().parents[1]
# Disk needed: the model, the optimized copy, and room to spare.
DISK_FACTOR = 2.5
# Memory needed to run both models in onnxruntime one after the other (it copies the weights in).
ORT_CHECK_MEMORY_FACTOR = 2.5
CHECK_BATCH = 2
FUSION_TOLERANCE_REL = 1e-5


def _optimize_command(source: Path, target: Path, passes: str | None) -> list[str]:
    command = [sys.executable, "-m", "onnxopt.cli", "optimize", str(source), "-o", str(target)]
    return command + (["--passes", passes] if passes else [])


def external_files_complete(model_path: Path) -> tuple[bool, list[str], str]:
    """Whether every external tensor of a model lies inside an existing data file; the files and a reason."""
    proto = read_proto(model_path)
    files: dict[str, int] = {}
    for tensor in iter_model_tensor_protos(proto):
        if not is_external(tensor):
            continue
        info = external_info(tensor)
        location = info.get("location", "")
        end = int(info.get("offset", 0) or 0) + int(info.get("length", 0) or 0)
        files[location] = max(files.get(location, 0), end)
    if not files:
        return False, [], "the output has no external data (a > 2 GB model cannot be embedded)"
    for location, end in files.items():
        path = model_path.parent / location
        if not path.is_file():
            return False, sorted(files), f"external data file {location} is missing"
        if path.stat().st_size < end:
            return False, sorted(files), f"external data file {location} is shorter than its tensors need"
    return True, sorted(files), ""


def ort_outputs(model_path: Path, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Outputs under onnxruntime (CPU, its graph optimizations off); the session is freed before returning."""
    from onnxopt.runtime import create_session, run_session

    session = create_session(model_path, optimize=False)
    outputs = run_session(session, feed)
    del session
    gc.collect()
    return outputs


def _measured_dict(measured: Measured) -> dict[str, Any]:
    return {"returncode": measured.returncode, "wall_s": measured.wall_s, "peak_rss_bytes": measured.peak_rss_bytes,
            "error": None if measured.returncode == 0 else measured.last_error_line()}


def run(size: str, workdir: Path, passes: str | None, keep: bool) -> dict[str, Any]:
    """Build, optimize, verify; returns the results (never raises for a failed optimize: that is a result)."""
    from models import large_mlp

    workdir.mkdir(parents=True, exist_ok=True)
    expected_bytes = large_mlp.SIZES[size].weight_bytes
    free = shutil.disk_usage(workdir).free
    result: dict[str, Any] = {"size": size, "weight_bytes": expected_bytes, "disk_free_bytes_before": free}
    if free < DISK_FACTOR * expected_bytes:
        raise SystemExit(f"{workdir}: {free / 2**30:.1f} GiB free, need {DISK_FACTOR * expected_bytes / 2**30:.1f} GiB")
    source, target = workdir / f"large_mlp-{size}.onnx", workdir / f"large_mlp-{size}-optimized.onnx"
    baseline_source, baseline_target = workdir / "large_mlp-tiny.onnx", workdir / "large_mlp-tiny-optimized.onnx"
    try:
        start = time.perf_counter()
        large_mlp.build(source, size=size)
        result["build_s"] = time.perf_counter() - start
        result["model_file_bytes"] = model_file_bytes(source)
        logger.info("built %s: %.2f GiB in %.0f s", source, result["model_file_bytes"] / 2**30, result["build_s"])

        large_mlp.build(baseline_source, size="tiny")
        baseline = run_measured(_optimize_command(baseline_source, baseline_target, passes), cwd=PROJECT_ROOT)
        result["baseline_tiny_optimize"] = _measured_dict(baseline)
        logger.info("tiny model: peak RSS %.0f MiB", (baseline.peak_rss_bytes or 0) / 2**20)

        logger.info("optimizing %s", source)
        measured = run_measured(_optimize_command(source, target, passes), cwd=PROJECT_ROOT)
        result["optimize"] = _measured_dict(measured)
        if measured.peak_rss_bytes:
            result["peak_rss_over_model_size"] = measured.peak_rss_bytes / result["model_file_bytes"]
            if baseline.peak_rss_bytes:
                result["peak_rss_above_baseline_bytes"] = measured.peak_rss_bytes - baseline.peak_rss_bytes
        logger.info("optimize: exit %d, %.0f s, peak RSS %.0f MiB", measured.returncode, measured.wall_s,
                    (measured.peak_rss_bytes or 0) / 2**20)
        if measured.returncode != 0 or not target.exists():
            result["verified"] = {"ok": False, "reason": "optimize failed: " + measured.last_error_line()}
            return result
        complete, files, reason = external_files_complete(target)
        result["output_file_bytes"] = model_file_bytes(target)
        result["output_external_files"] = files
        verified: dict[str, Any] = {"external_data_complete": complete, "reason": reason}
        available = psutil.virtual_memory().available
        if available > ORT_CHECK_MEMORY_FACTOR * expected_bytes:
            feed = large_mlp.sample_inputs(size, batch_size=CHECK_BATCH)
            expected = ort_outputs(source, feed)
            actual = ort_outputs(target, feed)
            max_abs = max(float(np.max(np.abs(expected[n] - actual[n]))) for n in expected)
            scale = max(float(np.max(np.abs(expected[n]))) for n in expected)
            verified.update({"ort_ran": True,
                             "bit_identical": all(np.array_equal(expected[n], actual[n]) for n in expected),
                             "max_abs_error": max_abs, "max_rel_error": max_abs / scale if scale else max_abs})
        else:
            verified.update({"ort_ran": False,
                             "reason": reason or f"skipped the onnxruntime check: {available / 2**30:.1f} GiB free"})
        # Default passes are exact, except fusions declared exact up to float reassociation (1e-5 relative).
        within = verified.get("max_rel_error", 0.0) <= FUSION_TOLERANCE_REL
        verified["ok"] = complete and within
        if complete and not within:
            verified["reason"] = f"outputs differ by more than {FUSION_TOLERANCE_REL:g} relative"
        result["verified"] = verified
        return result
    finally:
        if not keep:
            for path in (source, target, baseline_source, baseline_target):
                for file in (path, path.with_name(path.name + ".data")):
                    file.unlink(missing_ok=True)
            logger.info("removed the model files from %s", workdir)


def _sci(value: float | None) -> str:
    return "—" if value is None else f"{value:.2e}"


def _gib(count: int | None) -> str:
    if count is None:
        return "—"
    return f"{count / 2**30:.2f} GiB" if count >= 2**30 else f"{count / 2**20:.0f} MiB"


def markdown(result: dict[str, Any], header: dict[str, Any]) -> str:
    optimize, baseline = result.get("optimize", {}), result.get("baseline_tiny_optimize", {})
    verified = result.get("verified", {})
    ratio = result.get("peak_rss_over_model_size")
    passes = f" --passes {header['passes']}" if header["passes"] else ""
    error = f" ({optimize['error']})" if optimize.get("error") else ""
    lines = [
        "# `onnxopt optimize` on a > 2 GB model", "",
        f"Command: `{header['command']}`  ", f"Date: {header['date']}  ",
        f"Machine: {header['machine']['processor']}, {header['machine']['cpu_count']} cores, "
        f"{header['total_memory_bytes'] / 2**30:.0f} GiB RAM; onnxruntime {header['machine']['onnxruntime']}.", "",
        "| measure | value |", "|---|---|",
        f"| model (`models.large_mlp --size {result['size']}`) | {_gib(result.get('model_file_bytes'))} "
        "(weights in external data) |",
        f"| optimize command | `onnxopt optimize IN -o OUT{passes}` |",
        f"| exit code | {optimize.get('returncode', '—')}{error} |",
        f"| wall time | {optimize.get('wall_s', 0):.1f} s |",
        f"| peak RSS | {_gib(optimize.get('peak_rss_bytes'))} |",
        f"| peak RSS / model size | {'—' if ratio is None else f'{ratio:.3f}'} |",
        f"| peak RSS of the same command on the tiny MLP (interpreter + imports) "
        f"| {_gib(baseline.get('peak_rss_bytes'))} |",
        f"| output size | {_gib(result.get('output_file_bytes'))} |",
        f"| output external data complete | {verified.get('external_data_complete', '—')} |",
        f"| onnxruntime ran both (batch {CHECK_BATCH}) | {verified.get('ort_ran', '—')} |",
        f"| outputs bit-identical | {verified.get('bit_identical', '—')} (max abs error "
        f"{_sci(verified.get('max_abs_error'))}, relative {_sci(verified.get('max_rel_error'))}; default passes "
        f"include fusions declared exact up to {FUSION_TOLERANCE_REL:g} relative) |",
        f"| verdict | {'ok' if verified.get('ok') else 'NOT ok: ' + str(verified.get('reason', ''))} |", "",
        "Peak RSS is the optimizer process's own high-water mark (`ru_maxrss` of the child, read with "
        "`os.wait4` in a small wrapper process so the driver's memory does not leak into it).",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="base", choices=("tiny", "small", "base"))
    parser.add_argument("--passes", default=None, help="pass list for optimize (default: the default preset)")
    parser.add_argument("--workdir", type=Path, default=PROJECT_ROOT / "bench" / "out" / "large_model")
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "bench" / "results")
    parser.add_argument("--keep", action="store_true", help="keep the multi-GB model files")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    header = {
        "command": "python -m bench.large_model " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine_info("cpu"), "total_memory_bytes": psutil.virtual_memory().total, "passes": args.passes,
    }
    result = run(args.size, args.workdir, args.passes, args.keep)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "large_model.json").write_text(json.dumps({**header, **result}, indent=2) + "\n")
    (args.out / "large_model.md").write_text(markdown(result, header) + "\n")
    logger.info("wrote %s", args.out / "large_model.md")
    return 0 if result.get("verified", {}).get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
