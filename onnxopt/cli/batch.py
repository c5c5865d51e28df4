"""``onnxopt batch 'models/*.onnx' -o OUTDIR``: one pipeline over many models, one summary table.

A thin layer over ``onnxopt.tune.batch.optimize_many``; the models run through the same
executors as ``onnxopt tune`` (local, process:N, ray). Exit 1 when any model failed.
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from onnxopt.cli.console import parse_shapes, stderr
from onnxopt.cli.errors import EXIT_VERIFICATION_FAILED, handle_errors
from onnxopt.report.format import human_bytes
from onnxopt.targets import TARGETS


def render_summary(document: dict[str, Any]) -> Table:
    table = Table(title=f"{' → '.join(document['pipeline'])} · {document['executor']} · "
                        f"{len(document['models'])} models, {document['failed']} failed", title_justify="left")
    for column in ("model", "status", "size before", "size after", "ratio", "nodes", "seconds", "host", "reason"):
        table.add_column(column, justify="right" if column in ("size before", "size after", "ratio", "seconds")
                         else "left")
    for row in document["models"]:
        ratio = row.get("size_ratio")
        nodes = f"{row.get('nodes_before')} → {row.get('nodes_after')}" if row.get("nodes_after") is not None else "—"
        table.add_row(Path(row["model"]).name, row.get("status", "?"), human_bytes(row.get("input_bytes")),
                      human_bytes(row.get("size_bytes")), f"{ratio:.2f}" if ratio is not None else "—", nodes,
                      f"{row['optimize_s']:.1f}" if row.get("optimize_s") is not None else "—",
                      (row.get("host") or {}).get("hostname", "—"), (row.get("reason") or "")[:80])
    return table


@click.command("batch")
@click.argument("patterns", nargs=-1, required=True)
@click.option("-o", "--output-dir", required=True, type=click.Path(path_type=Path, file_okay=False),
              help="Folder for the optimized models (created if missing).")
@click.option("--passes", help="Comma-separated passes, each `name` or `name:key=value:...`.")
@click.option("--preset", help="A named pipeline (see `onnxopt passes`).")
@click.option("--config", type=click.Path(path_type=Path), help="A TOML pipeline file of [[pass]] tables.")
@click.option("-O", "--option", "overrides", multiple=True, help="Override a pass option: pass.key=value.")
@click.option("--target", default="ort-cpu", show_default=True, type=click.Choice(TARGETS))
@click.option("--calib", type=click.Path(path_type=Path), help="Calibration DATA for every model.")
@click.option("--inputs", type=click.Path(path_type=Path), help="Verification DATA for every model.")
@click.option("--verify", is_flag=True, help="Compare outputs with the original after every pass.")
@click.option("--batch-size", default=1, show_default=True, type=int)
@click.option("--shape", "shapes", multiple=True, help="Concrete shape of an input: name=d0,d1,...")
@click.option("--executor", default="local", show_default=True, help="local, process:N, ray or ray:ADDRESS.")
@click.option("--timeout", type=float, help="Kill a model's job after this many seconds.")
@click.option("--memory-mb", type=float, help="Address-space limit of a model's job.")
@click.option("--report", "report_path", type=click.Path(path_type=Path), help="Write the summary as JSON.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON instead of a table.")
@handle_errors
def batch(patterns: tuple[str, ...], output_dir: Path, passes: str | None, preset: str | None, config: Path | None,
          overrides: tuple[str, ...], target: str, calib: Path | None, inputs: Path | None, verify: bool,
          batch_size: int, shapes: tuple[str, ...], executor: str, timeout: float | None, memory_mb: float | None,
          report_path: Path | None, as_json: bool) -> None:
    """Optimize every model matching PATTERNS (files or quoted globs) with one pipeline."""
    from onnxopt.tune.batch import expand_models, optimize_many

    models = expand_models(patterns)
    output_dir.mkdir(parents=True, exist_ok=True)
    spinner = stderr.status(f"optimizing {len(models)} model(s)…") if stderr.is_terminal and not as_json else None
    with spinner or contextlib.nullcontext():
        document = optimize_many(models, output_dir, executor, passes=passes, preset=preset, config=config,
                                 overrides=overrides, target=target, calib=calib, inputs=inputs, verify=verify,
                                 batch_size=batch_size, shapes=parse_shapes(shapes), timeout_s=timeout,
                                 memory_mb=memory_mb)
    if report_path is not None:
        report_path.write_text(json.dumps(document, indent=1, default=str) + "\n")
    if as_json:
        click.echo(json.dumps(document, indent=1, default=str))
    else:
        console = Console() if sys.stdout.isatty() else Console(width=200)
        console.print(render_summary(document))
    if document["failed"]:
        raise click.exceptions.Exit(EXIT_VERIFICATION_FAILED)

