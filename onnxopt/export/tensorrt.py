"""Serialized TensorRT engines, built with the ``tensorrt`` Python package where it is importable.

An engine is specific to the GPU and TensorRT version that built it, so it can only be
built on the deployment machine (or one like it). What we decide from the model:

* precision flags: a model with fp16 weights or casts (onnxopt's ``fp16`` preset) gets
  ``FP16``; a Q/DQ model (``int8-tensorrt``) gets ``INT8`` and is built in TensorRT's
  explicit-quantization mode — the scales are the model's own, no calibrator runs;
* optimization profiles: every input with a dynamic dim needs ``--shape
  name=MIN/OPT/MAX`` (each a comma-separated shape); static inputs get their one shape.

Without TensorRT (no package, or no GPU for it) the export is refused in one line.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import onnx

from onnxopt.atomic_files import write_bytes_atomically
from onnxopt.data import InputSpec, input_specs
from onnxopt.errors import BadInputError

logger = logging.getLogger(__name__)

DEFAULT_WORKSPACE_BYTES = 4 << 30
_QDQ_OPS = {"QuantizeLinear", "DequantizeLinear"}
_HALF = {onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16}


@dataclass(frozen=True)
class ShapeRange:
    """One input's optimization-profile shapes."""

    name: str
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]


@dataclass(frozen=True)
class Precision:
    """Builder flags implied by the model's own types."""

    fp16: bool
    int8: bool
    reasons: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        parts = [flag for flag, on in (("int8", self.int8), ("fp16", self.fp16)) if on]
        return "+".join(parts) or "fp32"


@dataclass
class EngineBuild:
    """What was built and how long it took."""

    path: Path
    precision: Precision
    profiles: list[ShapeRange]
    seconds: float
    bytes_written: int
    tensorrt_version: str
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "output": str(self.path),
            "precision": self.precision.name,
            "precision_reasons": list(self.precision.reasons),
            "profiles": [{"name": p.name, "min": p.min, "opt": p.opt, "max": p.max} for p in self.profiles],
            "build_seconds": self.seconds,
            "bytes": self.bytes_written,
            "tensorrt": self.tensorrt_version,
            "notes": self.notes,
        }


def require_tensorrt() -> ModuleType:
    """The tensorrt module, or BadInputError saying this machine cannot build engines."""
    try:
        import tensorrt  # type: ignore[import-not-found]
    except ImportError:
        raise BadInputError(
            "TensorRT export needs NVIDIA TensorRT (the tensorrt Python package and a CUDA GPU), "
            "which this machine does not have"
        ) from None
    except Exception as error:  # the package is there but its libraries (CUDA, the driver) are not
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise BadInputError(f"TensorRT is installed but cannot load here: {first}") from None
    return tensorrt


def _parse_dims(text: str, where: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(part) for part in text.replace("x", ",").split(",") if part.strip())
    except ValueError:
        raise BadInputError(f"{where}: dims must be integers, got {text!r}") from None
    if any(dim <= 0 for dim in dims):
        raise BadInputError(f"{where}: dims must be positive, got {text!r}")
    return dims


def parse_shape_ranges(items: list[str] | tuple[str, ...]) -> dict[str, tuple[tuple[int, ...], ...]]:
    """``--shape name=MIN/OPT/MAX`` (or one shape for all three) → {name: (min, opt, max)}."""
    ranges: dict[str, tuple[tuple[int, ...], ...]] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            raise BadInputError(f"--shape expects name=MIN/OPT/MAX or name=d0,d1,..., got {item!r}")
        parts = value.split("/")
        if len(parts) not in (1, 3):
            raise BadInputError(f"--shape {item!r}: give one shape or three (MIN/OPT/MAX)")
        shapes = tuple(_parse_dims(part, f"--shape {item!r}") for part in parts)
        ranges[name] = shapes * 3 if len(shapes) == 1 else shapes
    return ranges


def opt_shapes(ranges: dict[str, tuple[tuple[int, ...], ...]]) -> dict[str, list[int]]:
    """The OPT shape of each range: what random feeds for a check use."""
    return {name: list(shapes[1]) for name, shapes in ranges.items()}


def build_profiles(specs: list[InputSpec], ranges: dict[str, tuple[tuple[int, ...], ...]]) -> list[ShapeRange]:
    """One profile entry per input; dynamic dims must be covered by ``--shape``, static ones agree with it."""
    known = {spec.name for spec in specs}
    unknown = sorted(set(ranges) - known)
    if unknown:
        raise BadInputError(f"--shape names unknown input(s) {', '.join(unknown)} (has {', '.join(sorted(known))})")
    profiles = []
    for spec in specs:
        dynamic = [axis for axis, dim in enumerate(spec.shape) if not isinstance(dim, int)]
        if spec.name not in ranges:
            if dynamic:
                raise BadInputError(
                    f"input {spec.name!r} has dynamic dims {dynamic} ({list(spec.shape)}); TensorRT needs an "
                    f"optimization profile: --shape {spec.name}=MIN/OPT/MAX"
                )
            static = tuple(int(dim) for dim in spec.shape)  # type: ignore[arg-type]
            profiles.append(ShapeRange(spec.name, static, static, static))
            continue
        low, opt, high = ranges[spec.name]
        for label, shape in (("MIN", low), ("OPT", opt), ("MAX", high)):
            if len(shape) != len(spec.shape):
                raise BadInputError(f"--shape {spec.name}: {label} has rank {len(shape)}, the model rank "
                                    f"{len(spec.shape)}")
            for axis, (want, got) in enumerate(zip(spec.shape, shape, strict=True)):
                if isinstance(want, int) and want != got:
                    raise BadInputError(f"--shape {spec.name}: {label} dim {axis} is {got}, the model fixes it at "
                                        f"{want}")
        if not all(a <= b <= c for a, b, c in zip(low, opt, high, strict=True)):
            raise BadInputError(f"--shape {spec.name}: need MIN <= OPT <= MAX in every dim, got {low}/{opt}/{high}")
        profiles.append(ShapeRange(spec.name, low, opt, high))
    return profiles


def _all_nodes(graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    nodes = list(graph.node)
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                nodes.extend(_all_nodes(attr.g))
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    nodes.extend(_all_nodes(sub))
    return nodes


def detect_precision(proto: onnx.ModelProto) -> Precision:
    """FP16 when the model holds half tensors or casts to half; INT8 when it has Q/DQ nodes."""
    nodes = _all_nodes(proto.graph)
    reasons = []
    qdq = sum(1 for node in nodes if node.op_type in _QDQ_OPS)
    if qdq:
        reasons.append(f"{qdq} QuantizeLinear/DequantizeLinear nodes: explicit quantization")
    half_weights = sum(1 for init in proto.graph.initializer if init.data_type in _HALF)
    half_casts = sum(
        1 for node in nodes if node.op_type == "Cast"
        and any(attr.name == "to" and attr.i in _HALF for attr in node.attribute)
    )
    if half_weights or half_casts:
        reasons.append(f"{half_weights} half-precision weights, {half_casts} casts to half")
    return Precision(fp16=bool(half_weights or half_casts), int8=bool(qdq), reasons=tuple(reasons))


def _network_flags(trt: ModuleType) -> int:
    flags = 0
    creation = trt.NetworkDefinitionCreationFlag
    major = int(str(trt.__version__).split(".")[0])
    if major < 10 and hasattr(creation, "EXPLICIT_BATCH"):  # implicit batch is gone in TensorRT 10
        flags |= 1 << int(creation.EXPLICIT_BATCH)
    return flags


def build_engine(
    onnx_path: Path,
    output: Path,
    shape_ranges: dict[str, tuple[tuple[int, ...], ...]],
    workspace_bytes: int = DEFAULT_WORKSPACE_BYTES,
) -> EngineBuild:
    """Parse ``onnx_path`` with TensorRT's ONNX parser, build and write the serialized engine atomically."""
    trt = require_tensorrt()
    proto = onnx.load(str(onnx_path), load_external_data=False)
    profiles = build_profiles(input_specs(proto), shape_ranges)
    precision = detect_precision(proto)
    started = time.perf_counter()
    trt_logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(trt_logger)
    network = builder.create_network(_network_flags(trt))
    parser = trt.OnnxParser(network, trt_logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(index)) for index in range(parser.num_errors)]
        raise BadInputError(f"TensorRT's ONNX parser refuses {onnx_path.name}: {errors[0] if errors else 'unknown'}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_bytes))
    if precision.fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    if precision.int8:
        config.set_flag(trt.BuilderFlag.INT8)  # Q/DQ in the network: explicit quantization, no calibrator
    profile = builder.create_optimization_profile()
    for entry in profiles:
        profile.set_shape(entry.name, entry.min, entry.opt, entry.max)
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BadInputError(f"TensorRT could not build an engine from {onnx_path.name} (see TensorRT's log above)")
    seconds = time.perf_counter() - started
    written = write_bytes_atomically(output, bytes(serialized))
    logger.info("built %s engine %s in %.1f s", precision.name, output, seconds)
    return EngineBuild(output, precision, profiles, seconds, written, str(trt.__version__))


def engine_runner_missing() -> str | None:
    """Why ``run_engine`` cannot run here (it allocates device buffers through PyTorch's CUDA), or None."""
    try:
        import torch
    except ImportError:
        return "running an engine needs PyTorch with CUDA for device buffers"
    if not torch.cuda.is_available():
        return "running an engine needs a CUDA GPU, and PyTorch sees none"
    return None


def run_engine(engine_path: Path, feeds: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    """Run a serialized engine on feeds (device buffers through PyTorch's CUDA allocator)."""
    trt = require_tensorrt()
    try:
        import torch
    except ImportError:
        raise BadInputError("checking a TensorRT engine needs PyTorch with CUDA for device buffers "
                            "(pip install 'onnxopt[torch]' with a CUDA build)") from None
    if not torch.cuda.is_available():
        raise BadInputError("checking a TensorRT engine needs a CUDA GPU, and PyTorch sees none")
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    engine = runtime.deserialize_cuda_engine(engine_path.read_bytes())
    if engine is None:
        raise BadInputError(f"{engine_path}: TensorRT cannot deserialize the engine (built for another GPU/version?)")
    context = engine.create_execution_context()
    names = [engine.get_tensor_name(index) for index in range(engine.num_io_tensors)]
    outputs_per_feed = []
    stream = torch.cuda.Stream()
    for feed in feeds:
        buffers: dict[str, Any] = {}
        for name in names:
            if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                dtype = trt.nptype(engine.get_tensor_dtype(name))
                buffers[name] = torch.from_numpy(np.ascontiguousarray(feed[name], dtype=dtype)).cuda()
                context.set_input_shape(name, tuple(buffers[name].shape))
        for name in names:
            if engine.get_tensor_mode(name) == trt.TensorIOMode.OUTPUT:
                dtype = trt.nptype(engine.get_tensor_dtype(name))
                shape = tuple(context.get_tensor_shape(name))
                buffers[name] = torch.empty(shape, dtype=torch.from_numpy(np.empty(0, dtype)).dtype, device="cuda")
            context.set_tensor_address(name, buffers[name].data_ptr())
        if not context.execute_async_v3(stream.cuda_stream):
            raise BadInputError(f"{engine_path}: TensorRT failed to run the engine")
        stream.synchronize()
        outputs_per_feed.append({
            name: buffers[name].cpu().numpy() for name in names
            if engine.get_tensor_mode(name) == trt.TensorIOMode.OUTPUT
        })
    return outputs_per_feed
