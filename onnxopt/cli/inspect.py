"""``onnxopt inspect IN``: ops, parameters by dtype, duplicate weights, opsets, I/O, external data."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.table import Table

from onnxopt.cli.console import stdout
from onnxopt.cli.errors import handle_errors


@click.command("inspect")
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
