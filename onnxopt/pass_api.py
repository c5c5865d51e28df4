"""The contract every pass implements.

A pass is a class with a stable CLI name, a frozen options dataclass (the single source
of truth for CLI flags, pipeline files and the Python API), a numerical contract, and
``run(model, ctx) -> PassResult``. The pass manager relies on the contract to decide how
to verify a pass: ``exact`` passes must be bit-identical, ``tolerance`` passes stay within
a declared relative error, ``lossy`` passes are judged by a metric and a budget.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
from dataclasses import dataclass, field
from typing import Any, ClassVar

from onnxopt.errors import BadInputError
from onnxopt.model_io import Model


class Contract(enum.Enum):
    """How closely a pass promises to preserve the model's outputs."""

    EXACT = "exact"
    TOLERANCE = "tolerance"
    LOSSY = "lossy"


@dataclass(frozen=True)
class PassOptions:
    """Base of every pass's options; a pass without options uses it as is."""


@dataclass
class PassResult:
    """What a pass reports: whether it changed the model, and counters for the report."""

    modified: bool
    stats: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass
class PassContext:
    """Shared state handed to passes: verification/calibration data, the target, the original model.

    ``original`` is the model as the pass manager received it, before any pass ran (a
    structural copy; weights are shared, never mutated). Lossy passes that recover
    accuracy from a teacher (pruning) match their outputs to it rather than to the
    already-degraded model an earlier lossy pass left; None outside a pass manager.
    """

    target: str = "ort-cpu"
    data: Any = None  # onnxopt.data.Feeds provider, when the user gave DATA
    shapes: dict[str, list[int]] = field(default_factory=dict)
    original: Model | None = None
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("onnxopt.pass"))


class Pass:
    """Base class: subclasses set ``name``, ``contract``, ``Options`` and implement ``run``.

    ``tolerance_rel`` is the relative error a TOLERANCE pass declares; ``cleanup`` marks
    passes that the manager runs to a fixed point; ``walks_subgraphs`` and
    ``walks_functions`` declare whether the pass rewrites If/Loop/Scan bodies and local
    functions (False means it leaves them untouched on purpose).
    """

    name: ClassVar[str] = ""
    contract: ClassVar[Contract] = Contract.EXACT
    tolerance_rel: ClassVar[float] = 0.0
    cleanup: ClassVar[bool] = True
    walks_subgraphs: ClassVar[bool] = True
    walks_functions: ClassVar[bool] = True
    Options: ClassVar[type[PassOptions]] = PassOptions

    def __init__(self, options: PassOptions | None = None) -> None:
        self.options = options if options is not None else self.Options()

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        raise NotImplementedError

    @classmethod
    def summary(cls) -> str:
        """First line of the docstring, for listings."""
        doc = (cls.__doc__ or "").strip()
        return doc.splitlines()[0] if doc else ""

    @classmethod
    def option_fields(cls) -> list[dataclasses.Field]:
        return list(dataclasses.fields(cls.Options))

    @classmethod
    def make_options(cls, values: dict[str, Any]) -> PassOptions:
        """Build the options dataclass from strings or typed values, with clear errors."""
        known = {f.name: f for f in cls.option_fields()}
        converted: dict[str, Any] = {}
        for key, raw in values.items():
            attr = key.replace("-", "_")
            if attr not in known:
                names = ", ".join(sorted(known)) or "none"
                raise BadInputError(f"pass {cls.name!r} has no option {key!r} (options: {names})")
            converted[attr] = coerce_option(known[attr], raw, cls.name)
        return cls.Options(**converted)


def coerce_option(spec: dataclasses.Field, raw: Any, pass_name: str) -> Any:
    """Turn a CLI/pipeline value into the type the options dataclass declares."""
    kind = spec.type if isinstance(spec.type, str) else getattr(spec.type, "__name__", str(spec.type))
    if not isinstance(raw, str):
        return raw
    try:
        if kind in ("int",):
            return int(raw)
        if kind in ("float",):
            return float(raw)
        if kind in ("bool",):
            lowered = raw.lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if kind.startswith("tuple"):
            return tuple(item for item in raw.split(",") if item)
    except ValueError:
        raise BadInputError(f"option {spec.name!r} of pass {pass_name!r} expects {kind}, got {raw!r}") from None
    return raw
