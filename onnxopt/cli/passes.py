"""``onnxopt passes``: every registered pass with its contract, options and search space, and the presets."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import click
from rich.table import Table

from onnxopt.cli.console import stdout
from onnxopt.cli.errors import handle_errors


def _option_rows(cls: Any) -> list[dict[str, Any]]:
    rows = []
    for spec in cls.option_fields():
        default = (
            spec.default
            if spec.default is not dataclasses.MISSING
            else (spec.default_factory() if spec.default_factory is not dataclasses.MISSING else None)
        )  # type: ignore[misc]
        rows.append({"name": spec.name, "type": str(spec.type), "default": default})
    return rows


def _search_entry(cls: Any) -> dict[str, Any] | None:
    """What ``onnxopt tune`` may try with the pass (its ``search_space()`` hook), as JSON."""
    spec = cls.search_space()
    if spec is None:
        return None
    return {"group": spec.group or cls.name, "stage": spec.stage, "requires": list(spec.requires),
            "options": {key: list(values) for key, values in spec.options.items()},
            "conditions": {key: {k: list(v) for k, v in condition.items()}
                           for key, condition in spec.conditions.items()},
            "error_budget": dataclasses.asdict(spec.error_budget) if spec.error_budget else None}


@click.command("passes")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@handle_errors
def list_passes(as_json: bool) -> None:
    """List every pass: its contract, what it walks, its options; and the presets."""
    from onnxopt.passes import PRESETS, all_passes

    entries = []
    for name, cls in all_passes().items():
        entries.append(
            {
                "name": name,
                "contract": cls.contract.value,
                "tolerance_rel": cls.tolerance_rel,
                "cleanup": cls.cleanup,
                "subgraphs": cls.walks_subgraphs,
                "functions": cls.walks_functions,
                "summary": cls.summary(),
                "options": _option_rows(cls),
                "search": _search_entry(cls),
            }
        )
    if as_json:
        click.echo(json.dumps({"passes": entries, "presets": PRESETS}, indent=2, default=str))
        return
    table = Table(title="passes")
    for column in ("pass", "contract", "walks", "options", "what"):
        table.add_column(column, overflow="fold")
    for entry in entries:
        contract = entry["contract"] + (f" {entry['tolerance_rel']:g}" if entry["contract"] == "tolerance" else "")
        walks = "/".join(w for w, on in (("subgraphs", entry["subgraphs"]), ("functions", entry["functions"])) if on)
        options = ", ".join(f"{o['name']}={o['default']}" for o in entry["options"])
        table.add_row(entry["name"], contract, walks or "main graph", options or "-", entry["summary"])
    stdout.print(table)
    presets = Table(title="presets")
    presets.add_column("preset")
    presets.add_column("passes", overflow="fold")
    for name, steps in PRESETS.items():
        presets.add_row(name, ", ".join(steps))
    stdout.print(presets)
