"""``onnxopt check --target tensorrt MODEL``: lint a Q/DQ model against a target's rules.

Prints one line per violation and exits 1 if there is any, 0 if none, 2 when the model
cannot be read. For TensorRT it also reports, when any weight does, which weights satisfy
2:4 structured sparsity along their reduction axis (what its sparse tactics need) —
information, never a violation.
A standalone click command; the main ``onnxopt`` group attaches it.
"""

from __future__ import annotations

from pathlib import Path

import click

from onnxopt.cli.errors import EXIT_BAD_INPUT, one_line
from onnxopt.errors import BadInputError
from onnxopt.target_rules import TARGETS, check_model, structured_sparsity

EXIT_VIOLATIONS = 1


@click.command("check")
@click.option("--target", type=click.Choice(TARGETS), default="tensorrt", show_default=True,
              help="Runtime whose Q/DQ rules the model must follow.")
@click.argument("model", type=click.Path(path_type=Path))
def check(target: str, model: Path) -> None:
    """Lint MODEL's quantization (Q/DQ) against TARGET's rules; exit 1 on any violation."""
    try:
        violations = check_model(model, target)
        sparsity = structured_sparsity(model) if target == "tensorrt" else []
    except BadInputError as error:
        click.echo(f"error: {one_line(error)}", err=True)
        raise click.exceptions.Exit(EXIT_BAD_INPUT) from None
    for violation in violations:
        click.echo(str(violation))
    satisfying = [entry for entry in sparsity if entry.satisfies]
    if satisfying:  # dense models keep the plain list of violations
        click.echo(f"2:4 structured sparsity (TensorRT sparse tactics): {len(satisfying)} of {len(sparsity)} "
                   "weights satisfy 2:4 along the reduction axis")
        for entry in satisfying:
            click.echo(f"  2:4 {entry}")
    if violations:
        click.echo(f"{model}: {len(violations)} violation(s) of the {target} rules", err=True)
        raise click.exceptions.Exit(EXIT_VIOLATIONS)
    click.echo(f"{model}: no violation of the {target} rules")
