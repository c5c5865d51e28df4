"""MiniLM int8 on the CPU at hand and on an emulated CPU without VNNI: accuracy and latency side by side.

The claim under test (issue 8): ``--preset int8`` builds models that compute the same on
every CPU. Accuracy is the embedding cosine to the PyTorch reference on the held-out
sentences (``models.evaluate.minilm_cosine``), measured twice for every variant:

* natively, on this machine's CPU (its flags are in the report);
* under ``qemu-x86_64 -cpu Haswell`` (AVX2 + FMA, no AVX-512, no VNNI) when qemu-user is
  installed: onnxruntime's own dispatch then picks its AVX2 kernels, whose u8×s8 pairs
  saturate in int16 — what a Haswell…Zen 3 server computes. Emulation is slow (about a
  minute per variant) but exact; its timings mean nothing, so latency is native only.

Variants: onnxopt ``--preset int8`` without DATA and with ``--calib`` DATA, each for
``--target ort-cpu`` (any CPU) and ``ort-cpu:vnni``, and onnxruntime's
``quantize_dynamic(per_channel=True)``. Latency: all variants and fp32 timed round-robin in
the same rounds (``onnxopt.benchmark``-style interleaving, ``relative_times``), 1 thread and
onnxruntime's default, as ratios to fp32.

    python -m bench.int8_cpu_kinds                 # needs qemu-user for the emulated column
    python -m bench.int8_cpu_kinds --no-emulation

Also runs ``tests/test_int8_kernels.py`` under the emulated CPU: the numpy model of the
saturating kernel must match onnxruntime's real AVX2 kernel there too.

Writes ``bench/results/int8_cpu_kinds.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from models.cache import cached_model
from models.evaluate import minilm_cosine
from onnxopt.api import optimize
from onnxopt.benchmark import machine_info
from onnxopt.cpu_features import host_cpu
from onnxopt.data import make_feeds
from onnxopt.model_io import load, read_proto
from onnxopt.paired_timing import relative_times

logger = logging.getLogger("bench.int8_cpu_kinds")
PROJECT_ROOT = Path(__file__).resolve().parents[1]
CALIBRATION = PROJECT_ROOT / "tests" / "data" / "minilm_calib.npz"
EMULATED_CPU = "Haswell"
EMULATED_FLAGS = "x86_64 (avx2 fma), emulated: no AVX-512, no VNNI"


def _site_packages() -> str:
    import numpy

    return str(Path(numpy.__file__).resolve().parents[1])


def emulated_cosine(model: Path) -> dict | None:
    """minilm_cosine of ``model`` in a Python running on an emulated Haswell CPU (None without qemu)."""
    qemu = shutil.which("qemu-x86_64")
    if qemu is None:
        return None
    code = ("import json; from models.evaluate import minilm_cosine; "
            f"print('RESULT', json.dumps(minilm_cosine({str(model)!r})))")
    command = [qemu, "-cpu", EMULATED_CPU, "-E", f"PYTHONPATH={_site_packages()}:{PROJECT_ROOT}",
               str(Path(sys.executable).resolve()), "-c", code]
    done = subprocess.run(command, capture_output=True, text=True, check=False, cwd=PROJECT_ROOT)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if not lines:
        logger.warning("emulated run failed: %s", done.stderr.strip().splitlines()[-1:] or done.returncode)
        return None
    return json.loads(lines[-1][len("RESULT "):])


def emulated_kernel_tests() -> str:
    qemu = shutil.which("qemu-x86_64")
    if qemu is None:
        return "not run (no qemu-x86_64)"
    command = [qemu, "-cpu", EMULATED_CPU, "-E", f"PYTHONPATH={_site_packages()}:{PROJECT_ROOT}",
               str(Path(sys.executable).resolve()), "-m", "pytest", "-q", "-p", "no:cacheprovider",
               "tests/test_int8_kernels.py"]
    done = subprocess.run(command, capture_output=True, text=True, check=False, cwd=PROJECT_ROOT)
    tail = [line for line in done.stdout.splitlines() if line.strip()][-1:] or ["no output"]
    header = [line for line in done.stdout.splitlines() if line.startswith("CPU:")]
    return f"exit {done.returncode}: {tail[0]}" + (f" ({header[0]})" if header else "")


def build(folder: Path) -> list[tuple[str, Path, dict]]:
    source = cached_model("minilm_pooled")
    variants = []
    for label, calib, target in (("onnxopt int8, no DATA, --target ort-cpu", None, "ort-cpu"),
                                 ("onnxopt int8, no DATA, --target ort-cpu:vnni", None, "ort-cpu:vnni"),
                                 ("onnxopt int8, --calib, --target ort-cpu", CALIBRATION, "ort-cpu"),
                                 ("onnxopt int8, --calib, --target ort-cpu:vnni", CALIBRATION, "ort-cpu:vnni")):
        path = folder / f"{len(variants)}.onnx"
        result = optimize(source, path, preset="int8", calib=calib, target=target)
        record = next(r for r in result.report.records if r.name == "qdq")
        variants.append((label, path, {"quantized_by_op": record.stats.get("quantized_by_op"),
                                       "weight_limit": record.stats.get("weight_limit"),
                                       "smoothed_inputs": record.stats.get("smoothed_inputs")}))
    from onnxruntime.quantization import QuantType, quantize_dynamic

    path = folder / "ort_dynamic.onnx"
    quantize_dynamic(source, path, per_channel=True, weight_type=QuantType.QInt8)
    variants.append(("onnxruntime quantize_dynamic (per-channel)", path, {}))
    return variants


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-emulation", action="store_true")
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "bench" / "results" / "int8_cpu_kinds")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    source = cached_model("minilm_pooled")
    rows = []
    with tempfile.TemporaryDirectory(prefix="onnxopt-cpu-kinds-") as folder:
        variants = build(Path(folder))
        feed = next(iter(make_feeds(read_proto(source), CALIBRATION, 1)))
        timing = {}
        for threads in (1, 0):
            comparisons = relative_times(load(source), [load(path) for _, path, _ in variants], feed, threads,
                                         args.rounds)
            timing[threads] = [round(c.ratio, 3) for c in comparisons]
        for index, (label, path, stats) in enumerate(variants):
            native = minilm_cosine(path)
            emulated = None if args.no_emulation else emulated_cosine(path)
            rows.append({"variant": label, "native": native, "emulated_haswell": emulated,
                         "time_vs_fp32_1_thread": timing[1][index], "time_vs_fp32_default_threads": timing[0][index],
                         **stats})
            logger.info("%s: native %.4f, emulated %s", label, native["mean_cosine"],
                        f"{emulated['mean_cosine']:.4f}" if emulated else "—")
    kernels = "not run" if args.no_emulation else emulated_kernel_tests()
    header = {"command": "python -m bench.int8_cpu_kinds " + " ".join(argv if argv is not None else sys.argv[1:]),
              "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
              "load": " / ".join(f"{value:.1f}" for value in load_before) + " before, "
                      + " / ".join(f"{value:.1f}" for value in os.getloadavg()) + " after",
              "cpu": host_cpu().describe(),
              "machine": machine_info("cpu"), "emulated_cpu": EMULATED_FLAGS, "kernel_tests_emulated": kernels}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps({"header": header, "rows": rows}, indent=2) + "\n")
    text = markdown(rows, header)
    args.out.with_suffix(".md").write_text(text)
    print(text)
    return 0


def _cos(result: dict | None) -> str:
    return "—" if not result else f"{result['mean_cosine']:.4f} / {result['min_cosine']:.4f}"


def markdown(rows: list[dict], header: dict) -> str:
    lines = [
        "# MiniLM int8 on two kinds of CPU",
        "",
        f"`{header['command']}` — {header['date']}, onnxruntime {header['machine'].get('onnxruntime')}, "
        f"{header['machine'].get('cpu_count')} cores, load average {header.get('load', 'not recorded')}.",
        f"Native CPU: {header['cpu']}. Emulated: {header['emulated_cpu']} (qemu-x86_64 -cpu {EMULATED_CPU}).",
        "Cosine: sentence embeddings vs the PyTorch reference on 48 held-out sentences (mean / min).",
        "Time: interleaved rounds against fp32 on the native CPU (below 1: faster).",
        "",
        "| variant | cosine, native | cosine, emulated AVX2 | time vs fp32, 1 thread | time vs fp32, default threads |",
        "|---|---|---|---:|---:|",
    ]
    for row in rows:
        lines.append(f"| {row['variant']} | {_cos(row['native'])} | {_cos(row['emulated_haswell'])} "
                     f"| {row['time_vs_fp32_1_thread']:.2f} | {row['time_vs_fp32_default_threads']:.2f} |")
    lines += ["", f"`tests/test_int8_kernels.py` under the emulated CPU: {header['kernel_tests_emulated']}", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
