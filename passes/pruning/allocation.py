"""``scope=global``: how many units each group loses, by what their removal costs the model outputs.

A layer's own output error says little about what it does to the model: an early layer's
small error is amplified by every layer after it (on MiniLM, 30 % of the first FFN costs
as much embedding cosine as 60 % of the third). So each group is pruned *alone*, at a grid
of ratios, on a copy of the model (units chosen as the pass would, removed without refit),
and the output error against the original is measured on the budget batches. Without
refit because the budget batches are calibration data: a refit fitted on them would
flatter itself there and steer units to the layers where it overfits most. The units then go
where they are cheapest: the increment with the smallest error per removed unit is taken
first, over all groups, until ``ratio`` of all units is removed (the last increment is
taken partially; costs are made non-decreasing in the ratio; errors are assumed to add
up, which they roughly do for small errors).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np

from onnxopt.error_budget import error_function, run_outputs
from onnxopt.model_io import Model
from onnxopt.passes.pruning.coupling import Group
from onnxopt.passes.pruning.decide import ratio_count, units_to_remove

if TYPE_CHECKING:
    from onnxopt.passes.pruning.structured import StructuredPruning

logger = logging.getLogger(__name__)

# Shares of a group's units tried when measuring its cost curve.
GRID = (0.2, 0.4, 0.6, 0.8)


def cost_curve(pruner: StructuredPruning, snapshot: Model, index: int, group: Group,
               feeds: list[dict[str, np.ndarray]], references, error_of) -> list[tuple[int, float]]:
    """``(units removed, output error)`` of pruning this group alone, at each grid ratio."""
    problems = pruner.group_problems(snapshot, group)
    counts = sorted({units_to_remove(group.units, ratio_count(group.units, share), pruner.options.round_to)
                     for share in GRID} - {0})
    curve = [(0, 0.0)]
    for count in counts:
        plan = pruner.plan_with(index, group, count, problems, recovery="none")
        candidate = snapshot.copy()
        pruner.apply_plans(candidate, [plan])
        curve.append((count, float(error_of(references, run_outputs(candidate, feeds)))))
    errors = np.maximum.accumulate([error for _, error in curve])
    return [(count, float(error)) for (count, _), error in zip(curve, errors, strict=True)]


def allocate(pruner: StructuredPruning, snapshot: Model, groups: list[tuple[int, Group]],
             feeds: list[dict[str, np.ndarray]]) -> dict[int, int]:
    """Units to remove per group index so that ``ratio`` of all units go, cheapest increments first."""
    options = pruner.options
    error_of = error_function(options.error_metric, options.metric)
    references = run_outputs(snapshot, feeds)
    curves = {index: cost_curve(pruner, snapshot, index, group, feeds, references, error_of)
              for index, group in groups}
    target = ratio_count(sum(group.units for _, group in groups), options.ratio)
    step = {index: 0 for index in curves}
    counts = {index: 0 for index in curves}
    removed = 0
    while removed < target:
        best, best_rate = None, np.inf
        for index, curve in curves.items():
            position = step[index]
            if position + 1 >= len(curve):
                continue
            (count_now, error_now), (count_next, error_next) = curve[position], curve[position + 1]
            rate = (error_next - error_now) / max(count_next - count_now, 1)
            if rate < best_rate:
                best, best_rate = index, rate
        if best is None:
            break
        position = step[best]
        increment = curves[best][position + 1][0] - curves[best][position][0]
        taken = min(increment, target - removed)
        counts[best] += taken
        removed += taken
        step[best] += 1
    pruner.stats["allocation"] = {str(index): {"units": group.units, "removed": counts[index],
                                               "cost_curve": [[count, round(error, 6)] for count, error in
                                                              curves[index]]} for index, group in groups}
    logger.info("global allocation: %s", {index: counts[index] for index in counts})
    return counts
