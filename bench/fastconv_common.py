"""Shared pieces of the fastconv benchmarks: machine description (CPU flags), tables, result files."""

from __future__ import annotations

import datetime
import json
import os
import platform
from pathlib import Path

import onnxruntime as ort

from onnxopt import kernels
from onnxopt.cpu_features import cpu_model_name, host_cpu

RESULTS = Path(__file__).resolve().parent / "results"
FLAGS_OF_INTEREST = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512dq", "avx512bw", "avx512vl",
                     "avx512_vnni", "avx512_bf16", "amx_tile")


def cpu_description() -> dict:
    """Model name and SIMD flags (``onnxopt.cpu_features``), plus what the kernels dispatch to."""
    info = {"machine": platform.machine(), "cpus": os.cpu_count(), "model": cpu_model_name(),
            "flags": [flag for flag in FLAGS_OF_INTEREST if flag in host_cpu().flags]}
    info["kernels_isa"] = kernels.isa()
    info["onnxruntime"] = ort.__version__
    load = Path("/proc/loadavg")
    if load.exists():
        info["load_average"] = load.read_text().split()[:3]
    return info


def header(command: str, extra: str = "") -> str:
    cpu = cpu_description()
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"`{command}` - {stamp}",
             "",
             f"CPU: {cpu['model']} ({cpu['machine']}, {cpu['cpus']} logical CPUs), flags: {', '.join(cpu['flags'])}; "
             f"onnxopt kernels dispatch to **{cpu['kernels_isa']}**; onnxruntime {cpu['onnxruntime']}; "
             f"load average at start {' '.join(cpu.get('load_average', ['?']))} (the machine is shared).",
             ]
    if extra:
        lines += ["", extra]
    return "\n".join(lines) + "\n"


def markdown_table(columns: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_results(stem: str, markdown: str, data: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{stem}.md").write_text(markdown)
    (RESULTS / f"{stem}.json").write_text(json.dumps({"cpu": cpu_description(), **data}, indent=2, default=str) + "\n")
