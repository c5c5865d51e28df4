"""onnxopt's native kernels for onnxruntime: where the library is, whether it loads, what it ran.

The C++ library (sources in ``native/``) implements the custom ops of the ``com.onnxopt`` domain that
the fast-conv passes emit (Winograd and FFT convolutions, Strassen MatMul) for onnxruntime's CPU
provider. It is built at install time with the machine's compiler; when that is impossible the package
still installs, every model stays runnable (each custom op is also a model-local function whose body
is standard ONNX, which onnxruntime inlines), and this module logs one warning.

Use ``library_path()`` with ``SessionOptions.register_custom_ops_library``; onnxopt's own sessions
(``onnxopt.runtime``: bench, compare, ``--verify``) register it automatically. The library keeps call
counters per op and instruction set (``calls()``), which is how tests prove a session used a kernel.

Environment: ``ONNXOPT_KERNELS_LIBRARY`` points at a library to use instead of the installed one
(``none``: behave as if the kernels were not built);
``ONNXOPT_KERNELS_ISA`` (avx512, avx2, generic, scalar) caps the instruction set of kernels created
from then on (read by the library at kernel creation); ``ONNXOPT_KERNELS=0`` keeps onnxopt from
registering the library in its sessions.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.metadata
import logging
import os
import sys
from pathlib import Path

logger = logging.getLogger(__name__)

DOMAIN = "com.onnxopt"
LIBRARY_ENV = "ONNXOPT_KERNELS_LIBRARY"
ISA_ENV = "ONNXOPT_KERNELS_ISA"
ENABLE_ENV = "ONNXOPT_KERNELS"
ISAS = ("avx512", "avx2", "generic", "scalar")


def _library_name() -> str:
    if sys.platform == "win32":
        return "onnxopt_kernels.dll"
    if sys.platform == "darwin":
        return "libonnxopt_kernels.dylib"
    return "libonnxopt_kernels.so"


def _candidates() -> list[Path]:
    """Where the library may be: next to this module, any folder of this package, the installed files."""
    name = _library_name()
    places = [Path(__file__).resolve().parent / name]
    places += [Path(folder) / name for folder in __path__]  # editable installs map more than one folder
    try:
        for file in importlib.metadata.files("onnxopt") or []:
            if file.name == name:
                places.append(Path(str(file.locate())))
    except importlib.metadata.PackageNotFoundError:
        pass
    return places


@functools.lru_cache(maxsize=1)
def _find_library() -> str | None:
    override = os.environ.get(LIBRARY_ENV)
    if override and override.strip().lower() == "none":
        return None
    if override:
        if Path(override).is_file():
            return str(Path(override).resolve())
        logger.warning("%s=%s is not a file; looking for the installed kernel library", LIBRARY_ENV, override)
    for place in _candidates():
        if place.is_file():
            return str(place.resolve())
    logger.debug("no kernel library among %s", [str(place) for place in _candidates()])
    return None


@functools.lru_cache(maxsize=1)
def warn_unavailable() -> bool:
    """Log, once per process, that the kernels are missing; True when they are (callers: a model needs them)."""
    if available():
        return False
    logger.warning(
        "onnxopt's native kernels are not built (no C++ compiler at install time?): models with %s custom ops "
        "run their standard function bodies instead; reinstall with a compiler for the fast kernels",
        DOMAIN,
    )
    return True


def library_path() -> str | None:
    """Path of the kernel library for ``SessionOptions.register_custom_ops_library``; None when not built."""
    return _find_library()


def enabled() -> bool:
    """Whether onnxopt registers the library in its own sessions (``ONNXOPT_KERNELS=0`` turns it off)."""
    return os.environ.get(ENABLE_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


@functools.lru_cache(maxsize=1)
def _handle() -> ctypes.CDLL | None:
    """The library loaded into this process (the same instance onnxruntime loads: same path, same handle)."""
    path = library_path()
    if path is None:
        return None
    try:
        handle = ctypes.CDLL(path)
    except OSError as error:
        logger.warning("cannot load the onnxopt kernel library %s: %s", path, error)
        return None
    handle.onnxopt_kernels_calls.restype = ctypes.c_int64
    handle.onnxopt_kernels_calls.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    handle.onnxopt_kernels_isa.restype = ctypes.c_char_p
    handle.onnxopt_kernels_supported_isas.restype = ctypes.c_char_p
    float_pointer = ctypes.POINTER(ctypes.c_float)
    handle.onnxopt_kernels_fft.restype = ctypes.c_int
    handle.onnxopt_kernels_fft.argtypes = [ctypes.c_char_p, ctypes.c_int64, ctypes.c_int64] + [float_pointer] * 4
    return handle


def available() -> bool:
    """True when the library exists and loads in this process."""
    return _handle() is not None


def register(options) -> bool:  # options: onnxruntime.SessionOptions
    """Register the kernels in session options; False (nothing done) when the library is unavailable."""
    path = library_path()
    if path is None or not available():
        return False
    options.register_custom_ops_library(path)
    return True


def calls(op: str | None = None, isa: str | None = None) -> int:
    """Kernel runs so far in this process, for one op name and/or instruction set (None: all)."""
    handle = _handle()
    if handle is None:
        return 0
    return int(handle.onnxopt_kernels_calls(op.encode() if op else None, isa.encode() if isa else None))


def reset_calls() -> None:
    handle = _handle()
    if handle is not None:
        handle.onnxopt_kernels_reset_calls()


def isa() -> str | None:
    """The instruction set kernels created now would use (honours ``ONNXOPT_KERNELS_ISA``)."""
    handle = _handle()
    return handle.onnxopt_kernels_isa().decode() if handle is not None else None


def supported_isas() -> list[str]:
    """Instruction sets this CPU can run, best first."""
    handle = _handle()
    return handle.onnxopt_kernels_supported_isas().decode().split(",") if handle is not None else []


def fft(signals, isa_name: str):  # signals: complex array [n, lanes]
    """The library's forward FFT along axis 0 of ``signals`` with one instruction set's kernels (for tests)."""
    import numpy as np

    from onnxopt.errors import BadInputError

    handle = _handle()
    if handle is None:
        raise BadInputError("the onnxopt kernel library is not available")
    data = np.asarray(signals)
    if data.ndim != 2:
        raise BadInputError("fft expects a 2-D array [n, lanes]")
    real = np.ascontiguousarray(data.real, dtype=np.float32)
    imag = np.ascontiguousarray(data.imag, dtype=np.float32)
    out_real, out_imag = np.empty_like(real), np.empty_like(imag)
    pointer = ctypes.POINTER(ctypes.c_float)
    status = handle.onnxopt_kernels_fft(isa_name.encode(), data.shape[0], data.shape[1],
                                        real.ctypes.data_as(pointer), imag.ctypes.data_as(pointer),
                                        out_real.ctypes.data_as(pointer), out_imag.ctypes.data_as(pointer))
    if status != 0:
        raise BadInputError(f"instruction set {isa_name!r} is unknown or not supported by this CPU")
    return out_real + 1j * out_imag
