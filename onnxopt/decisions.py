"""Per-node decisions in the one form every report reads: ``stats["decisions"]``.

A pass that decides node by node (quantize or not, keep fp32, prune, pick a kernel) says
so in its ``PassResult.stats["decisions"]``: a list of flat, JSON-able dicts, one per node
(or weight), each with ``node``, ``op``, ``decision`` and ``reason``, plus any numeric
fields (``time_ratio``, ``error``, ``kept_units``, candidate timings in ``*_ms``…). The
report renders any pass's list as a sortable, filterable table with charts, without
knowing the pass; plain numbers and strings elsewhere in ``stats`` stay counters.

Passes may build the list by hand; these helpers suit passes whose decisions change as
they go (a node first chosen, then dropped for accuracy): the rows live in ``stats`` from
the start, and later steps update them in place.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

DECISIONS = "decisions"


def decision(node: str, op: str, decided: str, reason: str = "", **fields: Any) -> dict[str, Any]:
    """One row: ``{"node", "op", "decision", "reason", **fields}`` (fields must be JSON scalars)."""
    return {"node": node, "op": op, "decision": decided, "reason": reason, **fields}


def start(stats: dict[str, Any], nodes: Iterable[tuple[str, str]], decided: str, reason: str = "") -> None:
    """Put one row per ``(node, op)`` into ``stats["decisions"]``, all with the same first decision."""
    stats[DECISIONS] = [decision(name, op, decided, reason) for name, op in nodes]


def _rows(stats: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["node"]: row for row in stats.get(DECISIONS) or []}


def mark(stats: dict[str, Any], nodes: Iterable[str], decided: str, reason: str,
         only: str | None = None) -> None:
    """Change the decision and reason of ``nodes`` (those whose decision is ``only``, when given)."""
    rows = _rows(stats)
    for name in nodes:
        row = rows.get(name)
        if row is not None and (only is None or row["decision"] == only):
            row["decision"], row["reason"] = decided, reason


def set_field(stats: dict[str, Any], field: str, values: Mapping[str, Any]) -> None:
    """Set a numeric field on the rows of the nodes in ``values``."""
    rows = _rows(stats)
    for name, value in values.items():
        if name in rows:
            rows[name][field] = value
