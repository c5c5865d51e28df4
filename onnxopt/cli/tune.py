"""``onnxopt tune MODEL -o OUT``: the best model within a fidelity budget, searched over the passes.

A thin layer over ``onnxopt.tune.tune``: options in, a progress bar with the best so far
on stderr, the Pareto front as a table, the report file. Exit 0 when a configuration met
the budget (its model is written), 1 when none did, 2 on bad input.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from onnxopt.cli.console import parse_shapes, stderr
from onnxopt.cli.errors import EXIT_VERIFICATION_FAILED, handle_errors
from onnxopt.errors import BadInputError
from onnxopt.report.jsonio import to_json
from onnxopt.targets import TARGETS
from onnxopt.tune.objective import METRICS, OBJECTIVES
from onnxopt.tune.results import FRONT_COLUMNS, front_rows

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str | None) -> float | None:
    """``90``, ``90s``, ``15m``, ``2h`` -> seconds."""
    if text is None:
        return None
    text = text.strip().lower()
    scale = _UNITS.get(text[-1:])
    number = text[:-1] if scale else text
    try:
        return float(number) * (scale or 1.0)
    except ValueError:
        raise BadInputError(f"--time-budget {text!r}: give seconds, or a number with s, m or h") from None


def _split(value: str | None) -> list[str] | None:
    return [item.strip() for item in value.split(",") if item.strip()] if value else None


def _best_text(best: dict[str, Any] | None, objective: str) -> str:
    if not best:
        return "best: none within budget yet"
    if objective == "latency" and best.get("latency_ratio") is not None:
        value = f"{best['latency_ratio']:.2f}× latency"
    elif objective == "size" and best.get("size_bytes") is not None:
        value = f"{best['size_bytes'] / 1e6:.2f} MB"
    elif best.get("session_peak_rss_bytes") is not None:
        value = f"{best['session_peak_rss_bytes'] / 1e6:.1f} MB RSS"
    else:
        value = "?"
    error = best.get("error")
    return f"best: {best['key']} ({value}, error {error:.3g})" if error is not None else f"best: {best['key']}"


def render_front(document: dict[str, Any]) -> Table:
    settings = document["settings"]
    title = (f"Pareto front ({settings['objective']} vs {settings['metric']} error) · "
             f"{len(document['trials'])} trials of {document['space']['grid_size']} · ★ best")
    table = Table(title=title, title_justify="left")
    for column in FRONT_COLUMNS:
        table.add_column(column, justify="left" if column in ("configuration", "feasible") else "right")
    for row in front_rows(document):
        table.add_row(*row)
    return table


@click.command("tune")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("-o", "--output", "output", required=True, type=click.Path(path_type=Path),
              help="Where to write the best model.")
@click.option("--data", type=click.Path(path_type=Path), help="Evaluation DATA (held out; 'labels' for accuracy).")
@click.option("--calib", type=click.Path(path_type=Path), help="Calibration DATA (default: --data).")
@click.option("--metric", default="cosine", show_default=True,
              help=f"Fidelity metric: {', '.join(METRICS)}, or python:module:function (returns an error).")
@click.option("--max-error", type=float, help="Budget: largest error against the original (cosine: 1 - cosine).")
@click.option("--min-metric", type=float, help="Budget: smallest cosine or accuracy.")
@click.option("--objective", type=click.Choice(OBJECTIVES), default="latency", show_default=True)
@click.option("--max-latency-ms", type=float, help="Hard budget: p50 latency on the trial's host.")
@click.option("--max-size-mb", type=float, help="Hard budget: file size (MB = 10^6 bytes).")
@click.option("--trials", type=int, default=24, show_default=True, help="Most trials (cached ones included).")
@click.option("--time-budget", help="Stop starting trials after this long (seconds, or 15m, 2h).")
@click.option("--executor", default="local", show_default=True, help="local, process:N, ray or ray:ADDRESS.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--target", type=click.Choice(TARGETS), default="ort-cpu",
              show_default=True)
@click.option("--search-passes", help="Search only these passes (comma-separated).")
@click.option("--exclude-passes", help="Leave these passes out of the search (comma-separated).")
@click.option("-O", "--option", "overrides", multiple=True, help="Fix a pass option: pass.key=value.")
@click.option("--batch-size", type=int, default=1, show_default=True, help="Samples per run (fidelity and latency).")
@click.option("--shape", "shapes", multiple=True, help="Concrete shape of an input: name=d0,d1,...")
@click.option("--threads", type=int, default=1, show_default=True, help="onnxruntime intra-op threads (0: default).")
@click.option("--runs", type=int, default=50, show_default=True, help="Timed runs per model (at least; more for "
              "tiny models).")
@click.option("--warmup", type=int, default=5, show_default=True)
@click.option("--margin", type=float, default=0.05, show_default=True,
              help="Latency/memory within this fraction of the best count as ties.")
@click.option("--cache-dir", type=click.Path(path_type=Path), help="Trial cache (default ~/.cache/onnxopt/tune).")
@click.option("--no-cache", is_flag=True, help="Neither read nor write cached trials.")
@click.option("--trial-timeout", default="30m", show_default=True, help="Kill a trial after this long.")
@click.option("--trial-memory-mb", type=float, help="Address-space limit of a trial process.")
@click.option("--keep-models", type=click.Choice(["front", "all", "none"]), default="front", show_default=True,
              help="Which trial models stay in the cache.")
@click.option("--report", "report_path", type=click.Path(path_type=Path),
              help="Write the report (.json, .md or .html).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON instead of tables.")
@handle_errors
def tune(model: Path, output: Path, data: Path | None, calib: Path | None, metric: str, max_error: float | None,
         min_metric: float | None, objective: str, max_latency_ms: float | None, max_size_mb: float | None,
         trials: int, time_budget: str | None, executor: str, seed: int, target: str, search_passes: str | None,
         exclude_passes: str | None, overrides: tuple[str, ...], batch_size: int, shapes: tuple[str, ...],
         threads: int, runs: int, warmup: int, margin: float, cache_dir: Path | None, no_cache: bool,
         trial_timeout: str, trial_memory_mb: float | None, keep_models: str, report_path: Path | None,
         as_json: bool) -> None:
    """Search the registered passes for the best model of MODEL within a fidelity budget.

    Every trial optimizes MODEL with one configuration (the presets first, then
    refinements), measures its error against MODEL on --data, its size and its latency
    (interleaved with MODEL, as `onnxopt bench` does). The best configuration within the
    budget is written to --output; the Pareto front is printed.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from onnxopt.tune import tune as run_tune

    command = "onnxopt " + " ".join(shlex.quote(arg) for arg in sys.argv[1:])
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=stderr, transient=True, disable=as_json or not stderr.is_terminal) as bar:
        task = bar.add_task("starting", total=trials)

        def on_event(event: str, payload: dict[str, Any]) -> None:
            if event == "trial":
                bar.update(task, completed=payload["done"], description=_best_text(payload["best"], objective))

        result = run_tune(model, output, data=data, calib=calib, metric=metric, max_error=max_error,
                          min_metric=min_metric, objective=objective, max_latency_ms=max_latency_ms,
                          max_size_mb=max_size_mb, margin=margin, trials=trials,
                          time_budget_s=parse_duration(time_budget), executor=executor, seed=seed, target=target,
                          passes=_split(search_passes), exclude_passes=_split(exclude_passes) or (),
                          overrides=overrides, batch_size=batch_size, shapes=parse_shapes(shapes), threads=threads,
                          warmup_runs=warmup, timed_runs=runs, cache_dir=cache_dir, use_cache=not no_cache,
                          trial_timeout_s=parse_duration(trial_timeout), trial_memory_mb=trial_memory_mb,
                          keep_models=keep_models, report=report_path, command=command, progress=on_event)
    document = result.document
    if as_json:
        click.echo(to_json(document), nl=False)
    else:
        console = Console() if sys.stdout.isatty() else Console(width=200)
        console.print(render_front(document))
        cost = document["cost"]
        for note in result.notes:
            console.print(note)
        console.print(f"search: {cost['wall_s']:.0f} s, {cost['trials_run']} trials run, "
                      f"{cost['trials_cached']} cached, stopped by {cost['stopped']}")
        if result.best is not None:
            console.print(f"wrote {output} ({result.best['key']})")
        if report_path is not None:
            console.print(f"wrote {report_path}")
    if result.best is None:
        click.echo(f"error: no configuration met the budget in {len(result.trials)} trials", err=True)
        raise click.exceptions.Exit(EXIT_VERIFICATION_FAILED)
