"""The ``onnxopt`` command line: one click group, one module per command.

A thin layer over the library: each command parses options, shows progress and tables
with rich, and maps errors to exit codes through ``onnxopt.cli.errors`` (0 ok,
1 verification failed, 2 bad input or usage). A user never sees a traceback unless they
ask for one with ``--debug``.
"""

from __future__ import annotations

import logging

import click
from rich.logging import RichHandler

from onnxopt.cli.batch import batch
from onnxopt.cli.bench import bench
from onnxopt.cli.check import check
from onnxopt.cli.compare import compare
from onnxopt.cli.console import stderr
from onnxopt.cli.convert import convert
from onnxopt.cli.export import export
from onnxopt.cli.inspect import inspect
from onnxopt.cli.optimize import optimize
from onnxopt.cli.passes import list_passes
from onnxopt.cli.report import report
from onnxopt.cli.tune import tune


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


for _command in (optimize, inspect, compare, list_passes, check, bench, report, convert, export, tune, batch):
    cli.add_command(_command)


def main() -> None:
    """Console-script entry point; click usage errors exit 2 by click's own convention."""
    cli(prog_name="onnxopt")
