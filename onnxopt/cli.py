"""The ``onnxopt`` command line: optimize, inspect, compare, passes (+ check, bench).

A thin layer over the library: it parses options, shows progress and tables with rich,
and maps errors to exit codes (0 ok, 1 verification failed, 2 bad input or usage). A user
never sees a traceback unless they ask for one with ``--debug``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from onnxopt.cli_errors import EXIT_VERIFICATION_FAILED, handle_errors
from onnxopt.errors import BadInputError, VerificationError

stdout = Console()
stderr = Console(stderr=True)


def _configure_logging(verbose: int) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    root = logging.getLogger("onnxopt")
    root.handlers[:] = [RichHandler(console=stderr, show_path=False, show_time=False)]
    root.setLevel(level)
    root.propagate = False


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.option("--debug", is_flag=True, help="Show tracebacks of internal errors.")
@click.version_option(package_name="onnxopt")
def cli(verbose: int, debug: bool) -> None:
    """onnxopt: make ONNX models smaller and faster, verified against the original."""
    _configure_logging(verbose)


def _parse_shapes(items: tuple[str, ...]) -> dict[str, list[int]]:
    from onnxopt.data import parse_shape_option

    return parse_shape_option(list(items))


def _progress_callback(progress: Any, task: Any) -> Callable[[str, str, int], None]:
    def update(event: str, name: str, iteration: int) -> None:
        if event == "start":
            progress.update(task, description=f"{name} (iteration {iteration})")
        else:
            progress.advance(task)

    return update


@cli.command()
@click.argument("input_path", required=False, type=click.Path(path_type=Path))
@click.option("-o", "--output", "output_path", required=True, type=click.Path(path_type=Path), help="Where to write.")
@click.option("--example", is_flag=True, help="Optimize the shipped digits CNN (fp16 unless a pipeline is given).")
@click.option("--passes", help="Comma-separated passes, each `name` or `name:key=value:...`.")
@click.option("--preset", help="A named pipeline (see `onnxopt passes`).")
@click.option("--config", type=click.Path(path_type=Path), help="A TOML pipeline file of [[pass]] tables.")
@click.option("-O", "--option", "overrides", multiple=True, help="Override a pass option: pass.key=value.")
@click.option("--target", default="ort-cpu", show_default=True, type=click.Choice(["ort-cpu", "ort-cuda", "tensorrt"]))
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
            shapes=_parse_shapes(shapes),
            dump_dir=dump_dir,
            external_data=external_data,
            strict=strict,
            progress=_progress_callback(progress, task),
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


@cli.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@handle_errors
def inspect(path: Path, as_json: bool) -> None:
    """Describe a model: ops, parameters by dtype, duplicate weights, opsets, I/O, external data."""
    from onnxopt.inspect_model import inspect_model
    from onnxopt.report import human_bytes

    info = inspect_model(path)
    if as_json:
        click.echo(json.dumps(info, indent=2, default=str))
        return
    stdout.print(
        f"[bold]{info['path']}[/bold]  IR {info['ir_version']}  opsets {info['opsets']}  "
        f"producer {info['producer'] or '-'}"
    )
    io = Table(title="inputs / outputs")
    for column in ("kind", "name", "dtype", "shape"):
        io.add_column(column)
    for kind in ("inputs", "outputs"):
        for value in info[kind]:
            io.add_row(kind[:-1], value["name"], str(value["dtype"]), str(value["shape"]))
    stdout.print(io)
    ops = Table(title=f"ops ({info['nodes']} nodes, {info['subgraphs']} subgraphs, {len(info['functions'])} functions)")
    ops.add_column("op")
    ops.add_column("count", justify="right")
    for op, count in info["ops"].items():
        ops.add_row(op, str(count))
    stdout.print(ops)
    weights = Table(title=f"weights ({info['parameters']:,} parameters, {human_bytes(info['weight_bytes'])})")
    for column in ("dtype", "tensors", "parameters", "bytes"):
        weights.add_column(column, justify="right" if column != "dtype" else "left")
    for dtype, entry in info["weights_by_dtype"].items():
        weights.add_row(dtype, str(entry["tensors"]), f"{entry['parameters']:,}", human_bytes(entry["bytes"]))
    stdout.print(weights)
    if info["duplicate_weights"]:
        stdout.print(
            f"duplicate weights: {len(info['duplicate_weights'])} groups, "
            f"{human_bytes(info['duplicate_bytes'])} removable by dedup-initializers"
        )
    else:
        stdout.print("duplicate weights: none")
    if info["external_data"]:
        for name, size in info["external_data"].items():
            stdout.print(f"external data: {name} ({human_bytes(size)})")


@cli.command()
@click.argument("model_a", type=click.Path(path_type=Path))
@click.argument("model_b", type=click.Path(path_type=Path))
@click.option("--inputs", type=click.Path(path_type=Path), help="DATA (.npz or folder); random inputs otherwise.")
@click.option("--batch-size", default=1, show_default=True, type=int)
@click.option("--shape", "shapes", multiple=True, help="Concrete shape of an input: name=d0,d1,...")
@click.option("--max-abs-error", type=float, help="Exit 1 when any output differs by more than this.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@handle_errors
def compare(
    model_a: Path,
    model_b: Path,
    inputs: Path | None,
    batch_size: int,
    shapes: tuple[str, ...],
    max_abs_error: float | None,
    as_json: bool,
) -> None:
    """Run MODEL_A and MODEL_B on the same inputs: max abs/rel error and cosine per output."""
    from onnxopt.compare import compare_models

    comparison, info = compare_models(model_a, model_b, inputs, batch_size, _parse_shapes(shapes))
    if as_json:
        click.echo(json.dumps(info, indent=2, default=str))
    else:
        table = Table(title=f"{model_b} vs {model_a} ({info['feeds']} feeds)")
        for column in ("output", "max abs", "max rel", "cosine", "identical"):
            table.add_column(column, justify="left" if column == "output" else "right")
        for output in comparison.outputs:
            table.add_row(
                output.name,
                f"{output.max_abs:.3e}",
                f"{output.max_rel:.3e}",
                f"{output.cosine:.8f}",
                "yes" if output.identical else "no",
            )
        stdout.print(table)
    if max_abs_error is not None and comparison.max_abs > max_abs_error:
        raise VerificationError(f"max abs error {comparison.max_abs:.3g} exceeds {max_abs_error:g}")


def _option_rows(cls: Any) -> list[dict[str, Any]]:
    rows = []
    for spec in cls.option_fields():
        default = (
            spec.default
            if spec.default is not dataclasses.MISSING
            else (spec.default_factory() if spec.default_factory is not dataclasses.MISSING else None)
        )  # type: ignore[misc]
        rows.append({"name": spec.name, "type": str(spec.type), "default": default})
    return rows


@cli.command("passes")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@handle_errors
def list_passes(as_json: bool) -> None:
    """List every pass: its contract, what it walks, its options; and the presets."""
    from onnxopt.passes import PRESETS, all_passes

    entries = []
    for name, cls in all_passes().items():
        entries.append(
            {
                "name": name,
                "contract": cls.contract.value,
                "tolerance_rel": cls.tolerance_rel,
                "cleanup": cls.cleanup,
                "subgraphs": cls.walks_subgraphs,
                "functions": cls.walks_functions,
                "summary": cls.summary(),
                "options": _option_rows(cls),
            }
        )
    if as_json:
        click.echo(json.dumps({"passes": entries, "presets": PRESETS}, indent=2, default=str))
        return
    table = Table(title="passes")
    for column in ("pass", "contract", "walks", "options", "what"):
        table.add_column(column, overflow="fold")
    for entry in entries:
        contract = entry["contract"] + (f" {entry['tolerance_rel']:g}" if entry["contract"] == "tolerance" else "")
        walks = "/".join(w for w, on in (("subgraphs", entry["subgraphs"]), ("functions", entry["functions"])) if on)
        options = ", ".join(f"{o['name']}={o['default']}" for o in entry["options"])
        table.add_row(entry["name"], contract, walks or "main graph", options or "-", entry["summary"])
    stdout.print(table)
    presets = Table(title="presets")
    presets.add_column("preset")
    presets.add_column("passes", overflow="fold")
    for name, steps in PRESETS.items():
        presets.add_row(name, ", ".join(steps))
    stdout.print(presets)


def _attach_optional_commands() -> None:
    """Commands that live in their own modules (check, bench)."""
    for module_name, attr in (("onnxopt.cli_check", "check"), ("onnxopt.cli_bench", "bench")):
        try:
            module = __import__(module_name, fromlist=[attr])
        except ModuleNotFoundError as error:
            if error.name != module_name:
                raise
            continue
        cli.add_command(getattr(module, attr))


_attach_optional_commands()


def main() -> None:
    """Console-script entry point; click usage errors exit 2 by click's own convention."""
    cli(prog_name="onnxopt")


if __name__ == "__main__":
    main()
