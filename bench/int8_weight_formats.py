"""Which int8 weight format for "any CPU": measured on MiniLM (no DATA), accuracy and speed.

Three ways to keep onnxruntime's u8×s8 kernels from saturating their int16 pair sums on
CPUs without VNNI (``onnxopt.int8_kernels``), against the full-range format that saturates:

* ``s8 ±127``: full-range weights (``--target ort-cpu:vnni``) — wrong on AVX2;
* ``s8 ±64``: 7-bit weights in the same U8S8 kernels (the default for ``--target ort-cpu``);
* ``u8 (zero point 128)``: 8-bit weights run by U8U8 kernels, which widen both operands
  to 16 bits on every CPU — never saturate, but are slower kernels;
* 7-bit *activations* are not on the list: ``DynamicQuantizeLinear`` always uses 0…255,
  and a calibrated ``QuantizeLinear`` saturates at 255 (not 127) for values beyond the
  calibrated range, so nothing would bound the pairs.

Each variant is the ``qdq`` pass's dynamic int8 of MiniLM with smoothing on random token
ids (as ``--preset int8`` without DATA builds it, all 36 MatMuls quantized); the U8U8 one
is the ±127 model with its weights stored as uint8 + 128. Accuracy: embedding cosine to the
PyTorch reference on the held-out sentences, on this CPU and (with qemu-user) on an
emulated AVX2 CPU without AVX-512 or VNNI, where the saturation happens; speed: all variants
and fp32 timed round-robin in the same rounds on this CPU, 1 thread and onnxruntime's default.

    python -m bench.int8_weight_formats

Writes ``bench/results/int8_weight_formats.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx_graphsurgeon as gs

from bench.int8_cpu_kinds import EMULATED_CPU, emulated_cosine
from models.cache import cached_model
from models.evaluate import minilm_cosine
from onnxopt.benchmark import machine_info
from onnxopt.cpu_features import host_cpu
from onnxopt.data import make_feeds
from onnxopt.int8_kernels import find_int8_kernels, saturation_risks
from onnxopt.model_io import Model, load, read_constant, read_proto, save
from onnxopt.paired_timing import relative_times
from onnxopt.pass_api import PassContext
from onnxopt.passes.quantization.qdq import QdqPass

PROJECT_ROOT = Path(__file__).resolve().parents[1]
CALIBRATION = PROJECT_ROOT / "tests" / "data" / "minilm_calib.npz"


def quantized(cpu: str) -> Model:
    work = load(cached_model("minilm_pooled"))
    QdqPass(QdqPass.make_options({"mode": "dynamic", "cpu": cpu, "only_if_faster": False})).run(work, PassContext())
    return work


def as_u8_weights(model: Model) -> Model:
    """The model with every MatMulInteger's s8 weights stored as u8 (+128) and zero point 128: U8U8 kernels."""
    work = model.copy()
    for node in work.graph.nodes:
        if node.op != "MatMulInteger":
            continue
        weight, zero = node.inputs[1], node.inputs[3]
        node.inputs[1] = gs.Constant(f"{weight.name}_u8",
                                     (np.asarray(read_constant(weight), np.int16) + 128).astype(np.uint8))
        zero_u8 = (np.asarray(read_constant(zero), np.int16) + 128).astype(np.uint8)
        node.inputs[3] = gs.Constant(f"{zero.name}_u8", zero_u8)
    work.graph.cleanup()
    return work


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--no-emulation", action="store_true", help="skip the emulated AVX2 cosine (qemu-user)")
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "bench" / "results" / "int8_weight_formats")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    full = quantized("vnni")
    variants = {"s8 ±127 (full range; --target ort-cpu:vnni)": full,
                "s8 ±64 (7-bit; --target ort-cpu, the default)": quantized("any"),
                "u8, zero point 128 (U8U8 kernels)": as_u8_weights(full)}
    source = cached_model("minilm_pooled")
    feed = next(iter(make_feeds(read_proto(source), CALIBRATION, 1)))
    rows = []
    with tempfile.TemporaryDirectory(prefix="onnxopt-formats-") as folder:
        paths = {}
        for index, (label, model) in enumerate(variants.items()):
            paths[label] = Path(folder) / f"{index}.onnx"
            save(model, paths[label])
        timing = {threads: relative_times(load(source), [load(path) for path in paths.values()], feed, threads,
                                          args.rounds) for threads in (1, 0)}
        for index, (label, path) in enumerate(paths.items()):
            kernels = list(find_int8_kernels(load(path)))
            emulated = None if args.no_emulation else emulated_cosine(path)
            rows.append({"format": label, "cosine": minilm_cosine(path), "cosine_emulated_avx2": emulated,
                         "saturating_nodes": len(saturation_risks(load(path))), "int8_nodes": len(kernels),
                         "weight_range": f"{min(int(k.weights.min()) for k in kernels)}…"
                                         f"{max(int(k.weights.max()) for k in kernels)}",
                         "time_vs_fp32_1_thread": round(timing[1][index].ratio, 3),
                         "time_vs_fp32_default_threads": round(timing[0][index].ratio, 3)})
    load_average = " / ".join(f"{value:.1f}" for value in load_before) + " before, " + \
        " / ".join(f"{value:.1f}" for value in os.getloadavg()) + " after"
    header = {"command": "python -m bench.int8_weight_formats " + " ".join(argv if argv is not None else sys.argv[1:]),
              "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
              "cpu": host_cpu().describe(), "machine": machine_info("cpu"), "load": load_average,
              "emulated_cpu": f"qemu-x86_64 -cpu {EMULATED_CPU}"}
    lines = ["# int8 weight formats for any CPU (MiniLM, no DATA)", "",
             f"`{header['command']}` — {header['date']}; CPU {header['cpu']}, "
             f"{header['machine'].get('cpu_count')} cores (load average "
             f"{header['load']}); onnxruntime {header['machine']['onnxruntime']}.",
             "Cosine: sentence embeddings vs the PyTorch reference on 48 held-out sentences (mean / min), on this "
             f"CPU and on an emulated AVX2 CPU without AVX-512 or VNNI ({header['emulated_cpu']}). "
             "Saturating: int8 nodes whose s8 weights exceed ±64 (the int16 pair sums of AVX2 / AVX-512-without-VNNI "
             f"kernels can overflow). Time: {args.rounds} interleaved rounds against fp32 on this CPU "
             "(below 1: faster).",
             "",
             "| weights | stored range | saturating int8 nodes | cosine, this CPU | cosine, emulated AVX2 "
             "| time vs fp32, 1 thread | default threads |",
             "|---|---|---:|---|---|---:|---:|"]

    def cos(value: dict | None) -> str:
        return "not run" if value is None else f"{value['mean_cosine']:.4f} / {value['min_cosine']:.4f}"

    for row in rows:
        lines.append(f"| {row['format']} | {row['weight_range']} | {row['saturating_nodes']} of {row['int8_nodes']} | "
                     f"{cos(row['cosine'])} | {cos(row['cosine_emulated_avx2'])} | "
                     f"{row['time_vs_fp32_1_thread']:.2f} | {row['time_vs_fp32_default_threads']:.2f} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps({"header": header, "rows": rows}, indent=2) + "\n")
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
