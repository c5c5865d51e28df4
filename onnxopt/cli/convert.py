"""``onnxopt convert SRC -o OUT``: a PyTorch, TensorFlow/Keras or scikit-learn model to checked ONNX.

The options that describe how to load and convert a source are shared with ``onnxopt
optimize``, which accepts the same sources (``conversion_options`` and
``options_from_cli``); the work is in ``onnxopt.convert``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from onnxopt.cli.console import parse_shapes, stdout
from onnxopt.cli.errors import handle_errors


def conversion_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The options of loading and converting a framework model (for convert and optimize)."""
    decorators = [
        click.option("--input", "input_specs", multiple=True, metavar="NAME:DTYPE:SHAPE",
                     help="Input signature where the source has none, e.g. X:float32:batch,30 (repeatable)."),
        click.option("--opset", "opset", type=int, default=None,
                     help="ONNX opset to convert at (default 18)."),
        click.option("--trust-pickle", is_flag=True,
                     help="Allow loading a pickle/joblib file (unpickling runs code from the file)."),
        click.option("--trust-type", "trusted_types", multiple=True, metavar="TYPE",
                     help="A type a .skops file may instantiate beyond skops' defaults (repeatable)."),
        click.option("--signature", default=None, help="SavedModel signature to convert (default serving_default)."),
        click.option("--max-conversion-error", "rtol", type=float, default=None,
                     help="Largest relative framework-vs-ONNX error accepted on float outputs (default 1e-4)."),
    ]
    for decorator in reversed(decorators):
        command = decorator(command)
    return command


def options_from_cli(input_specs: tuple[str, ...], opset: int | None, trust_pickle: bool,
                     trusted_types: tuple[str, ...], signature: str | None, rtol: float | None,
                     data: Path | None = None, shapes: dict[str, list[int]] | None = None) -> Any:
    """A ConvertOptions from the shared CLI options."""
    from onnxopt.convert import DEFAULT_OPSET, ConvertOptions
    from onnxopt.convert.agreement import DEFAULT_RTOL
    from onnxopt.convert.signature import parse_input_options

    return ConvertOptions(
        inputs=parse_input_options(input_specs),
        opset=opset or DEFAULT_OPSET,
        data=data,
        shapes=shapes or {},
        trust_pickle=trust_pickle,
        trusted_types=list(trusted_types),
        signature=signature,
        rtol=DEFAULT_RTOL if rtol is None else rtol,
    )


def agreement_table(summary: dict[str, Any]) -> Table:
    """Framework-vs-ONNX errors per output."""
    agreement = summary["agreement"]
    table = Table(title=f"{summary['framework']} vs ONNX ({agreement['feeds']} feeds: {agreement['inputs']})",
                  title_justify="left")
    for column in ("output", "max abs", "max rel", "cosine", "mismatched"):
        table.add_column(column, justify="left" if column == "output" else "right")
    for output in agreement["outputs"]:
        mismatched = agreement["mismatched_elements"].get(output["name"])
        table.add_row(output["name"], f"{output['max_abs_error']:.3e}", f"{output['max_rel_error']:.3e}",
                      f"{output['cosine']:.8f}", "—" if mismatched is None else str(mismatched))
    return table


def print_conversion(summary: dict[str, Any]) -> None:
    """The conversion's one-line summary and its agreement table."""
    stdout.print(f"converted {summary['source']} ({summary['framework']}, {summary['converter']}) at opset "
                 f"{summary['opset']}; inputs {', '.join(summary['inputs'])}")
    stdout.print(agreement_table(summary))


@click.command("convert")
@click.argument("source", type=click.Path(path_type=Path))
@click.option("-o", "--output", "output_path", required=True, type=click.Path(path_type=Path),
              help="The .onnx to write.")
@conversion_options
@click.option("--inputs", "data", type=click.Path(path_type=Path),
              help="DATA for the agreement check (.npz or folder); the source's examples and random inputs otherwise.")
@click.option("--shape", "shapes", multiple=True, help="Concrete shape of an input for random feeds: name=d0,d1,...")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@handle_errors
def convert(source: Path, output_path: Path, input_specs: tuple[str, ...], opset: int | None, trust_pickle: bool,
            trusted_types: tuple[str, ...], signature: str | None, rtol: float | None, data: Path | None,
            shapes: tuple[str, ...], as_json: bool) -> None:
    """Convert SOURCE (.pt2, SavedModel folder, .keras, .skops, or pickle with --trust-pickle) to ONNX.

    The ONNX model is run against the framework model on the same inputs before anything
    is written; a disagreement exits 1 and writes nothing.
    """
    from onnxopt.convert import convert as run_convert

    options = options_from_cli(input_specs, opset, trust_pickle, trusted_types, signature, rtol, data,
                               parse_shapes(shapes))
    result = run_convert(source, output_path, options)
    summary = result.as_dict()
    if as_json:
        click.echo(json.dumps(summary, indent=2, default=str))
        return
    print_conversion(summary)
    stdout.print(f"wrote {result.output} ({result.bytes_written:,} bytes)")
