"""Test session setup: the report names the CPU, since int8 results depend on it."""

from __future__ import annotations

from onnxopt.cpu_features import host_cpu
from onnxopt.int8_kernels import saturates_u8s8


def pytest_report_header(config) -> str:
    cpu = host_cpu()
    kind = "pairs saturate int16 (no VNNI)" if saturates_u8s8(cpu) else "accumulate in int32"
    return f"CPU: {cpu.describe()}; onnxruntime u8×s8 kernels here {kind}"
