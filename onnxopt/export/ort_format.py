"""onnxruntime's ORT format (``.ort``): the file its mobile and minimal builds load.

We do not write ORT flatbuffers ourselves: onnxruntime's own converter
(``onnxruntime.tools.convert_onnx_models_to_ort``) does, at a graph-optimization level,
and writes the reduced-operator config (``*.required_operators[_and_types].config``) that
a minimal build is compiled with (``--include_ops_by_config``; with type reduction it
also trims each kernel to the element types listed). We parse that config into the
report of kernels and types the model needs.

Equality: the ``.ort`` holds the graph *after* onnxruntime's optimizations at the chosen
level, so it is bit-identical to the ONNX model run at that same level with the same
session settings (the NCHWc layout transformer excluded unless targeting amd64, and
``session.qdqisint8allowed`` as the converter sets it). The same ONNX model with
onnxruntime's optimizations off can differ in the last bits (fusions reorder float
sums: 2.9e-6 on MiniLM at level ``all``), so the check compares against the former and
reports the latter for information.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from onnxopt.atomic_files import staged_outputs
from onnxopt.errors import BadInputError, RuntimeLoadError, VerificationError
from onnxopt.verify import Comparison, compare_runs

logger = logging.getLogger(__name__)

LEVELS = {
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
STYLES = ("fixed", "runtime")
PLATFORMS = ("arm", "amd64")
_LEVEL_ENV = "ORT_CONVERT_ONNX_MODELS_TO_ORT_OPTIMIZATION_LEVEL"
_TOOL_LOGGERS = ("ort_format_model.utils", "ort_format_model", "convert_onnx_models_to_ort")


@dataclass(frozen=True)
class OrtOptions:
    """How onnxruntime's converter optimizes and describes the model (its own defaults)."""

    level: str = "all"
    style: str = "fixed"
    target_platform: str | None = None
    type_reduction: bool = True

    def __post_init__(self) -> None:
        if self.level not in LEVELS:
            raise BadInputError(f"unknown ORT optimization level {self.level!r} (choose from {', '.join(LEVELS)})")
        if self.style not in STYLES:
            raise BadInputError(f"unknown ORT optimization style {self.style!r} (choose from {', '.join(STYLES)})")
        if self.target_platform not in (None, *PLATFORMS):
            choices = ", ".join(PLATFORMS)
            raise BadInputError(f"unknown target platform {self.target_platform!r} (choose from {choices})")


@dataclass(frozen=True)
class KernelUsage:
    """One operator a minimal build must include, with the element types it is used with."""

    domain: str
    opset: int
    op: str
    types: str = ""  # the config's JSON type list, e.g. {"inputs": {"0": ["float"]}}; empty: all types

    def as_dict(self) -> dict[str, Any]:
        return {"domain": self.domain, "opset": self.opset, "op": self.op, "types": self.types}


@dataclass
class OrtExport:
    """What the ORT export wrote and how the ``.ort`` compares with its ONNX source."""

    path: Path
    config_path: Path
    options: OrtOptions
    kernels: list[KernelUsage]
    bytes_written: int
    comparison: Comparison | None = None
    unoptimized_comparison: Comparison | None = None
    feeds: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        return self.comparison is not None and self.comparison.identical

    def as_dict(self) -> dict[str, Any]:
        return {
            "output": str(self.path),
            "config": str(self.config_path),
            "level": self.options.level,
            "style": self.options.style,
            "target_platform": self.options.target_platform,
            "type_reduction": self.options.type_reduction,
            "bytes": self.bytes_written,
            "kernels": [kernel.as_dict() for kernel in self.kernels],
            "feeds": self.feeds,
            "identical_to_onnx_at_same_level": self.identical if self.comparison else None,
            "vs_onnx_at_same_level": self.comparison.as_dict() if self.comparison else None,
            "vs_onnx_unoptimized": self.unoptimized_comparison.as_dict() if self.unoptimized_comparison else None,
            "notes": self.notes,
        }


def config_name(options: OrtOptions) -> str:
    """onnxruntime's name for the config (``required_operators[_and_types][.level][.with_runtime_opt].config``)."""
    base = "required_operators_and_types" if options.type_reduction else "required_operators"
    level = f".{options.level}" if options.level != "all" else ""
    runtime = ".with_runtime_opt" if options.style == "runtime" else ""
    return f"{base}{level}{runtime}.config"


def config_path_for(output: Path, options: OrtOptions) -> Path:
    """The config beside ``output``: ``model.ort`` → ``model.required_operators_and_types.config``."""
    return output.with_name(f"{output.stem}.{config_name(options)}")


def _split_entries(text: str) -> list[str]:
    """Split ``Op1{...},Op2,Op3{...}`` on the commas outside braces."""
    entries, depth, current = [], 0, []
    for char in text:
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
        if char == "," and depth == 0:
            entries.append("".join(current))
            current = []
        else:
            current.append(char)
    if current:
        entries.append("".join(current))
    return [entry.strip() for entry in entries if entry.strip()]


def parse_config(text: str) -> list[KernelUsage]:
    """The kernels of a reduced-operator config (``domain;opset;Op{types},Op,...`` lines)."""
    kernels = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        domain, opset, ops = line.split(";", 2)
        for entry in _split_entries(ops):
            name, brace, rest = entry.partition("{")
            kernels.append(KernelUsage(domain, int(opset), name, brace + rest if brace else ""))
    return kernels


def session_options(options: OrtOptions) -> tuple[ort.SessionOptions, list[str] | None]:
    """Session settings matching the converter's, and the optimizers it disables."""
    settings = ort.SessionOptions()
    settings.graph_optimization_level = LEVELS[options.level]
    settings.log_severity_level = 3
    settings.add_session_config_entry("session.qdqisint8allowed", "1" if options.target_platform == "arm" else "0")
    if options.style == "runtime":
        settings.add_session_config_entry("session.enable_saved_runtime_optimizations", "1")
    disabled = None if options.target_platform == "amd64" or options.level in ("basic", "extended") else [
        "NchwcTransformer"
    ]
    return settings, disabled


@contextlib.contextmanager
def _converter_environment(level: str) -> Iterator[io.StringIO]:
    """onnxruntime's converter takes its level from an environment variable and prints; contain both."""
    previous = os.environ.get(_LEVEL_ENV)
    os.environ[_LEVEL_ENV] = level
    quiet = [logging.getLogger(name) for name in _TOOL_LOGGERS]
    levels = [each.level for each in quiet]
    for each in quiet:
        each.setLevel(logging.WARNING)
    captured = io.StringIO()
    try:
        with contextlib.redirect_stdout(captured):
            yield captured
    finally:
        for each, old in zip(quiet, levels, strict=True):
            each.setLevel(old)
        if previous is None:
            os.environ.pop(_LEVEL_ENV, None)
        else:
            os.environ[_LEVEL_ENV] = previous


def _convert(onnx_path: Path, work: Path, options: OrtOptions) -> tuple[Path, Path]:
    try:
        from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle, convert_onnx_models_to_ort
    except ImportError:
        raise BadInputError("this onnxruntime build lacks onnxruntime.tools (needed to write the ORT format)") from None
    style = OptimizationStyle.Fixed if options.style == "fixed" else OptimizationStyle.Runtime
    with _converter_environment(options.level) as captured:
        try:
            convert_onnx_models_to_ort(
                onnx_path,
                output_dir=work,
                optimization_styles=[style],
                target_platform=options.target_platform,
                enable_type_reduction=options.type_reduction,
            )
        except Exception as error:
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise RuntimeLoadError(f"onnxruntime cannot convert the model to ORT format: {first}") from None
    for line in captured.getvalue().splitlines():
        logger.debug("ort converter: %s", line)
    models = sorted(work.glob("*.ort"))
    configs = sorted(work.glob("*.config"))
    if len(models) != 1 or len(configs) != 1:
        raise RuntimeLoadError(f"onnxruntime's converter wrote {len(models)} .ort and {len(configs)} config files")
    return models[0], configs[0]


def _run(path: Path, options: OrtOptions, feeds: list[dict[str, np.ndarray]], level: str | None = None
         ) -> list[dict[str, np.ndarray]]:
    settings, disabled = session_options(options)
    if level == "disabled":
        settings.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        session = ort.InferenceSession(str(path), settings, providers=["CPUExecutionProvider"],
                                       disabled_optimizers=disabled)
    except Exception as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise RuntimeLoadError(f"onnxruntime cannot load {path.name}: {first}") from None
    names = [output.name for output in session.get_outputs()]
    return [dict(zip(names, session.run(names, feed), strict=True)) for feed in feeds]


def export_ort(onnx_path: Path, output: Path, options: OrtOptions,
               feeds: list[dict[str, np.ndarray]] | None = None) -> OrtExport:
    """Write ``output`` (.ort) and its reduced-operator config; compare the .ort with the ONNX model on ``feeds``."""
    config_target = config_path_for(output, options)
    with tempfile.TemporaryDirectory(prefix=".onnxopt-ort-", dir=output.resolve().parent) as folder:
        source = onnx_path
        name = onnx_path.name.lower()
        if not name.endswith(".onnx") or name.endswith(".optimized.onnx"):
            # The converter takes only *.onnx and skips *.optimized.onnx (its own by-products).
            source = Path(folder) / "source" / "model.onnx"
            source.parent.mkdir()
            source.write_bytes(onnx_path.read_bytes())
        model_path, config_path = _convert(source, Path(folder) / "out", options)
        config_text = config_path.read_text().replace(str(model_path), output.name)
        kernels = parse_config(config_text)
        result = OrtExport(output, config_target, options, kernels, model_path.stat().st_size)
        if feeds:
            reference = _run(onnx_path, options, feeds)
            loaded = _run(model_path, options, feeds)
            result.comparison = compare_runs(reference, loaded)
            result.unoptimized_comparison = compare_runs(_run(onnx_path, options, feeds, "disabled"), loaded)
            result.feeds = len(feeds)
            if not result.identical:
                raise VerificationError(
                    f"the .ort differs from the ONNX model at the same optimization level "
                    f"(max abs error {result.comparison.max_abs:.3g}); nothing written"
                )
        with staged_outputs([output, config_target]) as (model_temp, config_temp):
            model_temp.write_bytes(model_path.read_bytes())
            config_temp.write_text(config_text)
    logger.info("wrote %s and %s (%d kernels)", output, config_target.name, len(kernels))
    return result
