"""Target names: the runtime a model is optimized for, and for onnxruntime on the CPU, which CPUs.

``ort-cpu`` means *any* CPU onnxruntime supports (x86-64 from AVX2 up, ARM64): what a
user deploying to an unknown fleet needs, so it is the default. ``ort-cpu:vnni`` narrows
it to CPUs whose int8 kernels never saturate (x86-64 with AVX512-VNNI, AVX-VNNI or
AMX-INT8, or ARM64), which lets int8 weights use their full range; the model then records
that assumption (``onnxopt.int8_kernels.REQUIRES_KEY``) and ``onnxopt check`` compares it
with the host. Passes receive the runtime as their ``target`` option and the CPU kind as
their ``cpu`` option, so the runtime checks of every pass stay as they are.
"""

from __future__ import annotations

from onnxopt.errors import BadInputError
from onnxopt.int8_kernels import CPU_ANY, CPU_KINDS

RUNTIMES = ("ort-cpu", "ort-cuda", "tensorrt")
TARGETS = ("ort-cpu", "ort-cpu:vnni", "ort-cuda", "tensorrt")
# Metadata key of the target an optimized model was built for (``onnxopt check`` defaults to it).
TARGET_KEY = "onnxopt.target"


def split_target(target: str) -> tuple[str, str]:
    """``ort-cpu:vnni`` -> (``ort-cpu``, ``vnni``); a plain runtime gets the CPU kind ``any``."""
    runtime, _, cpu = target.partition(":")
    if target not in TARGETS or runtime not in RUNTIMES:
        raise BadInputError(f"unknown target {target!r} (choose from {', '.join(TARGETS)})")
    cpu = cpu or CPU_ANY
    if cpu not in CPU_KINDS:  # pragma: no cover - TARGETS only names known kinds
        raise BadInputError(f"unknown CPU kind {cpu!r} in target {target!r}")
    return runtime, cpu


def join_target(runtime: str, cpu: str) -> str:
    """The target name of a runtime and CPU kind (``ort-cpu`` + ``any`` -> ``ort-cpu``)."""
    return runtime if cpu == CPU_ANY or runtime != "ort-cpu" else f"{runtime}:{cpu}"
