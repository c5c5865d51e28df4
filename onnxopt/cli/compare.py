"""``onnxopt compare A B``: run two models on the same inputs and compare their outputs."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.table import Table

from onnxopt.cli.console import parse_shapes, stdout
from onnxopt.cli.errors import handle_errors
from onnxopt.errors import VerificationError


@click.command("compare")
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

    comparison, info = compare_models(model_a, model_b, inputs, batch_size, parse_shapes(shapes))
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
