"""``export(MODEL, format, OUT)``: an ONNX model in, the file a target runtime loads out.

Formats: ``onnx`` (the model prepared for an older or stricter runtime: fixed shapes,
lower opset/IR), ``ort`` (onnxruntime's mobile/minimal-build format plus its
reduced-operator config) and ``tensorrt`` (a serialized engine, where TensorRT is
importable). Preparation happens on a temporary copy, so the input is never modified,
and every artefact is written atomically. ``check`` runs the exported artefact on the
runtime that loads it and compares it with the source model on the same feeds.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from onnxopt.atomic_files import check_output_folder, copy_atomically, write_bytes_atomically
from onnxopt.data import make_feeds
from onnxopt.errors import BadInputError, VerificationError
from onnxopt.export.ort_format import OrtExport, OrtOptions, export_ort
from onnxopt.export.prepare import PrepareOptions, prepare
from onnxopt.export.tensorrt import (
    DEFAULT_WORKSPACE_BYTES,
    build_engine,
    engine_runner_missing,
    opt_shapes,
    require_tensorrt,
    run_engine,
)
from onnxopt.model_io import check_proto, read_proto
from onnxopt.runtime import create_session, run_session
from onnxopt.verify import Comparison, compare_runs

logger = logging.getLogger(__name__)

FORMATS = ("onnx", "ort", "tensorrt")
SUFFIXES = {"onnx": ".onnx", "ort": ".ort", "tensorrt": ".engine"}
# A TensorRT engine in fp16/int8 is judged like the lossy passes that produced the model: by cosine.
TENSORRT_MIN_COSINE = 0.99


@dataclass
class ExportOptions:
    """Everything ``onnxopt export`` takes besides the model, the format and the output path."""

    prepare: PrepareOptions = field(default_factory=PrepareOptions)
    ort: OrtOptions = field(default_factory=OrtOptions)
    shape_ranges: dict[str, tuple[tuple[int, ...], ...]] = field(default_factory=dict)
    workspace_bytes: int = DEFAULT_WORKSPACE_BYTES
    check: bool = True
    data: Path | None = None
    batch_size: int = 1
    max_batches: int = 8


@dataclass
class ExportResult:
    """What was written and, when checked, how the artefact compares with the source model."""

    source: Path
    output: Path
    format: str
    changes: list[str]
    bytes_written: int
    check: dict[str, Any] | None = None
    details: dict[str, Any] = field(default_factory=dict)
    extra_files: list[Path] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": str(self.source),
            "output": str(self.output),
            "format": self.format,
            "changes": self.changes,
            "bytes": self.bytes_written,
            "extra_files": [str(path) for path in self.extra_files],
            "check": self.check,
            **self.details,
        }


def _feeds(proto: onnx.ModelProto, options: ExportOptions) -> list[dict[str, np.ndarray]]:
    shapes = opt_shapes(options.shape_ranges)
    return list(make_feeds(proto, options.data, options.batch_size, shapes, max_batches=options.max_batches))


def _check_onnx(source: Path, exported: Path, feeds: list[dict[str, np.ndarray]]) -> Comparison:
    reference_session, exported_session = create_session(source), create_session(exported)
    names = [value.name for value in reference_session.get_inputs()]
    references = [run_session(reference_session, {name: feed[name] for name in names}) for feed in feeds]
    candidates = [run_session(exported_session, feed) for feed in feeds]
    return compare_runs(references, candidates)


def export(
    model: str | Path, fmt: str, output: str | Path, options: ExportOptions | None = None
) -> ExportResult:
    """Export ONNX ``model`` to ``fmt`` at ``output``; with ``options.check``, run and compare the result."""
    options = options or ExportOptions()
    model, output = Path(model), Path(output)
    if fmt not in FORMATS:
        raise BadInputError(f"unknown export format {fmt!r} (choose from {', '.join(FORMATS)})")
    if fmt == "tensorrt":
        require_tensorrt()  # before any work: a machine without TensorRT says so at once
    source_proto = read_proto(model)
    check_output_folder(output)
    if output.resolve() == model.resolve():
        raise BadInputError("output path is the input file; onnxopt never overwrites its input")
    changes: list[str] = []
    with tempfile.TemporaryDirectory(prefix=".onnxopt-export-", dir=output.resolve().parent) as folder:
        prepared = model
        proto = source_proto
        if options.prepare.changes_model:
            full = onnx.load(str(model))  # weights in memory: preparation rewrites the whole proto
            proto, changes = prepare(full, options.prepare)
            check_proto(proto, f"{model.name} prepared for export")
            prepared = Path(folder) / "model.onnx"
            prepared.write_bytes(proto.SerializeToString())
        feeds = _feeds(proto, options) if options.check else []
        result = ExportResult(model, output, fmt, changes, 0)
        if fmt == "onnx":
            if prepared == model:
                result.bytes_written = copy_atomically(model, output)
            else:
                result.bytes_written = write_bytes_atomically(output, prepared.read_bytes())
            if feeds:
                comparison = _check_onnx(model, output, feeds)
                result.check = {"runtime": "onnxruntime (CPU)", "feeds": len(feeds), **comparison.as_dict()}
        elif fmt == "ort":
            ort_result: OrtExport = export_ort(prepared, output, options.ort, feeds)
            result.bytes_written = ort_result.bytes_written
            result.extra_files = [ort_result.config_path]
            result.details["ort"] = ort_result.as_dict()
            if feeds and ort_result.comparison is not None:
                result.check = {"runtime": "onnxruntime (CPU), same optimization level", "feeds": len(feeds),
                                **ort_result.comparison.as_dict()}
        else:
            build = build_engine(prepared, output, options.shape_ranges, options.workspace_bytes)
            result.bytes_written = build.bytes_written
            result.details["tensorrt"] = build.as_dict()
            missing = engine_runner_missing() if feeds else None
            if missing:
                result.check = {"skipped": missing}
                logger.warning("engine not checked: %s", missing)
            elif feeds:
                session = create_session(prepared)
                references = [run_session(session, feed) for feed in feeds]
                comparison = compare_runs(references, run_engine(output, feeds))
                result.check = {"runtime": "TensorRT", "feeds": len(feeds), **comparison.as_dict()}
                if comparison.min_cosine < TENSORRT_MIN_COSINE:
                    raise VerificationError(f"the engine's outputs diverge from the ONNX model "
                                            f"(min cosine {comparison.min_cosine:.4f})")
    return result
