"""``onnxopt check [--target T] MODEL``: lint a quantized model against a target's rules and this CPU.

Prints one line per violation and exits 1 if there is any, 0 if none, 2 when the model
cannot be read. The target defaults to the one the model was optimized for (its
``onnxopt.target`` metadata), else ``tensorrt``. The model's CPU assumptions are checked
against the host, or against ``--cpu-flags`` (what-if: a deployment fleet's CPU). For
TensorRT it also reports, when any weight does, which weights satisfy 2:4 structured
sparsity along their reduction axis (what its sparse tactics need) — information, never a
violation. A standalone click command; the main ``onnxopt`` group attaches it.
"""

from __future__ import annotations

from pathlib import Path

import click

from onnxopt.cli.errors import EXIT_BAD_INPUT, one_line
from onnxopt.cpu_features import cpu_from_flags, host_cpu
from onnxopt.errors import BadInputError
from onnxopt.model_io import load
from onnxopt.target_rules import TARGETS, check_model, structured_sparsity
from onnxopt.targets import TARGET_KEY

EXIT_VIOLATIONS = 1
DEFAULT_TARGET = "tensorrt"


@click.command("check")
@click.option("--target", type=click.Choice(TARGETS), default=None,
              help="Runtime whose rules the model must follow [default: the model's own target, else tensorrt].")
@click.option("--cpu-flags", default=None,
              help="Check against a CPU with these flags (e.g. avx2,fma, or aarch64) instead of this host.")
@click.argument("model", type=click.Path(path_type=Path))
def check(target: str | None, cpu_flags: str | None, model: Path) -> None:
    """Lint MODEL against TARGET's rules and the CPU's int8 kernels; exit 1 on any violation."""
    try:
        loaded = load(model)
        target = target or loaded.metadata_props.get(TARGET_KEY) or DEFAULT_TARGET
        if target not in TARGETS:
            raise BadInputError(f"the model names an unknown target {target!r}; give --target")
        cpu = host_cpu()
        if cpu_flags is not None:
            arch = "aarch64" if {"aarch64", "arm64"} & set(cpu_flags.replace(",", " ").split()) else "x86_64"
            cpu = cpu_from_flags(cpu_flags, arch)
        violations = check_model(loaded, target, cpu)
        sparsity = structured_sparsity(loaded) if target == "tensorrt" else []
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
    if len(violations) > 1:
        click.echo(f"{model}: {len(violations)} violation(s) of the {target} rules", err=True)
    if violations:
        raise click.exceptions.Exit(EXIT_VIOLATIONS)
    click.echo(f"{model}: no violation of the {target} rules on {cpu.describe()}")
