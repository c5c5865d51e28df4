"""The Python API: ``optimize(IN, OUT, ...)`` does what ``onnxopt optimize`` does.

The CLI is a thin layer over this function, so scripts get the same checks, verification
and report as command-line users.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx

from onnxopt.data import make_feeds
from onnxopt.errors import BadInputError
from onnxopt.external_data import external_info, is_external
from onnxopt.model_io import Model, SaveInfo, iter_model_tensor_protos, load, model_file_bytes, save, to_proto
from onnxopt.pass_api import PassContext
from onnxopt.pass_manager import PassManager, ProgressCallback, RunReport
from onnxopt.pipeline import (
    PipelineStep,
    apply_overrides,
    instantiate,
    steps_from_config,
    steps_from_list,
    steps_from_preset,
)
from onnxopt.report.schema import header
from onnxopt.targets import split_target

logger = logging.getLogger(__name__)

DEFAULT_PRESET = "default"


@dataclass
class OptimizeResult:
    """The optimized model's report and file sizes."""

    report: RunReport
    input_bytes: int
    output_bytes: int
    save_info: SaveInfo
    pipeline: list[str] = field(default_factory=list)
    input_ir_version: int = 0
    opset: int = 0
    input_path: str = ""
    target: str = ""

    def as_dict(self) -> dict[str, Any]:
        """The report document (schema in docs/reports.md): envelope, run report, file sizes."""
        result = header("optimize")
        result.update(self.report.as_dict())
        result.update(
            {
                "input": self.input_path,
                "target": self.target,
                "pipeline": self.pipeline,
                "input_bytes": self.input_bytes,
                "output_bytes": self.output_bytes,
                "size_ratio": self.output_bytes / self.input_bytes if self.input_bytes else None,
                "output": str(self.save_info.path),
                "external_data": str(self.save_info.external_data_path) if self.save_info.external_data_path else None,
                "input_ir_version": self.input_ir_version,
                "ir_version": self.save_info.ir_version,
                "opset": self.opset,
            }
        )
        return result


def resolve_steps(
    passes: str | None, preset: str | None, config: Path | None, overrides: list[str]
) -> list[PipelineStep]:
    """Steps from exactly one of --passes, --preset, --config (default preset otherwise)."""
    from onnxopt.passes import PRESETS

    given = [name for name, value in (("--passes", passes), ("--preset", preset), ("--config", config)) if value]
    if len(given) > 1:
        raise BadInputError(f"give only one of {', '.join(given)}")
    if passes:
        steps = steps_from_list(passes)
    elif config:
        steps = steps_from_config(Path(config))
    else:
        steps = steps_from_preset(preset or DEFAULT_PRESET, PRESETS)
    apply_overrides(steps, list(overrides))
    return steps


def _check_paths(input_path: Path, output_path: Path, model: Model, proto: onnx.ModelProto) -> None:
    if output_path.resolve() == input_path.resolve():
        raise BadInputError("output path is the input file; onnxopt never overwrites its input")
    if model.had_external_data and model.base_dir is not None:
        data_out = output_path.resolve().with_name(output_path.name + ".data")
        for tensor in iter_model_tensor_protos(proto):
            if is_external(tensor):
                source = (model.base_dir / external_info(tensor).get("location", "")).resolve()
                if source == data_out:
                    raise BadInputError(f"output data file {data_out.name} would overwrite the input's external data")
    if not output_path.resolve().parent.is_dir():
        raise BadInputError(f"{output_path}: output folder does not exist")


def optimize(
    input_path: str | os.PathLike[str],
    output_path: str | os.PathLike[str],
    passes: str | None = None,
    preset: str | None = None,
    config: str | os.PathLike[str] | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    target: str = "ort-cpu",
    verify: bool = False,
    inputs: str | os.PathLike[str] | None = None,
    calib: str | os.PathLike[str] | None = None,
    batch_size: int = 1,
    shapes: dict[str, list[int]] | None = None,
    dump_dir: str | os.PathLike[str] | None = None,
    external_data: bool | None = None,
    strict: bool = False,
    progress: ProgressCallback | None = None,
    threads: int | None = None,
) -> OptimizeResult:
    """Load, run the pipeline (checked, optionally verified), and save atomically.

    ``target`` is one of ``onnxopt.targets.TARGETS`` (``ort-cpu:vnni`` lets int8 weights use
    their full range); ``threads`` is the onnxruntime thread count the model will run with,
    for passes that decide by timing (None: they time under 1 thread and all cores).
    """
    if threads is not None and threads < 1:
        raise BadInputError(f"--threads must be at least 1, got {threads}")
    runtime, cpu = split_target(target)
    input_path, output_path = Path(input_path), Path(output_path)
    steps = resolve_steps(passes, preset, Path(config) if config else None, list(overrides))
    from onnxopt.passes import all_passes

    instances = instantiate(steps, all_passes(), {"target": runtime, "cpu": cpu, "benchmark_threads": threads})
    model = load(input_path)
    proto = to_proto(model)  # exported once: external tensors still name their files beside the input
    _check_paths(input_path, output_path, model, proto)
    input_bytes = model_file_bytes(input_path, proto)
    shapes = shapes or {}
    calib_feeds = make_feeds(proto, calib, batch_size, shapes) if calib is not None else None
    verify_feeds = make_feeds(proto, inputs, batch_size, shapes) if inputs is not None else None
    if verify and verify_feeds is None and calib_feeds is None:
        verify_feeds = make_feeds(proto, None, batch_size, shapes)
    ctx = PassContext(target=runtime, cpu=cpu, data=calib_feeds or verify_feeds, shapes=shapes)
    manager = PassManager(
        instances,
        ctx=ctx,
        verify=verify,
        verify_feeds=verify_feeds or calib_feeds,
        dump_dir=Path(dump_dir) if dump_dir else None,
        strict=strict,
        progress=progress,
    )
    optimized, report = manager.run(model)
    info = save(optimized, output_path, external_data=external_data)
    return OptimizeResult(
        report=report,
        input_bytes=input_bytes,
        output_bytes=info.bytes_written,
        save_info=info,
        pipeline=[step.name for step in steps],
        input_ir_version=model.source_ir_version,
        opset=model.opset,
        input_path=str(input_path),
        target=target,
    )


@dataclass
class SourceOptimizeResult:
    """``optimize_source``: the conversion (when the source was not ONNX), the optimization, the export."""

    optimize: OptimizeResult
    conversion: Any = None  # onnxopt.convert.ConvertResult
    export: Any = None  # onnxopt.export.ExportResult
    output: Path | None = None

    def as_dict(self) -> dict[str, Any]:
        result = self.optimize.as_dict()
        result["conversion"] = self.conversion.as_dict() if self.conversion is not None else None
        result["export"] = self.export.as_dict() if self.export is not None else None
        if self.output is not None:
            result["output"] = str(self.output)
        return result


def optimize_source(
    input_path: str | os.PathLike[str],
    output_path: str | os.PathLike[str],
    convert_options: Any = None,
    export_format: str | None = None,
    export_options: Any = None,
    **optimize_options: Any,
) -> SourceOptimizeResult:
    """``optimize`` for any source: a framework model is converted first, and ``export_format`` exports last.

    The intermediate ONNX files live in a temporary folder beside the output, so only the
    final artefact (and, for ``ort``, its reduced-operator config) is written, atomically.
    """
    import tempfile

    from onnxopt.convert import ConvertOptions, convert, is_framework_source
    from onnxopt.export import ExportOptions, export

    input_path, output_path = Path(input_path), Path(output_path)
    if not output_path.resolve().parent.is_dir():
        raise BadInputError(f"{output_path}: output folder does not exist")
    with tempfile.TemporaryDirectory(prefix=".onnxopt-", dir=output_path.resolve().parent) as folder:
        conversion = None
        source = input_path
        if is_framework_source(input_path):
            options = convert_options or ConvertOptions()
            conversion = convert(input_path, Path(folder) / "converted.onnx", options)
            source = conversion.output
        optimized_path = Path(folder) / "optimized.onnx" if export_format else output_path
        result = optimize(source, optimized_path, **optimize_options)
        exported = None
        if export_format:
            if result.report.failures:
                return SourceOptimizeResult(result, conversion, None, None)
            exported = export(optimized_path, export_format, output_path, export_options or ExportOptions())
    return SourceOptimizeResult(result, conversion, exported, output_path)
