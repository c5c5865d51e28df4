"""``onnxopt bench A [B …]``: latency, throughput and peak memory side by side.

A standalone click command; the main group attaches it with ``cli.add_command(bench)``.
The measuring lives in ``onnxopt.benchmark``; this module only parses options and renders.
"""

from __future__ import annotations

import sys

import click
from rich.console import Console
from rich.table import Table

from onnxopt.benchmark import BenchConfig, BenchReport, benchmark
from onnxopt.cli.errors import handle_errors
from onnxopt.data import parse_shape_option
from onnxopt.runtime import PROVIDERS


def human_bytes(count: int | None) -> str:
    """1536 -> '1.5 KiB'; None -> '—'."""
    if count is None:
        return "—"
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def _ratio_text(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}×"


def render_table(report: BenchReport) -> Table:
    """The side-by-side table: one row per model, ratios to the first model."""
    config = report.config
    title = (f"{config['provider']} · batch {config['batch_size']} · {config['timed_runs']} runs after "
             f"{config['warmup_runs']} warm-up · inputs: {config['inputs']}")
    table = Table(title=title, title_justify="left")
    table.add_column("model", no_wrap=True)
    table.add_column("size", justify="right")
    table.add_column("p50 ms", justify="right")
    table.add_column("p90 ms", justify="right")
    table.add_column("mean ms", justify="right")
    table.add_column("samples/s", justify="right")
    table.add_column("peak mem", justify="right")
    table.add_column("p50 vs 1st", justify="right")
    table.add_column("thrpt vs 1st", justify="right")
    table.add_column("mem vs 1st", justify="right")
    for model in report.models:
        memory = model.memory.peak_rss_bytes if model.memory else None
        table.add_row(
            model.name,
            human_bytes(model.file_bytes),
            f"{model.latency.p50_ms:.3f}",
            f"{model.latency.p90_ms:.3f}",
            f"{model.latency.mean_ms:.3f}",
            f"{model.throughput_samples_per_s:.1f}",
            human_bytes(memory),
            _ratio_text(model.ratio_to_first.get("latency_p50")),
            _ratio_text(model.ratio_to_first.get("throughput")),
            _ratio_text(model.ratio_to_first.get("peak_rss")),
        )
    return table


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
@handle_errors
def bench(models: tuple[str, ...], provider: str, threads: int, batch_size: int, data: str | None,
          shapes: tuple[str, ...], warmup: int, runs: int, memory: bool, ort_optimize: bool,
          json_path: str | None) -> None:
    """Latency (p50/p90/mean), throughput and peak memory of MODELS side by side.

    Runs are interleaved (one run of each model in turn) so machine noise hits all alike;
    ratios are to the first model. Peak memory is each model's host RSS measured in a
    subprocess of its own (session creation plus a few runs, minus the RSS before loading).
    """
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
