"""One group's decision: which units go (by importance), how its consumers are refitted, and the record.

The record is one flat, JSON-able dict per group, the shape the report renders:
``node`` (the consumers), ``op``, ``decision`` (pruned / kept / skipped / refitted),
``reason``, ``units``, ``kept_units``, ``removed_units``, ``importance``, ``recovery`` (the
refit cross-validation chose), ``error_before_recovery`` / ``error_after_recovery`` (relative
output error of the consumer on the calibration data) and their held-out (two-fold)
counterparts.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from onnxopt.graph_edit import constant_array
from onnxopt.passes.pruning.coupling import Group
from onnxopt.passes.pruning.recovery import (
    Problem,
    Recovery,
    activation_scores,
    choose_recovery,
    magnitude_scores,
    obs_full_removal,
    obs_removal,
)
from onnxopt.passes.pruning.rewrite import Refit, consumer_weight_kn

logger = logging.getLogger(__name__)

# Unit lists longer than this stay out of the record (the counts say enough).
MAX_LISTED_UNITS = 64


def units_to_remove(units: int, wanted: int, round_to: int) -> int:
    """At most ``wanted`` units go, at least one stays, and the kept count is a multiple of ``round_to``."""
    kept = max(1, units - max(0, wanted))
    kept = min(units, math.ceil(kept / round_to) * round_to)
    return units - kept


def ratio_count(units: int, ratio: float) -> int:
    """``floor(ratio · units)``, robust to ratios like 0.3 that float cannot hold exactly."""
    return math.floor(ratio * units + 1e-9)



@dataclass
class GroupPlan:
    """What was decided for one group: units removed and refitted consumer weights (by consumer position)."""

    index: int
    removed: np.ndarray
    refits: dict[int, Refit] = field(default_factory=dict)
    decision: dict[str, Any] = field(default_factory=dict)


def zero_units(group: Group) -> np.ndarray:
    """Units whose rows are exactly zero in every consumer: removing them changes no output bit."""
    zero = None
    for consumer in group.consumers.values():
        row_zero = ~np.any(consumer_weight_kn(consumer) != 0, axis=1)
        unit_zero = row_zero[consumer.unit_rows(group.units)].all(axis=1)
        zero = unit_zero if zero is None else zero & unit_zero
    return np.flatnonzero(zero) if zero is not None else np.zeros(0, dtype=np.int64)


def magnitude_order(group: Group) -> np.ndarray:
    """Units by ``‖consumer rows‖ · ‖producer columns‖``, smallest first (no data needed)."""
    consumers = list(group.consumers.values())
    rows = [(consumer_weight_kn(consumer), consumer.unit_rows(group.units)) for consumer in consumers]
    producer_norms = []
    for entry in group.slices.values():
        if id(entry.node) in group.producers and entry.slot == 1:
            values = np.asarray(constant_array(entry.node.inputs[1]), dtype=np.float64)
            segments = sorted(entry.segments, key=lambda s: s.offset)
            producer_norms.append(np.array([
                np.linalg.norm(np.take(values, np.concatenate([s.indices(np.array([unit])) for s in segments]),
                                       axis=entry.axis)) for unit in range(group.units)]))
    return np.argsort(magnitude_scores(rows, producer_norms), kind="stable")


def removal_order(group: Group, problems: list[Problem] | None, importance: str, count: int) -> np.ndarray:
    """The first ``count`` units to remove under ``importance`` (magnitude when there are no statistics)."""
    if importance == "error" and problems:
        removed, _ = obs_removal(problems, group.units, count)
        return removed
    if importance == "obs" and problems:
        removed, _ = obs_full_removal(problems, group.units, count)
        return removed
    if importance == "activation" and problems:
        return np.argsort(activation_scores(problems), kind="stable")[:count]
    return magnitude_order(group)[:count]


def base_record(group: Group) -> dict[str, Any]:
    ops = ",".join(sorted({consumer.node.op for consumer in group.consumers.values()}))
    return {"node": group.label(), "op": ops, "units": group.units}


def finish(group: Group, index: int, removed: np.ndarray, importance: str, problems: list[Problem],
           recovery_mode: str, unit_name: str, exact: bool) -> GroupPlan:
    """Refit the consumers for ``removed`` and write the group's record."""
    removed = np.sort(np.asarray(removed, dtype=np.int64))
    decision = base_record(group)
    decision.update(decision="pruned" if removed.size else "kept", importance=importance,
                    kept_units=int(group.units - removed.size), removed_units=int(removed.size))
    if not removed.size:
        decision["reason"] = "no unit qualifies"
        return GroupPlan(index, removed, decision=decision)
    if removed.size <= MAX_LISTED_UNITS:
        decision[f"removed_{unit_name}"] = [int(unit) for unit in removed]
    if exact:
        decision["reason"] = ("removed units contribute exactly zero: no refit, bit-identical up to onnxruntime's "
                              "regrouping of sums past 256-deep reductions")
    mode = "none" if exact else recovery_mode
    recoveries = [choose_recovery(problem, removed, mode) for problem in problems]
    refits = {position: Refit(recovery.theta[:-1], recovery.theta[-1])
              for position, recovery in enumerate(recoveries) if recovery.method != "plain"}
    describe(decision, recoveries)
    decision["recovered"] = bool(refits)
    return GroupPlan(index, removed, refits, decision)


def describe(decision: dict[str, Any], recoveries: list[Recovery]) -> None:
    """Errors before and after recovery (worst consumer), in-sample and held out."""
    if not recoveries:
        return
    decision["recovery"] = ",".join(sorted({recovery.method for recovery in recoveries}))
    decision["error_before_recovery"] = max(recovery.error_before for recovery in recoveries)
    decision["error_after_recovery"] = max(recovery.error_after for recovery in recoveries)
    heldout = [recovery for recovery in recoveries if recovery.heldout_before is not None]
    if heldout:
        decision["heldout_error_before_recovery"] = max(r.heldout_before for r in heldout)
        decision["heldout_error_after_recovery"] = max(r.heldout_after for r in heldout)
