"""The contract every pass implements.

A pass is a class with a stable CLI name, a frozen options dataclass (the single source
of truth for CLI flags, pipeline files and the Python API), a numerical contract, and
``run(model, ctx) -> PassResult``. The pass manager relies on the contract to decide how
to verify a pass: ``exact`` passes must be bit-identical, ``tolerance`` passes stay within
a declared relative error, ``lossy`` passes are judged by a metric and a budget.

``Pass.search_space()`` is how a pass tells ``onnxopt tune`` which of its options are worth
searching and with which candidate values (see ``SearchSpec``); passes added later declare
their own and the tuner picks them up from the registry.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
from collections.abc import Mapping
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


@dataclass(frozen=True)
class ErrorBudget:
    """A pass option that takes an output-error budget, so the tuner can hand the user's budget down.

    The tuner sets ``option`` to ``fraction * budget`` for each of ``fractions`` (0, the
    option's default, stays a candidate: no budget) when the user's metric is one of
    ``metrics`` (the ones the pass can compute), and also sets ``metric_option`` to it if
    the pass has one; a user's ``module:function`` metric goes to ``user_metric_option``.
    A metric the pass cannot compute (accuracy against labels) falls back to
    ``proxy_values``: absolute budgets in the pass's default metric.
    """

    option: str = "max_error"
    metric_option: str = ""
    metrics: tuple[str, ...] = ()
    user_metric_option: str = ""
    fractions: tuple[float, ...] = (1.0, 0.5)
    proxy_values: tuple[float, ...] = ()


@dataclass(frozen=True)
class SearchSpec:
    """What ``onnxopt tune`` may try with a pass: the search-space hook's answer.

    ``options``: option name -> candidate values, the most promising first (the first
    value the default where it is one; the tuner's neighbourhood moves try them in order).
    ``conditions``: option -> {other option: values}; the option is searched only when the
    other option holds one of those values, and stays at its default otherwise (so
    ``method`` of qdq is not varied when ``mode=dynamic``, and equal configurations are one).
    ``group``: passes sharing a group are alternatives, a configuration holds at most one of
    them (``fp16``, ``qdq`` and ``weight-only`` share ``precision``); empty means a group of
    the pass's own (on or off). ``stage``: pipeline position among tuned passes, lower runs
    first (suggested: 20 structure — pruning, sharing; 40 algorithms — fast convolution; 60
    precision; 70 storage — embedding tables). ``requires``: the pass is tried only in
    configurations that hold one of these passes. ``error_budget``: see ``ErrorBudget``.
    """

    options: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)
    conditions: Mapping[str, Mapping[str, tuple[Any, ...]]] = field(default_factory=dict)
    group: str = ""
    stage: int = 50
    requires: tuple[str, ...] = ()
    error_budget: ErrorBudget | None = None


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
    cpu: str = "any"  # ort-cpu only: "any" CPU, or "vnni" (see onnxopt.targets)
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
    def search_space(cls) -> SearchSpec | None:
        """The options ``onnxopt tune`` should search, or None to keep the pass out of tuning.

        The default reads ``metadata={"search": (values...)}`` on the options dataclass's
        fields, so a pass can declare its space where its options are declared; a lossy or
        tolerance pass that declares nothing is still tried on and off with its defaults,
        and an exact pass that declares nothing is left out (the cleanup passes always run).
        Override it for groups, stages, conditions or an error budget.
        """
        options = {spec.name: tuple(spec.metadata["search"]) for spec in cls.option_fields()
                   if "search" in spec.metadata}
        if not options and cls.contract is Contract.EXACT:
            return None
        return SearchSpec(options=options)

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


def check_choice(pass_name: str, option: str, value: str, choices: tuple[str, ...] | list[str]) -> None:
    """A one-line BadInputError when an option's value is not one of its choices (which it names)."""
    if value not in choices:
        raise BadInputError(f"{pass_name}: {option} {value!r} unknown (choose from {', '.join(choices)})")


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
