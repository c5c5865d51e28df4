"""onnxruntime sessions for verification, calibration and benchmarks.

Verification runs with onnxruntime's own graph optimizations off on the CPU, so what we
compare is what our passes did, not what onnxruntime would have fused anyway.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from onnxopt import kernels
from onnxopt.errors import BadInputError, RuntimeLoadError
from onnxopt.external_data import is_external
from onnxopt.model_io import (
    Model,
    iter_model_tensor_protos,
    save,
    serialize_model,
    stored_bytes,
    to_proto,
    write_session_copy,
)

logger = logging.getLogger(__name__)

PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}


def session_options(optimize: bool = False, threads: int = 0, use_kernels: bool | None = None) -> ort.SessionOptions:
    """Session options; ``optimize=False`` disables onnxruntime's graph rewrites.

    onnxopt's native kernels (``onnxopt.kernels``) are registered when built, unless ``use_kernels`` is
    False (None: unless ``ONNXOPT_KERNELS=0``), so models with onnxopt's custom ops run them; without the
    library those ops run their standard function bodies.
    """
    options = ort.SessionOptions()
    if use_kernels is None:
        use_kernels = kernels.enabled()
    if use_kernels:
        kernels.register(options)
    options.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return options


def providers_for(name: str) -> list[str]:
    """Execution providers for a short name, refusing ones this onnxruntime lacks."""
    if name not in PROVIDERS:
        raise BadInputError(f"unknown provider {name!r} (choose from {', '.join(PROVIDERS)})")
    wanted = PROVIDERS[name]
    if wanted[0] not in ort.get_available_providers():
        raise BadInputError(f"provider {name!r} is not available in this onnxruntime build")
    return wanted


@contextlib.contextmanager
def model_on_disk(model: Model | onnx.ModelProto | bytes | str | os.PathLike[str],
                  as_path: bool = False) -> Iterator[str | bytes]:
    """Yield something InferenceSession accepts: a path, or serialized bytes for small models.

    A model with external data (or one past protobuf's limit) goes to a temporary folder
    with its external files hard-linked, not copied (``write_session_copy``): every
    calibration, timing or verification session of a 2.5 GB model would otherwise write
    2.5 GB first. Where linking is impossible it is copied, as before. ``as_path`` always
    writes a file, for callers that open several sessions of one model (serialize once).
    """
    if isinstance(model, bytes):
        yield model
        return
    if isinstance(model, (str, os.PathLike)):
        yield str(model)
        return
    if isinstance(model, onnx.ModelProto):
        if any(is_external(t) for t in iter_model_tensor_protos(model)):
            raise BadInputError("an in-memory ModelProto with external data needs a path")
        yield model.SerializeToString()
        return
    has_external, inline_bytes = stored_bytes(model)
    if not has_external and not as_path and inline_bytes < 1_900_000_000:
        yield serialize_model(model)  # streams the large tensors instead of copying them into a proto
        return
    holder = [to_proto(model)]
    with _linked_or_copied(model, holder) as path:
        yield str(path)


@contextlib.contextmanager
def _linked_or_copied(model: Model, holder: list[onnx.ModelProto]) -> Iterator[Path]:
    """A temporary on-disk copy of ``model``: linked next to the system temp, next to the model, or copied.

    ``holder`` carries ``to_proto(model)``; it is emptied once written, so the proto is freed.
    """
    places = [None] + ([model.base_dir] if model.base_dir is not None else [])
    for place in places:
        try:
            folder = tempfile.mkdtemp(prefix=".onnxopt-session-", dir=place)
        except OSError:
            continue
        try:
            path = write_session_copy(model, Path(folder), holder.pop() if holder else None)
        except OSError as error:
            logger.debug("cannot link the external data into %s (%s)", folder, error)
            shutil.rmtree(folder, ignore_errors=True)
            continue
        try:
            yield path
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return
    holder.clear()
    logger.info("external data cannot be linked; copying the model for onnxruntime")
    with tempfile.TemporaryDirectory(prefix="onnxopt-session-") as folder:
        target = Path(folder) / "model.onnx"
        save(model, target, external_data=True)
        yield target


def _uses_kernel_domain(model: Model | onnx.ModelProto | str | os.PathLike[str]) -> bool:
    """Whether an in-memory model imports onnxopt's custom-op domain (files are not opened for this)."""
    if isinstance(model, onnx.ModelProto):
        return any(opset.domain == kernels.DOMAIN for opset in model.opset_import)
    if isinstance(model, Model):
        return any(getattr(entry, "domain", None) == kernels.DOMAIN for entry in model.graph.import_domains or [])
    if isinstance(model, bytes):
        return kernels.DOMAIN.encode() in model
    return False


def create_session(
    model: Model | onnx.ModelProto | bytes | str | os.PathLike[str],
    provider: str = "cpu",
    optimize: bool = False,
    threads: int = 0,
    use_kernels: bool | None = None,
) -> ort.InferenceSession:
    """An InferenceSession for a Model, a ModelProto, serialized bytes or a path (onnxopt's kernels registered:
    see session_options)."""
    if use_kernels is not False and _uses_kernel_domain(model):
        kernels.warn_unavailable()
    with model_on_disk(model) as source:
        try:
            options = session_options(optimize, threads, use_kernels)
            return ort.InferenceSession(source, options, providers=providers_for(provider))
        except (
            ort.capi.onnxruntime_pybind11_state.Fail,
            ort.capi.onnxruntime_pybind11_state.InvalidGraph,
            ort.capi.onnxruntime_pybind11_state.NotImplemented,
            ort.capi.onnxruntime_pybind11_state.InvalidArgument,
        ) as error:
            first = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise RuntimeLoadError(f"onnxruntime cannot load the model: {first}") from None


def run_session(session: ort.InferenceSession, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run a session on one feed and name its outputs."""
    names = [output.name for output in session.get_outputs()]
    values = session.run(names, feed)
    return dict(zip(names, values, strict=True))
