"""Turn onnxopt's errors into one line on stderr and an exit code, for any click command.

The CLI promises: 0 ok, 1 verification failed, 2 bad input or usage — and never a
traceback for a problem the user can fix (``--debug`` on the main group shows one for
internal errors). Every command, in the main module or its own, uses ``handle_errors``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import click

from onnxopt.errors import BadInputError, OnnxoptError

EXIT_OK = 0
EXIT_VERIFICATION_FAILED = 1
EXIT_BAD_INPUT = 2

F = TypeVar("F", bound=Callable[..., Any])


def exit_code_for(error: OnnxoptError) -> int:
    """The exit code the CLI promises for an onnxopt error."""
    return EXIT_BAD_INPUT if isinstance(error, BadInputError) else EXIT_VERIFICATION_FAILED


def one_line(error: BaseException | str) -> str:
    """The first non-empty line of an error's message."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def _debug_requested() -> bool:
    context = click.get_current_context(silent=True)
    return bool(context is not None and context.find_root().params.get("debug"))


def handle_errors(command: F) -> F:
    """Decorate a click callback so errors become ``error: <msg>`` on stderr and their exit code."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except OnnxoptError as error:
            click.echo(f"error: {one_line(error)}", err=True)
            raise click.exceptions.Exit(exit_code_for(error)) from None
        except MemoryError:
            click.echo("error: out of memory", err=True)
            raise click.exceptions.Exit(EXIT_VERIFICATION_FAILED) from None
        except (click.exceptions.Exit, click.ClickException, SystemExit, KeyboardInterrupt):
            raise
        except Exception as error:
            if _debug_requested():
                raise
            click.echo(f"error: internal error: {type(error).__name__}: {one_line(error)} "
                       "(rerun with --debug for a traceback)", err=True)
            raise click.exceptions.Exit(EXIT_VERIFICATION_FAILED) from None

    return wrapper  # type: ignore[return-value]

