"""``onnxopt export MODEL --format ort|tensorrt|onnx -o OUT``: the file a target runtime loads.

The options that shape an export are shared with ``onnxopt optimize --export``
(``export_options_from_cli``); the work is in ``onnxopt.export``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from onnxopt.cli.console import parse_shapes, stdout
from onnxopt.cli.errors import handle_errors

FORMAT_CHOICES = ["ort", "tensorrt", "onnx"]


def export_options_from_cli(fix_shapes: tuple[str, ...] = (), opset: int | None = None, ir_version: int | None = None,
                            shapes: tuple[str, ...] = (), ort_level: str = "all", ort_style: str = "fixed",
                            target_platform: str | None = None, type_reduction: bool = True,
                            workspace_mib: int | None = None, check: bool = True, data: Path | None = None,
                            batch_size: int = 1) -> Any:
    """An ExportOptions from CLI values (a bad one is a BadInputError)."""
    from onnxopt.export import ExportOptions, OrtOptions, PrepareOptions
    from onnxopt.export.tensorrt import DEFAULT_WORKSPACE_BYTES, parse_shape_ranges

    return ExportOptions(
        prepare=PrepareOptions(fixed_shapes=parse_shapes(fix_shapes), opset=opset, ir_version=ir_version),
        ort=OrtOptions(level=ort_level, style=ort_style, target_platform=target_platform,
                       type_reduction=type_reduction),
        shape_ranges=parse_shape_ranges(shapes),
        workspace_bytes=(workspace_mib << 20) if workspace_mib else DEFAULT_WORKSPACE_BYTES,
        check=check,
        data=data,
        batch_size=batch_size,
    )


def print_export(summary: dict[str, Any]) -> None:
    """Changes, kernels (ORT), engine facts (TensorRT) and the check, as tables and lines."""
    for change in summary["changes"]:
        stdout.print(f"prepared: {change}")
    ort_info = summary.get("ort")
    if ort_info:
        table = Table(title=f"kernels a minimal onnxruntime build needs ({len(ort_info['kernels'])}; "
                            f"level {ort_info['level']}, {ort_info['style']})", title_justify="left")
        for column in ("domain", "opset", "op", "types"):
            table.add_column(column, overflow="fold")
        for kernel in ort_info["kernels"]:
            table.add_row(kernel["domain"], str(kernel["opset"]), kernel["op"], kernel["types"] or "all")
        stdout.print(table)
        unoptimized = ort_info.get("vs_onnx_unoptimized")
        if unoptimized:
            stdout.print(f"vs the ONNX model with onnxruntime's optimizations off: max abs error "
                         f"{unoptimized['max_abs_error']:.3g}")
    engine = summary.get("tensorrt")
    if engine:
        stdout.print(f"TensorRT {engine['tensorrt']}: {engine['precision']} engine built in "
                     f"{engine['build_seconds']:.1f} s")
    check = summary.get("check")
    if check and "skipped" in check:
        stdout.print(f"not checked: {check['skipped']}")
    elif check:
        verdict = "bit-identical" if check["identical"] else f"max abs error {check['max_abs_error']:.3g}"
        stdout.print(f"checked on {check['runtime']} over {check['feeds']} feeds: {verdict}, "
                     f"min cosine {check['min_cosine']:.6f}")
    extra = "".join(f" + {Path(path).name}" for path in summary["extra_files"])
    stdout.print(f"wrote {summary['output']} ({summary['bytes']:,} bytes){extra}")


def export_cli_options(command: Any) -> Any:
    """Options of preparing and exporting (for export; optimize --export takes the common ones)."""
    decorators = [
        click.option("--fix-shape", "fix_shapes", multiple=True, metavar="NAME=D0,D1,...",
                     help="Make an input's shape static (repeatable)."),
        click.option("--opset", type=int, default=None, help="Down-convert (or up-convert) to this default-domain "
                     "opset for an older runtime."),
        click.option("--ir-version", type=int, default=None, help="Write this IR version (no lower than the model "
                     "needs)."),
        click.option("--shape", "shapes", multiple=True, metavar="NAME=MIN/OPT/MAX",
                     help="TensorRT optimization profile of an input (each a comma-separated shape), or one shape; "
                     "the OPT shape feeds --check."),
        click.option("--ort-level", type=click.Choice(["basic", "extended", "all"]), default="all", show_default=True,
                     help="onnxruntime graph-optimization level baked into the .ort."),
        click.option("--ort-style", type=click.Choice(["fixed", "runtime"]), default="fixed", show_default=True,
                     help="fixed: optimize now; runtime: save optimizations to replay (NNAPI/CoreML)."),
        click.option("--target-platform", type=click.Choice(["arm", "amd64"]), default=None,
                     help="Allow platform-specific ORT optimizations (default: portable)."),
        click.option("--type-reduction/--no-type-reduction", default=True, show_default=True,
                     help="List element types per kernel in the reduced-op config."),
        click.option("--workspace-mib", type=int, default=None, help="TensorRT builder workspace (default 4096)."),
        click.option("--check/--no-check", default=True, show_default=True,
                     help="Run the exported artefact on its runtime and compare it with the model."),
    ]
    for decorator in reversed(decorators):
        command = decorator(command)
    return command


@click.command("export")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(FORMAT_CHOICES), required=True, help="What to write.")
@click.option("-o", "--output", "output_path", required=True, type=click.Path(path_type=Path), help="Where to write.")
@export_cli_options
@click.option("--inputs", "data", type=click.Path(path_type=Path), help="DATA for --check (.npz or folder).")
@click.option("--batch-size", default=1, show_default=True, type=int)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@handle_errors
def export(model: Path, fmt: str, output_path: Path, fix_shapes: tuple[str, ...], opset: int | None,
           ir_version: int | None, shapes: tuple[str, ...], ort_level: str, ort_style: str,
           target_platform: str | None, type_reduction: bool, workspace_mib: int | None, check: bool,
           data: Path | None, batch_size: int, as_json: bool) -> None:
    """Export the ONNX MODEL as an .ort file (+ reduced-op config), a TensorRT engine, or prepared ONNX."""
    from onnxopt.export import export as run_export

    options = export_options_from_cli(fix_shapes, opset, ir_version, shapes, ort_level, ort_style, target_platform,
                                      type_reduction, workspace_mib, check, data, batch_size)
    result = run_export(model, fmt, output_path, options)
    summary = result.as_dict()
    if as_json:
        click.echo(json.dumps(summary, indent=2, default=str))
        return
    print_export(summary)
