"""The search space, built from the pass registry's ``search_space()`` hooks.

A configuration is the tuned part of a pipeline: an ordered tuple of steps (a pass and the
options that differ from its defaults), always run after the exact cleanup passes of the
``default`` preset. Configurations are canonical — options at their default, or whose
``conditions`` do not hold, are dropped, and steps are ordered by stage — so two spellings
of one pipeline are one configuration, one cache key and one trial.

Passes are grouped: a configuration holds at most one pass of each group (``fp16``,
``qdq`` and ``weight-only`` are alternatives in ``precision``), and groups compose in stage
order (pruning, then fast convolution, then precision, then embedding tables). The
user's error budget reaches passes that declare an ``ErrorBudget`` as candidate values of
that option (fractions of the budget), with the metric option linked to the user's metric.

The presets become configurations too: they are the search's starting points.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from onnxopt.errors import BadInputError
from onnxopt.pass_api import ErrorBudget, Pass, SearchSpec, coerce_option
from onnxopt.pipeline import PipelineStep, parse_step

# Past this many configurations the grid is counted, not enumerated.
ENUMERATION_LIMIT = 200_000


def format_value(value: Any) -> str:
    """The canonical text of an option value, as ``--passes`` and the cache key spell it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (tuple, list)):
        return ",".join(format_value(item) for item in value)
    return str(value)


@dataclass(frozen=True, order=True)
class Step:
    """One tuned pass and its non-default options (sorted by name, typed values)."""

    name: str
    options: tuple[tuple[str, Any], ...] = ()

    def text(self) -> str:
        """``name:key=value:...`` (the ``--passes`` spelling)."""
        return ":".join([self.name, *(f"{key}={format_value(value)}" for key, value in self.options)])

    def option_dict(self) -> dict[str, Any]:
        return dict(self.options)

    def as_dict(self) -> dict[str, Any]:
        return {"pass": self.name, "options": {key: _jsonable(value) for key, value in self.options}}


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


@dataclass(frozen=True)
class Config:
    """The tuned passes of one trial, in pipeline order; ``key`` names it everywhere."""

    steps: tuple[Step, ...] = ()

    @property
    def key(self) -> str:
        return ",".join(step.text() for step in self.steps) or "cleanup"

    @property
    def passes(self) -> tuple[str, ...]:
        return tuple(step.name for step in self.steps)

    def step(self, name: str) -> Step | None:
        return next((step for step in self.steps if step.name == name), None)

    def as_list(self) -> list[dict[str, Any]]:
        return [step.as_dict() for step in self.steps]


@dataclass(frozen=True)
class BudgetLink:
    """How the user's fidelity budget reaches passes that take one (``ErrorBudget``)."""

    metric: str  # cosine | rel_l2 | max_abs | accuracy | python:module:function
    error_budget: float | None  # in the user's metric's error units, when it has them


@dataclass
class PassSpace:
    """One pass's dimensions: candidate values per option, defaults, conditions, fixed options."""

    name: str
    cls: type[Pass]
    spec: SearchSpec
    group: str
    values: dict[str, tuple[Any, ...]]
    defaults: dict[str, Any]
    fixed: dict[str, Any] = field(default_factory=dict)
    linked: dict[str, Any] = field(default_factory=dict)  # set whenever the budget option is non-zero

    @property
    def stage(self) -> int:
        return self.spec.stage

    def active(self, option: str, values: Mapping[str, Any], seen: frozenset[str] = frozenset()) -> bool:
        """Whether ``option`` matters given the other options' values (conditions, transitively)."""
        condition = self.spec.conditions.get(option)
        if not condition:
            return True
        if option in seen:
            return False
        for other, allowed in condition.items():
            if values.get(other, self.defaults.get(other)) not in allowed:
                return False
            if not self.active(other, values, seen | {option}):
                return False
        return True

    def canonical(self, options: Mapping[str, Any]) -> Step:
        values = {**self.defaults, **options, **self.fixed}
        budget = self.spec.error_budget
        if budget is not None and self.linked:
            if values.get(budget.option):
                values.update(self.linked)
            else:
                for key in self.linked:
                    values[key] = self.defaults[key]
        kept = []
        for key in sorted(values):
            value = values[key]
            if key in self.defaults and value == self.defaults[key]:
                continue
            if key in self.values and not self.active(key, values):
                continue
            kept.append((key, value))
        return Step(self.name, tuple(kept))

    def enumerate(self) -> list[Step]:
        """Every distinct canonical step of this pass."""
        names = list(self.values)
        steps = {self.canonical(dict(zip(names, combo, strict=True)))
                 for combo in itertools.product(*(self.values[name] for name in names))}
        return sorted(steps)


def _coerce(cls: type[Pass], key: str, value: Any) -> Any:
    fields = {spec.name: spec for spec in cls.option_fields()}
    if key not in fields:
        raise BadInputError(f"pass {cls.name!r} has no option {key!r} (search space or override)")
    return coerce_option(fields[key], value, cls.name)


def _budget_values(budget: ErrorBudget, link: BudgetLink, cls: type[Pass]) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Candidate values of the budget option (0 first: no budget) and the options linked to them."""
    default = getattr(cls.Options(), budget.option)
    linked: dict[str, Any] = {}
    if link.metric.startswith("python:") and budget.user_metric_option and link.error_budget:
        linked[budget.user_metric_option] = link.metric.removeprefix("python:")
        values = [link.error_budget * fraction for fraction in budget.fractions]
    elif link.metric in budget.metrics and link.error_budget:
        if budget.metric_option:  # a pass measuring one metric only declares it in ``metrics``, no option
            linked[budget.metric_option] = link.metric
        values = [link.error_budget * fraction for fraction in budget.fractions]
    else:
        values = list(budget.proxy_values)
    return tuple(dict.fromkeys([default, *(float(f"{value:.6g}") for value in values)])), linked


class SearchSpace:
    """Every configuration the tuner may try, from the registry's hooks; presets mapped into it."""

    def __init__(self, passes: list[PassSpace], base: list[str],
                 cleanups: Callable[[Iterable[str]], list[str]] | None = None) -> None:
        self.passes = {space.name: space for space in sorted(passes, key=lambda space: (space.stage, space.name))}
        self.base = list(base)
        # The cleanups a configuration runs first, from the names of its passes (``base`` when not given):
        # the registry's ``cleanup_before``, so that trials run what the presets run.
        self._cleanups = cleanups
        self.groups: dict[str, list[PassSpace]] = {}
        for space in sorted(self.passes.values(), key=lambda space: (space.stage, space.group, space.name)):
            self.groups.setdefault(space.group, []).append(space)
        self._choices = {group: [None, *(step for space in members for step in space.enumerate())]
                         for group, members in self.groups.items()}

    @classmethod
    def from_registry(cls, registry: Mapping[str, type[Pass]], base: list[str], link: BudgetLink,
                      include: Iterable[str] | None = None, exclude: Iterable[str] = (),
                      overrides: Mapping[str, Mapping[str, Any]] | None = None,
                      cleanups: Callable[[Iterable[str]], list[str]] | None = None) -> SearchSpace:
        """Build the space from each pass's ``search_space()``; ``include`` restricts it to some passes.

        ``overrides`` ({pass: {option: value}}) fix options: they leave the search and are
        applied to every configuration holding that pass. Passes of the ``base`` pipeline
        (the exact cleanups) are left out unless they declare options.
        """
        include = list(include) if include is not None else None
        for name in [*(include or []), *exclude, *(overrides or {})]:
            if name not in registry:
                raise BadInputError(f"unknown pass {name!r} (known: {', '.join(registry)})")
        base_names = {parse_step(item).name for item in base}
        spaces = []
        for name, pass_cls in registry.items():
            if (include is not None and name not in include) or name in exclude:
                continue
            spec = pass_cls.search_space()
            if spec is None or (name in base_names and not spec.options and include is None):
                continue
            spaces.append(_pass_space(pass_cls, spec, link, (overrides or {}).get(name, {})))
        if not spaces:
            raise BadInputError("the search space is empty: no registered pass declares a search space")
        return cls(spaces, base, cleanups)

    # --- configurations -------------------------------------------------------------------

    def canonical(self, steps: Iterable[Step | tuple[str, Mapping[str, Any]]]) -> Config:
        """A canonical configuration from (pass, options) pairs; BadInputError for passes outside the space."""
        chosen: dict[str, Step] = {}
        for item in steps:
            name, options = (item.name, item.option_dict()) if isinstance(item, Step) else item
            if name not in self.passes:
                raise BadInputError(f"pass {name!r} is not in the search space")
            space = self.passes[name]
            typed = {key: _coerce(space.cls, key, value) for key, value in options.items()}
            if any(self.passes[other].group == space.group for other in chosen):
                raise BadInputError(f"passes of group {space.group!r} are alternatives; give one")
            chosen[name] = space.canonical(typed)
        ordered = sorted(chosen.values(), key=lambda step: (self.passes[step.name].stage, step.name))
        return Config(tuple(ordered))

    def from_pipeline(self, items: list[str]) -> Config | None:
        """The configuration of a pipeline written like a preset (None if it is not one of this space).

        The pipeline must start with the base (cleanup) passes; the rest must be passes of
        the space. Presets that pin another ``target`` are not configurations of this search.
        """
        steps = [parse_step(item) for item in items]
        base = [parse_step(item) for item in self.base_for(step.name for step in steps)]
        if [(s.name, s.options) for s in steps[: len(base)]] != [(s.name, s.options) for s in base]:
            return None
        tuned: list[PipelineStep] = steps[len(base):]
        if any(step.name not in self.passes or "target" in step.options for step in tuned):
            return None
        try:
            return self.canonical((step.name, step.options) for step in tuned)
        except BadInputError:
            return None

    def valid(self, config: Config) -> bool:
        names = set(config.passes)
        return all(not self.passes[name].spec.requires or names & set(self.passes[name].spec.requires)
                   for name in names)

    def pipeline(self, config: Config) -> list[PipelineStep]:
        """The whole pipeline of a configuration: the base cleanups, then its steps."""
        return [*(parse_step(item) for item in self.base_for(config.passes)),
                *(PipelineStep(step.name, dict(step.options)) for step in config.steps)]

    def base_for(self, pass_names: Iterable[str]) -> list[str]:
        """The cleanups run before a configuration of these passes."""
        return list(self._cleanups(pass_names)) if self._cleanups is not None else list(self.base)

    def _choice(self, config: Config, group: str) -> Step | None:
        members = {space.name for space in self.groups[group]}
        return next((step for step in config.steps if step.name in members), None)

    def _with(self, config: Config, group: str, step: Step | None) -> Config:
        steps = [s for s in config.steps if self.passes[s.name].group != group]
        if step is not None:
            steps.append(step)
        return self.canonical(steps)

    # --- size of the space ----------------------------------------------------------------

    def grid_size(self) -> int:
        """How many distinct configurations exhaustive search would run (requirements honoured)."""
        total = math.prod(len(choices) for choices in self._choices.values())
        if total > ENUMERATION_LIMIT or not any(space.spec.requires for space in self.passes.values()):
            return total
        return sum(1 for config in self.grid() if self.valid(config))

    def grid(self) -> Iterator[Config]:
        for combination in itertools.product(*self._choices.values()):
            yield self.canonical(step for step in combination if step is not None)

    # --- moves ----------------------------------------------------------------------------

    def neighbors(self, config: Config) -> list[Config]:
        """Configurations one move away, most promising first.

        Moves, group by group in stage order: change one option of the chosen pass to
        another candidate value (options in declared order, values in declared order);
        switch to another pass of the group at its defaults; drop the group's pass; add a
        pass to an empty group.
        """
        found: dict[str, Config] = {}

        def add(candidate: Config) -> None:
            if candidate.key != config.key and candidate.key not in found and self.valid(candidate):
                found[candidate.key] = candidate

        for group, members in self.groups.items():
            current = self._choice(config, group)
            if current is not None:
                space = self.passes[current.name]
                values = {**space.defaults, **current.option_dict()}
                for option, candidates in space.values.items():
                    if not space.active(option, values):
                        continue
                    for value in candidates:
                        if value != values.get(option):
                            add(self._with(config, group, space.canonical({**current.option_dict(), option: value})))
            for space in members:
                if current is None or space.name != current.name:
                    add(self._with(config, group, space.canonical({})))
            if current is not None:
                add(self._with(config, group, None))
        return list(found.values())

    def mutate(self, config: Config, rng: np.random.Generator, moves: int = 1) -> Config:
        """``moves`` random neighbourhood moves."""
        for _ in range(moves):
            options = self.neighbors(config)
            if not options:
                break
            config = options[int(rng.integers(len(options)))]
        return config

    def crossover(self, first: Config, second: Config, rng: np.random.Generator) -> Config:
        """Each group's choice from one parent or the other."""
        steps = []
        for group in self.groups:
            pick = self._choice(first if rng.random() < 0.5 else second, group)
            if pick is not None:
                steps.append(pick)
        return self.canonical(steps)

    def random(self, rng: np.random.Generator) -> Config:
        """A configuration drawn uniformly per group from the group's choices."""
        steps = []
        for choices in self._choices.values():
            pick = choices[int(rng.integers(len(choices)))]
            if pick is not None:
                steps.append(pick)
        return self.canonical(steps)

    def budget_children(self, config: Config) -> list[Config]:
        """The configuration with a pass's error-budget option at its next tighter candidate.

        This is the sensitivity-guided move: a pass given ``max_error`` measures which of its
        layers hurt the outputs most and keeps them in float until the budget holds. No
        budget yet: the loosest candidate (the user's budget itself); a budget that still
        missed on the evaluation DATA (the pass measured on the calibration DATA): the next
        tighter one. One child per pass, so a miss costs one trial at a time.
        """
        children = []
        for step in config.steps:
            space = self.passes[step.name]
            budget = space.spec.error_budget
            if budget is None:
                continue
            current = step.option_dict().get(budget.option) or math.inf
            tighter = [value for value in space.values.get(budget.option, ()) if value and value < current]
            if tighter:
                changed = space.canonical({**step.option_dict(), budget.option: max(tighter)})
                child = self._with(config, space.group, changed)
                if child.key != config.key:
                    children.append(child)
        return children

    def features(self, config: Config) -> list[str]:
        """Binary features of a configuration for the surrogate model: passes and non-default options."""
        names = []
        for step in config.steps:
            names.append(step.name)
            names.extend(f"{step.name}.{key}={format_value(value)}" for key, value in step.options)
        return names

    def describe(self) -> dict[str, Any]:
        """The space as JSON: per pass its group, stage, candidate values, conditions and fixed options."""
        return {
            "base": self.base,
            "passes": {
                name: {
                    "group": space.group,
                    "stage": space.stage,
                    "options": {key: [_jsonable(v) for v in values] for key, values in space.values.items()},
                    "conditions": {key: {k: list(v) for k, v in cond.items()}
                                   for key, cond in space.spec.conditions.items()},
                    "fixed": {key: _jsonable(value) for key, value in space.fixed.items()},
                    "linked": space.linked,
                }
                for name, space in self.passes.items()
            },
            "grid_size": self.grid_size(),
        }


def _pass_space(cls: type[Pass], spec: SearchSpec, link: BudgetLink, fixed: Mapping[str, Any]) -> PassSpace:
    defaults = {f.name: getattr(cls.Options(), f.name) for f in cls.option_fields()}
    values: dict[str, tuple[Any, ...]] = {}
    for option, candidates in spec.options.items():
        typed = tuple(dict.fromkeys(_coerce(cls, option, value) for value in candidates))
        if not typed:
            raise BadInputError(f"pass {cls.name!r}: search option {option!r} has no candidate values")
        values[option] = typed
    linked: dict[str, Any] = {}
    if spec.error_budget is not None:
        _coerce(cls, spec.error_budget.option, 0.0)
        budget_values, linked = _budget_values(spec.error_budget, link, cls)
        if len(budget_values) > 1:
            values[spec.error_budget.option] = budget_values
    typed_fixed = {key: _coerce(cls, key, value) for key, value in fixed.items()}
    for key in typed_fixed:
        values.pop(key, None)
    return PassSpace(name=cls.name, cls=cls, spec=spec, group=spec.group or cls.name, values=values,
                     defaults=defaults, fixed=typed_fixed, linked=linked)
