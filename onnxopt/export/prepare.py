"""Make a model fit an older or stricter runtime: fixed input shapes, a lower opset, a lower IR version.

Some runtimes need them: NNAPI, CoreML and many NPU delegates only take static shapes;
an onnxruntime or TensorRT release older than the exporter refuses a newer opset or IR
version. Fixing a shape writes the concrete dims into the graph input (a static dim must
agree with the value given) and re-runs ONNX shape inference so the rest of the graph
sees them. Down-conversion goes through ``onnx.version_converter`` (default domain only;
an op with no adapter to the target opset is refused with the converter's reason) and
the IR version can be lowered only as far as the opsets and dtypes used allow.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import onnx

from onnxopt.errors import BadInputError
from onnxopt.versioning import minimum_ir_version

logger = logging.getLogger(__name__)


@dataclass
class PrepareOptions:
    """What to change before exporting; all empty means the model goes through as it is."""

    fixed_shapes: dict[str, list[int]] = field(default_factory=dict)
    opset: int | None = None
    ir_version: int | None = None

    @property
    def changes_model(self) -> bool:
        return bool(self.fixed_shapes) or self.opset is not None or self.ir_version is not None


def default_opset(proto: onnx.ModelProto) -> int:
    """The model's default-domain opset version."""
    return next((entry.version for entry in proto.opset_import if entry.domain in ("", "ai.onnx")), 1)


def fix_shapes(proto: onnx.ModelProto, shapes: dict[str, list[int]]) -> list[str]:
    """Write concrete dims into graph inputs and re-infer shapes; returns a line per input changed."""
    initializers = {init.name for init in proto.graph.initializer}
    inputs = {value.name: value for value in proto.graph.input if value.name not in initializers}
    unknown = sorted(set(shapes) - set(inputs))
    if unknown:
        raise BadInputError(f"--fix-shape names unknown input(s) {', '.join(unknown)} (has {', '.join(inputs)})")
    changes = []
    for name, dims in shapes.items():
        declared = inputs[name].type.tensor_type.shape.dim
        if len(declared) != len(dims):
            raise BadInputError(f"--fix-shape {name}: rank {len(dims)}, but the model declares rank {len(declared)}")
        before = [dim.dim_value if dim.HasField("dim_value") else (dim.dim_param or "?") for dim in declared]
        for axis, (dim, value) in enumerate(zip(declared, dims, strict=True)):
            if value <= 0:
                raise BadInputError(f"--fix-shape {name}: dim {axis} must be positive, got {value}")
            if dim.HasField("dim_value") and dim.dim_value != value:
                raise BadInputError(f"--fix-shape {name}: dim {axis} is {dim.dim_value} in the model, not {value}")
            dim.Clear()
            dim.dim_value = value
        changes.append(f"{name}: {before} -> {list(dims)}")
    # Inferred shapes of intermediate values may name the old symbols: infer them anew.
    del proto.graph.value_info[:]
    try:
        inferred = onnx.shape_inference.infer_shapes(proto, strict_mode=False, data_prop=True)
    except Exception as error:  # shape inference refuses models it cannot type; the fixed inputs still stand
        logger.warning("shape inference after fixing shapes failed: %s", str(error).splitlines()[0])
    else:
        proto.CopyFrom(inferred)
    return changes


def downconvert(proto: onnx.ModelProto, opset: int) -> onnx.ModelProto:
    """The model at default-domain ``opset`` through onnx's version converter."""
    current = default_opset(proto)
    if opset == current:
        return proto
    try:
        converted = onnx.version_converter.convert_version(proto, opset)
    except Exception as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise BadInputError(f"cannot convert the model from opset {current} to {opset}: {reason}") from None
    logger.info("converted opset %d -> %d", current, opset)
    return converted


def set_ir_version(proto: onnx.ModelProto, ir_version: int | None) -> None:
    """The requested IR version, or the lowest the model allows; refuse one below what it needs."""
    needed = minimum_ir_version(proto)
    if ir_version is None:
        proto.ir_version = needed
        return
    if ir_version < needed:
        raise BadInputError(f"--ir-version {ir_version}: the model's opsets and types need IR {needed} or newer")
    proto.ir_version = ir_version


def prepare(proto: onnx.ModelProto, options: PrepareOptions) -> tuple[onnx.ModelProto, list[str]]:
    """Apply ``options`` to a full (weights-loaded) ModelProto; returns it and a line per change."""
    changes: list[str] = []
    if options.opset is not None:
        before = default_opset(proto)
        proto = downconvert(proto, options.opset)
        if before != options.opset:
            changes.append(f"opset {before} -> {options.opset}")
    if options.fixed_shapes:
        changes.extend(fix_shapes(proto, options.fixed_shapes))
    before_ir = proto.ir_version
    set_ir_version(proto, options.ir_version)
    if proto.ir_version != before_ir:
        changes.append(f"IR {before_ir} -> {proto.ir_version}")
    return proto, changes
