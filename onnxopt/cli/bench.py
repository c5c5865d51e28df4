"""``onnxopt bench A [B …]``: latency, throughput and peak memory side by side.

A standalone click command; the main group attaches it with ``cli.add_command(bench)``.
The measuring lives in ``onnxopt.benchmark``; this module only parses options and renders.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from onnxopt.benchmark import BenchConfig, BenchReport, benchmark
from onnxopt.cli.errors import handle_errors
from onnxopt.data import parse_shape_option
from onnxopt.report import format_for, write_report
from onnxopt.report.model import BenchView
from onnxopt.report.terminal import bench_table
from onnxopt.runtime import PROVIDERS


def render_table(report: BenchReport) -> Table:
    """The side-by-side table: one row per model, ratios to the first model (``onnxopt.report.terminal``)."""
    return bench_table(BenchView.from_doc(report.as_dict()))


@click.command("bench")
@click.argument("models", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=str))
@click.option("--provider", type=click.Choice(list(PROVIDERS)), default="cpu", show_default=True,
              help="onnxruntime execution provider.")
@click.option("--threads", type=int, default=0, show_default=True, help="Intra-op threads (0: onnxruntime's default).")
@click.option("--batch-size", type=int, default=1, show_default=True,
              help="Samples per run, sliced from DATA or random.")
@click.option("--inputs", "data", type=click.Path(path_type=str), default=None,
              help="DATA: one .npz, batch axis holding the samples, or a folder of .npz feeds (default: random).")
@click.option("--shape", "shapes", multiple=True, metavar="NAME=D0,D1,...",
              help="Concrete shape for an input with symbolic dims (repeatable).")
@click.option("--warmup", type=int, default=10, show_default=True, help="Untimed runs per model first.")
@click.option("--runs", type=int, default=100, show_default=True, help="Timed runs per model (interleaved).")
@click.option("--memory/--no-memory", default=True, show_default=True,
              help="Measure each model's peak RSS in a subprocess of its own.")
@click.option("--ort-optimize/--no-ort-optimize", default=True, show_default=True,
              help="Let onnxruntime apply its own graph optimizations, as a deployment would.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=str), default=None,
              help="Write the results as JSON to this file.")
@click.option("--report", "report_path", type=click.Path(dir_okay=False, path_type=str), default=None,
              help="Write a report: .html (standalone page with charts), .md or .json.")
@handle_errors
def bench(models: tuple[str, ...], provider: str, threads: int, batch_size: int, data: str | None,
          shapes: tuple[str, ...], warmup: int, runs: int, memory: bool, ort_optimize: bool,
          json_path: str | None, report_path: str | None) -> None:
    """Latency (p50/p90/mean), throughput and peak memory of MODELS side by side.

    Runs are interleaved (one run of each model in turn) so machine noise hits all alike;
    ratios are to the first model. Peak memory is each model's host RSS measured in a
    subprocess of its own (session creation plus a few runs, minus the RSS before loading).
    """
    if report_path:
        format_for(Path(report_path))  # refuse a bad suffix before timing anything
    config = BenchConfig(
        provider=provider,
        threads=threads,
        batch_size=batch_size,
        data=data,
        shapes=parse_shape_option(shapes),
        warmup_runs=warmup,
        timed_runs=runs,
        ort_optimize=ort_optimize,
        measure_memory=memory,
    )
    status_console = Console(stderr=True)
    with status_console.status(f"benchmarking {len(models)} model(s)…"):
        report = benchmark(list(models), config)
    # Off a terminal (pipes, CI logs) rich would squeeze the table to 80 columns; keep rows whole.
    console = Console() if sys.stdout.isatty() else Console(width=200)
    console.print(render_table(report))
    if json_path:
        report.write_json(json_path)
        click.echo(f"wrote {json_path}", err=True)
    if report_path:
        write_report(report.as_dict(), report_path)
        click.echo(f"wrote {report_path}", err=True)
