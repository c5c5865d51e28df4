"""Which passes run, in what order, with which options.

One source of truth for options: each pass's frozen options dataclass. A pipeline comes
from ``--passes a,b`` (each item ``name`` or ``name:key=value:key=value``), a preset name,
or a TOML file (``[[pass]]`` tables with ``name`` and option keys); ``-O pass.key=value``
overrides an option of a pass already in the pipeline.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from onnxopt.errors import BadInputError
from onnxopt.pass_api import Pass

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib


@dataclass
class PipelineStep:
    """One pass of a pipeline and the options given for it."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)


def parse_step(text: str) -> PipelineStep:
    """Parse ``name`` or ``name:key=value:key=value``."""
    name, *pairs = [part.strip() for part in text.strip().split(":")]
    if not name:
        raise BadInputError(f"empty pass name in {text!r}")
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise BadInputError(f"pass option {pair!r} in {text!r} must look like key=value")
        options[key.strip().replace("-", "_")] = value.strip()
    return PipelineStep(name, options)


def steps_from_list(text: str) -> list[PipelineStep]:
    """Parse a comma-separated ``--passes`` value."""
    items = [item for item in text.split(",") if item.strip()]
    if not items:
        raise BadInputError("--passes is empty")
    return [parse_step(item) for item in items]


def steps_from_config(path: Path) -> list[PipelineStep]:
    """Read a TOML pipeline file: a list of ``[[pass]]`` tables with ``name`` and options."""
    if not path.is_file():
        raise BadInputError(f"pipeline file {path} not found")
    try:
        document = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise BadInputError(f"pipeline file {path}: {error}") from None
    tables = document.get("pass")
    if not isinstance(tables, list) or not tables:
        raise BadInputError(f"pipeline file {path}: expected one or more [[pass]] tables")
    steps = []
    for table in tables:
        if not isinstance(table, dict) or "name" not in table:
            raise BadInputError(f"pipeline file {path}: every [[pass]] needs a name")
        options = {key.replace("-", "_"): value for key, value in table.items() if key != "name"}
        steps.append(PipelineStep(str(table["name"]), options))
    return steps


def steps_from_preset(name: str, presets: dict[str, list[str]]) -> list[PipelineStep]:
    """Expand a preset into steps."""
    if name not in presets:
        raise BadInputError(f"unknown preset {name!r} (known: {', '.join(sorted(presets)) or 'none'})")
    return [parse_step(item) for item in presets[name]]


def apply_overrides(steps: list[PipelineStep], overrides: list[str]) -> None:
    """Apply ``pass.key=value`` overrides to the steps naming that pass."""
    for override in overrides:
        target, sep, value = override.partition("=")
        pass_name, dot, key = target.rpartition(".")
        if not sep or not dot or not pass_name or not key:
            raise BadInputError(f"option override {override!r} must look like pass.key=value")
        matched = [step for step in steps if step.name == pass_name]
        if not matched:
            raise BadInputError(f"option override {override!r}: pass {pass_name!r} is not in the pipeline")
        for step in matched:
            step.options[key.replace("-", "_")] = value


def instantiate(steps: list[PipelineStep], registry: dict[str, type[Pass]], defaults: dict[str, Any]) -> list[Pass]:
    """Pass instances for steps; ``defaults`` (e.g. target) fill options a pass has but was not given."""
    instances = []
    for step in steps:
        if step.name not in registry:
            raise BadInputError(f"unknown pass {step.name!r} (known: {', '.join(registry)})")
        cls = registry[step.name]
        fields = {f.name for f in cls.option_fields()}
        options = {key: value for key, value in defaults.items() if key in fields and value is not None}
        options.update(step.options)
        instances.append(cls(cls.make_options(options)))
    return instances
