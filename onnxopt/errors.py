"""Exceptions that the CLI maps to exit codes.

The library raises these (never exits); the CLI turns them into one line and a code:
``BadInputError`` -> 2, ``VerificationError`` -> 1.
"""

from __future__ import annotations


class OnnxoptError(Exception):
    """Base class of every error onnxopt reports to a user."""


class BadInputError(OnnxoptError):
    """The model, data or options given by the user cannot be used (exit code 2)."""


class RuntimeLoadError(BadInputError):
    """onnxruntime refused to load a model.

    Bad input when it is the user's model; a pass bug when the model came out of a pass
    (the pass manager tells the two apart and rolls the pass back in the second case).
    """


class ModelDefect(Exception):
    """A check found a model malformed; the caller decides whose fault that is.

    Raised by the checks shared by up-front validation and the checks after each pass
    (``onnxopt.validate``, ``onnxopt.structure``): in a user's file it becomes a
    ``BadInputError``, after a pass it means the pass broke the model and is rolled back.
    Not an ``OnnxoptError`` on purpose: it must always be translated, never shown as is.
    """


class VerificationError(OnnxoptError):
    """An optimized model does not meet its numerical contract (exit code 1)."""


class PassError(OnnxoptError):
    """A pass raised an unexpected exception; carries the pass name and its predecessors."""

    def __init__(self, pass_name: str, previous: list[str], cause: BaseException) -> None:
        ran = ", ".join(previous) if previous else "none"
        super().__init__(f"pass {pass_name!r} failed: {type(cause).__name__}: {cause} (passes run before it: {ran})")
        self.pass_name = pass_name
        self.previous = previous
        self.cause = cause
