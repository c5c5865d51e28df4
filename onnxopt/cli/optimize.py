"""``onnxopt optimize IN -o OUT``: run a pipeline of passes, verify, write the model and a report."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from onnxopt.cli.console import parse_shapes, stderr, stdout
from onnxopt.cli.convert import conversion_options, options_from_cli, print_conversion
from onnxopt.cli.errors import EXIT_VERIFICATION_FAILED, handle_errors
from onnxopt.errors import BadInputError
from onnxopt.targets import TARGETS


def _progress_callback(progress: Any, task: Any) -> Callable[[str, str, int], None]:
    def update(event: str, name: str, iteration: int) -> None:
        if event == "start":
            progress.update(task, description=f"{name} (iteration {iteration})")
        else:
            progress.advance(task)

    return update


@click.command("optimize")
@click.argument("input_path", required=False, type=click.Path(path_type=Path))
@click.option("-o", "--output", "output_path", required=True, type=click.Path(path_type=Path), help="Where to write.")
@click.option("--example", is_flag=True, help="Optimize the shipped digits CNN (fp16 unless a pipeline is given).")
@click.option("--passes", help="Comma-separated passes, each `name` or `name:key=value:...`.")
@click.option("--preset", help="A named pipeline (see `onnxopt passes`).")
@click.option("--config", type=click.Path(path_type=Path), help="A TOML pipeline file of [[pass]] tables.")
@click.option("-O", "--option", "overrides", multiple=True, help="Override a pass option: pass.key=value.")
@click.option("--target", default="ort-cpu", show_default=True, type=click.Choice(TARGETS),
              help="Runtime to optimize for; ort-cpu runs on any CPU, ort-cpu:vnni assumes one whose int8 kernels "
                   "never saturate (AVX512-VNNI, AVX-VNNI, AMX or ARM64) and records that in the model.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="onnxruntime threads the model will run with; passes that time kernels time under it "
                   "(default: under 1 thread and under all cores).")
@click.option("--verify", is_flag=True, help="Compare outputs with the original after every pass.")
@click.option("--inputs", type=click.Path(path_type=Path), help="DATA for verification (.npz or folder).")
@click.option("--calib", type=click.Path(path_type=Path), help="DATA for calibration (.npz or folder).")
@click.option("--batch-size", default=1, show_default=True, type=int)
@click.option("--shape", "shapes", multiple=True, help="Concrete shape of an input: name=d0,d1,...")
@click.option("--report", "report_path", type=click.Path(path_type=Path),
              help="Write the full report: .html (standalone, charts), .md or .json (re-render with `onnxopt report`).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON instead of tables.")
@click.option("--dump-dir", type=click.Path(path_type=Path), help="Write models before/after a failing pass here.")
@click.option("--external-data/--embed", "external_data", default=None, help="Force external data or embedding.")
@click.option("--strict", is_flag=True, help="Stop at the first failing pass instead of rolling it back.")
@conversion_options
@click.option("--export", "export_format", type=click.Choice(["ort", "tensorrt", "onnx"]), default=None,
              help="Export the optimized model (OUTPUT is then the .ort / engine); see `onnxopt export`.")
@click.option("--fix-shape", "fix_shapes", multiple=True, metavar="NAME=D0,D1,...",
              help="With --export: make an input's shape static.")
@handle_errors
def optimize(
    input_path: Path | None,
    output_path: Path,
    example: bool,
    passes: str | None,
    preset: str | None,
    config: Path | None,
    overrides: tuple[str, ...],
    target: str,
    threads: int | None,
    verify: bool,
    inputs: Path | None,
    calib: Path | None,
    batch_size: int,
    shapes: tuple[str, ...],
    report_path: Path | None,
    as_json: bool,
    dump_dir: Path | None,
    external_data: bool | None,
    strict: bool,
    input_specs: tuple[str, ...] = (),
    opset: int | None = None,
    trust_pickle: bool = False,
    trusted_types: tuple[str, ...] = (),
    signature: str | None = None,
    rtol: float | None = None,
    export_format: str | None = None,
    fix_shapes: tuple[str, ...] = (),
) -> None:
    """Optimize INPUT_PATH and write OUTPUT; the default runs the exact cleanup passes.

    INPUT_PATH may also be a framework model (.pt2, SavedModel folder, .keras, .skops,
    pickle with --trust-pickle): it is converted first, as `onnxopt convert` does.
    """
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from onnxopt.api import optimize_source
    from onnxopt.cli.export import export_options_from_cli, print_export
    from onnxopt.report import format_for, renderables, to_json, write_report

    if example:
        from onnxopt.examples import EXAMPLE_INPUTS, EXAMPLE_MODEL, EXAMPLE_PRESET

        if input_path is not None:
            raise BadInputError("give either INPUT_PATH or --example, not both")
        input_path = EXAMPLE_MODEL
        inputs = inputs or EXAMPLE_INPUTS
        verify = True
        if not (passes or preset or config):
            preset = EXAMPLE_PRESET
    if input_path is None:
        raise BadInputError("missing INPUT_PATH (or --example)")
    if report_path is not None:
        format_for(report_path)  # refuse a bad suffix before the work, not after
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=stderr,
        transient=True,
        disable=as_json or not stderr.is_terminal,
    ) as progress:
        task = progress.add_task("loading", total=None)
        convert_options = options_from_cli(input_specs, opset, trust_pickle, trusted_types, signature, rtol)
        export_options = (
            export_options_from_cli(fix_shapes, shapes=shapes, data=inputs or calib, batch_size=batch_size)
            if export_format else None
        )
        outcome = optimize_source(
            input_path,
            output_path,
            convert_options=convert_options,
            export_format=export_format,
            export_options=export_options,
            passes=passes,
            preset=preset,
            config=config,
            overrides=overrides,
            target=target,
            verify=verify,
            inputs=inputs,
            calib=calib,
            batch_size=batch_size,
            shapes=parse_shapes(shapes),
            dump_dir=dump_dir,
            external_data=external_data,
            strict=strict,
            progress=_progress_callback(progress, task),
            threads=threads,
        )
    result = outcome.optimize
    summary = outcome.as_dict()
    if report_path is not None:
        write_report(summary, report_path)
    if as_json:
        click.echo(to_json(summary), nl=False)
    else:
        if outcome.conversion is not None:
            print_conversion(summary["conversion"])
        for renderable in renderables(summary, str(report_path) if report_path else None):
            stdout.print(renderable)
        verification = summary.get("verification")
        if verification:
            stdout.print(
                f"verified against the original on {inputs or calib or 'random inputs'}: "
                f"max abs error {verification['max_abs_error']:.3g}, "
                f"min cosine {verification['min_cosine']:.6f}"
            )
        if outcome.export is not None:
            print_export(summary["export"])
        elif not export_format:
            stdout.print(
                f"wrote {result.save_info.path}"
                + (f" (+ {result.save_info.external_data_path.name})" if result.save_info.external_data_path else "")
            )
    failures = result.report.failures
    if failures:
        for record in failures:
            click.echo(f"error: pass {record.name} {record.status}: {record.reason}", err=True)
        raise click.exceptions.Exit(EXIT_VERIFICATION_FAILED)
