"""What a trial ran on, and one latency measurement at a time per host.

Latency is a property of the hardware: a trial's timing is tagged with its host's CPU
model, the CPU features int8/fp16 kernels depend on (AVX-512 VNNI, AMX, ...), core count,
GPU and onnxruntime build, so a search run on a cluster of the deployment hardware says
so, and a report can show where every number came from.

Trials of one search that share a host (a process pool, several Ray workers on one node)
would disturb each other's timing; ``latency_lock`` serialises the timing phase across
processes of a host with an advisory file lock. Optimizing and evaluating still overlap.
"""

from __future__ import annotations

import contextlib
import functools
import os
import platform
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from onnxopt.cpu_features import cpu_model_name, host_cpu

# The CPU features that decide which onnxruntime kernels run (int8 VNNI, bf16, fp16, AMX).
CPU_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni",
             "avx512_bf16", "avx512_fp16", "amx_tile", "amx_int8", "amx_bf16", "asimd", "asimddp", "sve")


def _gpus() -> list[str]:
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                              text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in done.stdout.splitlines() if line.strip()] if done.returncode == 0 else []


@functools.lru_cache(maxsize=1)
def host_tags() -> dict[str, Any]:
    """Hostname, CPU model and features, cores, GPUs, onnxruntime version and providers."""
    import onnxruntime as ort

    return {
        "hostname": socket.gethostname(),
        "machine": platform.machine(),
        "cpu": cpu_model_name(),
        "cpu_flags": [flag for flag in CPU_FLAGS if flag in host_cpu().flags],
        "cpu_count": os.cpu_count(),
        "gpus": _gpus(),
        "onnxruntime": ort.__version__,
        "providers": list(ort.get_available_providers()),
    }


def hardware_label(tags: dict[str, Any]) -> str:
    """A short line for tables: 'Intel Xeon ... (avx512_vnni, avx512_bf16), 2 cores'."""
    notable = [flag for flag in tags.get("cpu_flags", []) if flag.startswith(("avx512_", "amx", "avx_vnni", "sve"))]
    text = f"{tags.get('cpu', '?')} ({', '.join(notable) or 'no AVX-512/AMX'}), {tags.get('cpu_count', '?')} cores"
    if tags.get("gpus"):
        text += ", " + ", ".join(tags["gpus"])
    return text


@contextlib.contextmanager
def latency_lock() -> Iterator[None]:
    """Hold the host-wide timing lock (a no-op where fcntl is missing)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    path = Path(tempfile.gettempdir()) / f"onnxopt-tune-latency-{os.getuid() if hasattr(os, 'getuid') else 0}.lock"
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
