"""``convert(SRC, OUT)``: a framework model in, a checked ONNX model out, or nothing written.

The steps, in order: detect the source format from the path (cheap, before any heavy
import); load it through its framework's module (the extra must be installed; unsafe
formats need explicit trust); settle the input signature (the source's own, overridden
by ``--input``); convert at the requested opset; tidy the proto (duplicate opset imports,
lowest IR version, provenance metadata); run the framework-vs-ONNX agreement check; and
only then write the file atomically. A disagreement is a VerificationError (exit 1) and
no file is written, so a broken conversion never reaches the optimizer.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from onnxopt.atomic_files import check_output_folder, write_bytes_atomically
from onnxopt.convert.agreement import DEFAULT_RTOL, Agreement, check_agreement
from onnxopt.convert.signature import format_spec, merge_specs
from onnxopt.convert.source import FRAMEWORK_OF_FORMAT, LoadedSource, detect_format
from onnxopt.data import InputSpec, make_feeds
from onnxopt.errors import BadInputError, VerificationError
from onnxopt.model_io import check_proto
from onnxopt.versioning import minimum_ir_version

logger = logging.getLogger(__name__)

# Opset 18: the lowest that PyTorch's exporter writes, supported by onnxruntime ≥ 1.14 and TensorRT ≥ 8.6;
# older runtimes get a down-converted copy from `onnxopt export --opset N`.
DEFAULT_OPSET = 18


@dataclass
class ConvertOptions:
    """How to load, convert and check a framework model (every field has a safe default)."""

    inputs: list[InputSpec] = field(default_factory=list)
    opset: int = DEFAULT_OPSET
    data: Path | None = None
    batch_size: int = 8  # samples per feed where the batch axis is free: more rows, a stronger check
    shapes: dict[str, list[int]] = field(default_factory=dict)
    trust_pickle: bool = False
    trusted_types: list[str] = field(default_factory=list)
    signature: str | None = None
    rtol: float = DEFAULT_RTOL
    random_feeds: int = 2
    max_batches: int = 16


@dataclass
class ConvertResult:
    """What was converted, by what, and how well the ONNX model agrees with the framework."""

    source: Path
    output: Path
    source_format: str
    framework: str
    converter: str
    opset: int
    inputs: list[InputSpec]
    outputs: list[str]
    agreement: Agreement
    seconds: float
    bytes_written: int
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": str(self.source),
            "output": str(self.output),
            "format": self.source_format,
            "framework": self.framework,
            "converter": self.converter,
            "opset": self.opset,
            "inputs": [format_spec(spec) for spec in self.inputs],
            "outputs": self.outputs,
            "agreement": self.agreement.as_dict(),
            "seconds": self.seconds,
            "bytes_written": self.bytes_written,
            "notes": self.notes,
        }


def load_source(path: Path, kind: str, options: ConvertOptions) -> LoadedSource:
    """Load ``path`` with the module of its framework (imported only now)."""
    if kind == "torch":
        from onnxopt.convert.from_torch import load_torch

        return load_torch(path)
    if kind == "savedmodel":
        from onnxopt.convert.from_tf import load_saved_model

        return load_saved_model(path, options.signature)
    if kind == "keras":
        from onnxopt.convert.from_tf import load_keras

        return load_keras(path)
    if kind in ("skops", "pickle"):
        from onnxopt.convert.from_sklearn import load_sklearn

        return load_sklearn(path, kind, options.trust_pickle, options.trusted_types)
    raise BadInputError(f"{path}: is already ONNX; run `onnxopt optimize` or `onnxopt export` on it")


def _tidy(proto: onnx.ModelProto, loaded: LoadedSource, agreement: Agreement | None = None) -> onnx.ModelProto:
    """One import per opset domain, the lowest IR version, and where the model came from."""
    versions: dict[str, int] = {}
    for entry in proto.opset_import:
        versions[entry.domain] = max(versions.get(entry.domain, 0), entry.version)
    del proto.opset_import[:]
    for domain, version in sorted(versions.items()):
        proto.opset_import.append(onnx.helper.make_opsetid(domain, version))
    proto.ir_version = minimum_ir_version(proto)
    metadata = {entry.key: entry.value for entry in proto.metadata_props}
    metadata["onnxopt.converted_from"] = f"{loaded.framework}: {loaded.path.name}"
    metadata["onnxopt.converter"] = loaded.converter
    if agreement is not None:
        metadata["onnxopt.conversion_max_rel_error"] = f"{agreement.comparison.max_rel:.3g}"
    del proto.metadata_props[:]
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    return proto


def _name_dims(proto: onnx.ModelProto, specs: list[InputSpec]) -> None:
    """Give dynamic input dims the names the signature used (converters often leave them anonymous)."""
    by_name = {spec.name: spec for spec in specs}
    for value in proto.graph.input:
        spec = by_name.get(value.name)
        dims = value.type.tensor_type.shape.dim
        if spec is None or len(dims) != len(spec.shape):
            continue
        for dim, wanted in zip(dims, spec.shape, strict=True):
            if isinstance(wanted, str) and not dim.HasField("dim_value"):
                dim.dim_param = wanted


def _feeds(loaded: LoadedSource, proto: onnx.ModelProto, options: ConvertOptions) -> tuple[list[dict], str]:
    if options.data is not None:
        feeds = make_feeds(proto, options.data, options.batch_size, options.shapes, max_batches=options.max_batches)
        return list(feeds), f"DATA {options.data}"
    shapes = {**loaded.example_shapes, **options.shapes}
    random = list(make_feeds(proto, None, options.batch_size, shapes, random_count=options.random_feeds))
    parts = [f"{len(loaded.example_feeds)} example input(s) saved with the model"] if loaded.example_feeds else []
    parts.append(f"{len(random)} random feed(s)")
    return [*loaded.example_feeds, *[_cast_like(feed, loaded) for feed in random]], " + ".join(parts)


def _cast_like(feed: dict[str, np.ndarray], loaded: LoadedSource) -> dict[str, np.ndarray]:
    dtypes = {spec.name: spec.dtype for spec in loaded.inputs}
    return {name: value.astype(dtypes.get(name, value.dtype), copy=False) for name, value in feed.items()}


def convert(
    source: str | Path, output: str | Path, options: ConvertOptions | None = None
) -> ConvertResult:
    """Convert a framework model file to ONNX, check agreement, write ``output`` atomically."""
    started = time.perf_counter()
    options = options or ConvertOptions()
    path, output = Path(source), Path(output)
    kind = detect_format(path)
    if kind == "onnx":
        raise BadInputError(f"{path}: is already ONNX; run `onnxopt optimize` or `onnxopt export` on it")
    check_output_folder(output)
    if output.resolve() == path.resolve() or (path.is_dir() and path.resolve() in output.resolve().parents):
        raise BadInputError(f"{output}: would write into the source; choose another output path")
    if options.opset < 7:
        raise BadInputError(f"--opset {options.opset}: onnxopt converts at opset 7 or newer")
    loaded = load_source(path, kind, options)
    specs = merge_specs(loaded.inputs, options.inputs, path.name, loaded.renamable_inputs)
    proto = loaded.to_onnx(specs, options.opset)
    proto = _tidy(proto, loaded)
    _name_dims(proto, specs)
    check_proto(proto, f"{path.name} converted by {loaded.converter}")
    feeds, feed_source = _feeds(loaded, proto, options)
    agreement = check_agreement(loaded, proto, feeds, feed_source, options.rtol)
    if not agreement.passed:
        raise VerificationError(f"the ONNX model disagrees with {loaded.framework} on {feed_source}: "
                                f"{agreement.reason}; nothing written")
    proto = _tidy(proto, loaded, agreement)
    written = write_bytes_atomically(output, proto.SerializeToString())
    opset = next((entry.version for entry in proto.opset_import if entry.domain in ("", "ai.onnx")), options.opset)
    logger.info("converted %s (%s) to %s", path, loaded.converter, output)
    return ConvertResult(
        source=path,
        output=output,
        source_format=kind,
        framework=FRAMEWORK_OF_FORMAT[kind],
        converter=loaded.converter,
        opset=int(opset),
        inputs=specs,
        outputs=[value.name for value in proto.graph.output],
        agreement=agreement,
        seconds=time.perf_counter() - started,
        bytes_written=written,
        notes=loaded.notes,
    )
