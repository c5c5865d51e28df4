"""What the CPU running this process offers onnxruntime's int8 kernels.

Why it matters: onnxruntime picks its integer matmul kernel from the CPU's instruction
set at run time (MLAS dispatch). The same int8 model computes different numbers on
different CPUs when its weights use the full int8 range (see ``onnxopt.int8_kernels``), so
a model that assumes a CPU must say so and ``onnxopt check`` must compare that with the
host.

Detection: numpy's own run-time dispatch table (CPUID plus the operating system's
XSAVE state, the same two checks MLAS makes) for x86 features, with ``/proc/cpuinfo``
adding the flags numpy does not track (``avx_vnni``, ``amx_int8``) only when that file agrees
with CPUID (under qemu-user it is the host's file, not the emulated CPU's). Flags use the Linux
``/proc/cpuinfo`` spelling. Unknown platforms report no flags, which every check treats
as the least capable CPU of the architecture: a wrong guess can only make a check stricter.
"""

from __future__ import annotations

import functools
import logging
import platform
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

# numpy's feature names -> /proc/cpuinfo spelling, for the features onnxruntime's kernels depend on
# (int8 first; also the half-precision ones the benchmarks and the tuner's host tags list).
_NUMPY_FLAGS = {
    "SSSE3": "ssse3", "SSE41": "sse4_1", "SSE42": "sse4_2", "AVX": "avx", "AVX2": "avx2", "FMA3": "fma",
    "F16C": "f16c", "AVX512F": "avx512f", "AVX512DQ": "avx512dq", "AVX512BW": "avx512bw", "AVX512VL": "avx512vl",
    "AVX512VNNI": "avx512_vnni", "AVX512BF16": "avx512_bf16", "AVX512FP16": "avx512_fp16",
    "ASIMD": "asimd", "ASIMDDP": "asimddp", "SVE": "sve",
}
# Flags numpy does not detect; read from /proc/cpuinfo when present.
_PROC_ONLY_FLAGS = ("avx_vnni", "amx_int8", "amx_tile", "amx_bf16", "avx_vnni_int8", "i8mm")
# Flags worth printing when describing a CPU for int8 (the rest of /proc/cpuinfo is noise here).
INT8_RELEVANT_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm")
ARM64_NAMES = frozenset({"aarch64", "arm64", "armv8", "armv9"})
X86_64_NAMES = frozenset({"x86_64", "amd64", "x64"})


@dataclass(frozen=True)
class CpuInfo:
    """An architecture and its feature flags (Linux ``/proc/cpuinfo`` names)."""

    arch: str
    flags: frozenset[str]
    source: str = "host"

    @property
    def is_arm64(self) -> bool:
        return self.arch in ARM64_NAMES

    @property
    def is_x86_64(self) -> bool:
        return self.arch in X86_64_NAMES

    def has_any(self, flags: Iterable[str]) -> bool:
        return any(flag in self.flags for flag in flags)

    def describe(self) -> str:
        """``x86_64 (avx2 fma avx512f avx512_vnni)``: the architecture and its int8-relevant flags."""
        shown = [flag for flag in INT8_RELEVANT_FLAGS if flag in self.flags]
        return f"{self.arch} ({' '.join(shown) or 'no SIMD flags detected'})"


def normalize_arch(machine: str) -> str:
    lowered = machine.lower()
    if lowered in X86_64_NAMES:
        return "x86_64"
    if lowered in ARM64_NAMES:
        return "aarch64"
    return lowered or "unknown"


def cpu_from_flags(text: str, arch: str = "x86_64") -> CpuInfo:
    """A CPU described by hand: comma- or space-separated flags (``avx2,fma``), for what-if checks."""
    flags = frozenset(flag.strip().lower() for flag in text.replace(",", " ").split() if flag.strip())
    return CpuInfo(normalize_arch(arch), flags, source="given")


def _numpy_flags() -> set[str]:
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as features  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        try:
            from numpy.core._multiarray_umath import __cpu_features__ as features
        except ImportError:
            return set()
    return {name for key, name in _NUMPY_FLAGS.items() if features.get(key)}


def _proc_cpuinfo_flags(path: Path = Path("/proc/cpuinfo")) -> set[str]:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


def cpu_model_name(path: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's marketing name ("model name" in /proc/cpuinfo), else what ``platform`` knows."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() == "model name" and value.strip():
            return value.strip()
    return platform.processor() or platform.machine()


@functools.lru_cache(maxsize=1)
def host_cpu() -> CpuInfo:
    """The CPU this process runs on (cached: it does not change while we run)."""
    arch = normalize_arch(platform.machine())
    flags = _combine_flags(_numpy_flags(), _proc_cpuinfo_flags())
    logger.debug("host CPU: %s", " ".join(sorted(flags)))
    return CpuInfo(arch, frozenset(flags), source="host")


def _combine_flags(cpuid: set[str], proc: set[str]) -> set[str]:
    """CPUID's flags (numpy), plus the ones only ``/proc/cpuinfo`` names when that file describes this CPU.

    Under an emulator (``qemu-x86_64 -cpu Haswell``) or a container that hides CPUID bits,
    ``/proc/cpuinfo`` is the *host's* file: it may list ``avx512_vnni`` where CPUID (what
    onnxruntime dispatches on) has no AVX-512 at all. Its ``avx_vnni``/``amx_int8`` would then
    claim kernels this process cannot run, and a saturating CPU would pass ``onnxopt check``.
    So the extra flags are added only when every flag CPUID can report agrees with the file;
    otherwise they are dropped (a check can only get stricter).
    """
    if not cpuid:
        return set(proc)  # numpy without its dispatch table: trust the kernel's list
    tracked = set(_NUMPY_FLAGS.values())
    if (proc & tracked) - cpuid:
        logger.debug("/proc/cpuinfo lists %s that CPUID lacks: not this CPU's file",
                     " ".join(sorted((proc & tracked) - cpuid)))
        return set(cpuid)
    return cpuid | {flag for flag in _PROC_ONLY_FLAGS if flag in proc}
