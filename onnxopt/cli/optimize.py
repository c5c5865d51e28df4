"""``onnxopt optimize IN -o OUT``: run a pipeline of passes, verify, write the model and a report."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from onnxopt.cli.console import parse_shapes, stderr, stdout
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
@click.option("--report", "report_path", type=click.Path(path_type=Path), help="Write a report (.json/.md/.html).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON instead of tables.")
@click.option("--dump-dir", type=click.Path(path_type=Path), help="Write models before/after a failing pass here.")
@click.option("--external-data/--embed", "external_data", default=None, help="Force external data or embedding.")
@click.option("--strict", is_flag=True, help="Stop at the first failing pass instead of rolling it back.")
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
) -> None:
    """Optimize INPUT_PATH and write OUTPUT; the default runs the exact cleanup passes."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from onnxopt.api import optimize as run_optimize
    from onnxopt.report import rich_tables, write_report

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
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=stderr,
        transient=True,
        disable=as_json or not stderr.is_terminal,
    ) as progress:
        task = progress.add_task("loading", total=None)
        result = run_optimize(
            input_path,
            output_path,
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
    summary = result.as_dict()
    if report_path is not None:
        write_report(summary, report_path)
    if as_json:
        click.echo(json.dumps(summary, indent=2, default=str))
    else:
        for table in rich_tables(summary):
            stdout.print(table)
        verification = summary.get("verification")
        if verification:
            stdout.print(
                f"verified against the original on {inputs or calib or 'random inputs'}: "
                f"max abs error {verification['max_abs_error']:.3g}, "
                f"min cosine {verification['min_cosine']:.6f}"
            )
        stdout.print(
            f"wrote {result.save_info.path}"
            + (f" (+ {result.save_info.external_data_path.name})" if result.save_info.external_data_path else "")
        )
    failures = result.report.failures
    if failures:
        for record in failures:
            click.echo(f"error: pass {record.name} {record.status}: {record.reason}", err=True)
        raise click.exceptions.Exit(EXIT_VERIFICATION_FAILED)
