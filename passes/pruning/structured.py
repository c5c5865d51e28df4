"""The shared driver of ``prune-neurons`` and ``prune-heads``: one sweep that prunes and distills.

The sweep walks the linear layers (MatMul/Gemm/Conv) in graph order on the model pruned
*so far*. At the first consumer of a prunable group it streams the statistics of the
group's consumers (student inputs against the teacher's outputs), chooses the units to
remove, refits the consumers and rewrites the group everywhere at once. Every other layer
after the first pruned one is distilled from the teacher (``distill.py``): earlier pruning
has moved its inputs, so it is refitted when that cross-validates better. Errors of early
layers are thus seen, and corrected, by the later ones.

How many units each group loses: ``ratio`` per group, or (``scope=global``) an allocation
by measured cost (``allocation.py``). With ``max_error``, the groups whose pruning costs the
model outputs most are given back until the budget holds (``onnxopt.error_budget``), and
the sweep runs again on the groups that stay. Every group leaves one flat decision record;
the whole-model latency change is measured with interleaved timing.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from onnxopt.data import Feeds, make_feeds
from onnxopt.error_budget import ERROR_METRICS, error_function, run_outputs, sensitivity_fallback
from onnxopt.errors import BadInputError
from onnxopt.input_statistics import padding_mask_input
from onnxopt.model_io import Model, to_proto
from onnxopt.pass_api import PassContext, PassOptions, PassResult, check_choice
from onnxopt.passes.pruning.allocation import allocate
from onnxopt.passes.pruning.candidates import Candidate
from onnxopt.passes.pruning.coupling import Group, Refused, complete_infos, retrace
from onnxopt.passes.pruning.decide import (
    GroupPlan,
    base_record,
    describe,
    finish,
    removal_order,
    zero_units,
)
from onnxopt.passes.pruning.distill import (
    as_consumer,
    distill_layer,
    gather_statistics,
    linear_layers,
    problem_for,
    residual_of,
)
from onnxopt.passes.pruning.latency import record_latency
from onnxopt.passes.pruning.rewrite import NameSource, apply_removal, refits_by_node
from onnxopt.passes.pruning.statistics import TeacherRunner
from onnxopt.runtime_errors import ORT_RUN_ERRORS
from onnxopt.shape_info import infer_tensor_infos

logger = logging.getLogger(__name__)

IMPORTANCES = ("auto", "error", "obs", "activation", "magnitude")
RECOVERIES = ("auto", "scale", "full", "none")
SCOPES = ("layer", "global")
REFIT_SCOPES = ("consumers", "residual", "all")


@dataclass(frozen=True)
class StructuredOptions(PassOptions):
    """Options shared by the structured pruning passes (units in names; tuples comma-separated on the CLI).

    ``ratio``: share of each group's units removed; ``scope=global``: of all units, spread
    over the groups by their measured cost on the model outputs. ``layer_ratios``:
    ``regex=ratio`` overrides matched against a group's node names. ``round_to``: kept
    units rounded up to a multiple (kernels like 8/16). ``importance``: auto (error with
    DATA, else magnitude) | error (output error once the other units are rescaled: optimal
    brain surgeon on per-unit scales) | obs (optimal brain surgeon on the full least-squares
    refit: the units that refit can best do without) | activation (Wanda ``‖x‖·‖W‖``) |
    magnitude. ``reconstruct``: refit against the teacher (false: plain removal, to
    compare). ``recovery``: auto (plain, per-
    unit scale or least squares anchored at the current weights, whichever has the lowest
    two-fold cross-validated error) | scale | full | none. ``refit_scope``: consumers (only
    the layers that read pruned units) | residual (also every later layer that writes into a
    residual stream: the ones that can correct its drift) | all (every later linear layer),
    distilled from the teacher. ``residual_targets``: a layer added to a residual stream also makes up
    for the stream's drift. ``only_zero``: remove only units whose consumer weights are
    exactly zero (exact). ``max_error``: output error budget (``error_metric``/``metric``
    as in qdq) on ``budget_batches`` batches; the costliest groups are given back.
    ``calib_max_batches``: batches of DATA read (0 = all). ``calib_mask_input``: input whose
    zeros mark padding ("auto": an ``attention_mask``; "" = none). ``exclude``: regexes of
    node names whose groups stay. ``measure_latency``: time the result against the input
    (batch 1, ``latency_threads`` threads).
    """

    ratio: float = 0.25
    layer_ratios: tuple[str, ...] = ()
    scope: str = "layer"
    round_to: int = 1
    importance: str = "auto"
    reconstruct: bool = True
    recovery: str = "auto"
    refit_scope: str = "residual"
    residual_targets: bool = True
    only_zero: bool = False
    max_error: float = 0.0
    error_metric: str = "rel_l2"
    metric: str = ""
    budget_batches: int = 4
    calib_max_batches: int = 0
    calib_mask_input: str = "auto"
    exclude: tuple[str, ...] = ()
    measure_latency: bool = True
    latency_threads: int = 1


def validate(options: StructuredOptions, name: str) -> None:
    """One-line BadInputErrors for options that cannot work."""
    if not 0.0 <= options.ratio < 1.0:
        raise BadInputError(f"{name}: ratio must be in [0, 1)")
    check_choice(name, "scope", options.scope, SCOPES)
    check_choice(name, "importance", options.importance, IMPORTANCES)
    check_choice(name, "recovery", options.recovery, RECOVERIES)
    check_choice(name, "refit_scope", options.refit_scope, REFIT_SCOPES)
    check_choice(name, "error_metric", options.error_metric, ERROR_METRICS)
    if options.round_to < 1:
        raise BadInputError(f"{name}: round_to must be at least 1")
    if options.max_error < 0 or options.budget_batches < 1:
        raise BadInputError(f"{name}: max_error must be >= 0 and budget_batches >= 1")
    for entry in options.exclude:
        _compile(name, entry)
    for entry in options.layer_ratios:
        pattern, sep, value = entry.rpartition("=")
        try:
            ratio = float(value)
        except ValueError:
            ratio = -1.0
        if not sep or not pattern or not 0.0 <= ratio < 1.0:
            raise BadInputError(f"{name}: layer_ratios entries look like 'regex=0.3', got {entry!r}")
        _compile(name, pattern)


def _compile(name: str, pattern: str) -> None:
    try:
        re.compile(pattern)
    except re.error as error:
        raise BadInputError(f"{name}: bad pattern {pattern!r} ({error})") from None


FindGroups = Callable[[Model], list[Candidate]]


def _names(group: Group) -> list[str]:
    names = [consumer.node.name for consumer in group.consumers.values()]
    names += [node.name for node in group.producers.values()]
    return [name for name in names if name]


def infos_of(model: Model):
    """Shapes for tracing (one shape inference per call; where it fails, tracing refuses with the reason)."""
    return complete_infos(model.graph, infer_tensor_infos(model))


@dataclass
class Sweep:
    """What one sweep did: the plans applied and every record."""

    plans: list[GroupPlan]
    decisions: list[dict[str, Any]]


class StructuredPruning:
    """One run of a structured pruning pass over one model."""

    def __init__(self, pass_name: str, options: StructuredOptions, find_groups: FindGroups,
                 removal_count: Callable[[Group, float], int], unit_name: str) -> None:
        self.pass_name = pass_name
        self.options = options
        self.find_groups = find_groups
        self.removal_count = removal_count
        self.unit_name = unit_name
        self.notes: list[str] = []
        self.stats: dict[str, Any] = {}
        self.teacher: TeacherRunner | None = None
        self.data = None
        self.importance = "magnitude"

    # --- the whole run --------------------------------------------------------------------
    def run(self, model: Model, ctx: PassContext, eligible: Callable[[Group], str] | None = None) -> PassResult:
        options = self.options
        snapshot = model.copy()
        skipped, groups = self._candidates(model, eligible)
        self.stats["groups"] = len(groups)
        if not groups:
            self.stats["decisions"] = skipped
            return PassResult(False, self.stats, [*self.notes, f"no prunable {self.unit_name} found"])
        self._prepare(snapshot, ctx)
        counts = {index: self.removal_count(group, self._ratio_for(group)) for index, group in groups}
        if options.scope == "global" and not options.only_zero:
            counts = allocate(self, snapshot, groups, self.budget_feeds(snapshot, ctx))
        chosen = {index for index, _ in groups}
        budget_records: dict[int, dict[str, Any]] = {}
        if options.max_error > 0 and not options.only_zero:
            chosen, budget_records = self._within_budget(snapshot, groups, counts, ctx)
        sweep = self.sweep(model, [(i, g) for i, g in groups if i in chosen], counts, distill=options.refit_scope)
        decisions = skipped + sweep.decisions + list(budget_records.values())
        self.stats["decisions"] = decisions
        self.stats["removed_units"] = int(sum(plan.removed.size for plan in sweep.plans))
        self.stats["pruned_groups"] = sum(1 for plan in sweep.plans if plan.removed.size)
        modified = self.stats["pruned_groups"] > 0
        if modified and options.measure_latency:
            feeds = _first_feeds(ctx.data if ctx.data is not None else _random_feeds(snapshot, ctx), 1)
            record_latency(snapshot, model, feeds[0] if feeds else None, options.latency_threads, self.stats,
                           self.notes)
        return PassResult(modified, self.stats, self.notes)

    def _candidates(self, model: Model, eligible) -> tuple[list[dict[str, Any]], list[tuple[int, Group]]]:
        skipped: list[dict[str, Any]] = []
        groups: list[tuple[int, Group]] = []
        for index, candidate in enumerate(self.find_groups(model)):
            reason = candidate.reason
            if candidate.group is not None and not reason:
                reason = (eligible(candidate.group) if eligible else "") or self._excluded(candidate.group)
            if reason or candidate.group is None:
                skipped.append({"node": candidate.label, "op": candidate.seed.op, "decision": "skipped",
                                "reason": reason})
            else:
                groups.append((index, candidate.group))
        return skipped, groups

    def _prepare(self, snapshot: Model, ctx: PassContext) -> None:
        options = self.options
        self.data = ctx.data
        if self.data is None and not options.only_zero:
            message = (f"{self.pass_name}: no calibration DATA: {self.unit_name} ranked by weight norms, "
                       "no least-squares recovery (give --calib DATA)")
            ctx.logger.warning("%s", message)
            self.notes.append(message)
        importance = options.importance
        if importance == "auto":
            importance = "error" if self.data is not None else "magnitude"
        if importance in ("error", "obs", "activation") and self.data is None and not options.only_zero:
            raise BadInputError(f"{self.pass_name}: importance={importance} needs calibration data (--calib DATA)")
        self.importance = importance
        self.stats["importance"] = "zero" if options.only_zero else importance
        if self.data is not None and not options.only_zero:
            self.teacher = self._teacher(snapshot, ctx)

    def _excluded(self, group: Group) -> str:
        for pattern in self.options.exclude:
            if any(re.fullmatch(pattern, name) for name in _names(group)):
                return f"excluded by {pattern!r}"
        return ""

    def _ratio_for(self, group: Group) -> float:
        for entry in self.options.layer_ratios:
            pattern, _, value = entry.rpartition("=")
            if any(re.search(pattern, name) for name in _names(group)):
                return float(value)
        return self.options.ratio

    def _teacher(self, snapshot: Model, ctx: PassContext) -> TeacherRunner:
        """The original model (before any pass) when it has every layer output, else this pass's input."""
        layers = linear_layers(snapshot.graph)
        wanted = [node.outputs[0].name for node in layers]
        wanted += [name for node in layers if (name := residual_of(node))]
        original = ctx.original
        if original is not None and original is not snapshot:
            produced = {tensor.name for node in original.graph.nodes for tensor in node.outputs}
            if all(node.outputs[0].name in produced for node in layers):
                self.stats["teacher"] = "original model"
                return TeacherRunner(original, [name for name in wanted if name in produced])
            self.notes.append("the original model lacks some layer outputs (renamed by earlier passes); "
                              "the model given to this pass is the teacher")
        self.stats["teacher"] = "model before this pass"
        return TeacherRunner(snapshot, wanted)

    # --- the sweep ------------------------------------------------------------------------
    def _statistics(self, model: Model, consumers: list) -> list:
        try:
            return gather_statistics(model, self.teacher, consumers, self.data,
                                     padding_mask_input(model, self.options.calib_mask_input),
                                     self.options.calib_max_batches, self.options.residual_targets).stats
        except ORT_RUN_ERRORS as error:
            raise BadInputError(f"calibration data does not fit the model: {str(error).splitlines()[0]}") from None

    def group_problems(self, model: Model, group: Group) -> list | None:
        """Each consumer's least-squares problem, from statistics of ``model`` as it is now (None: unusable)."""
        if self.teacher is None:
            return None
        consumers = list(group.consumers.values())
        stats = self._statistics(model, consumers)
        found = [problem_for(consumer, entry, consumer.unit_rows(group.units))
                 for consumer, entry in zip(consumers, stats, strict=True)]
        return found if all(problem is not None for problem in found) else None

    def plan_group(self, model: Model, index: int, group: Group, count: int) -> GroupPlan:
        """Decide one group on the model as it is now (statistics from it), without applying anything."""
        if self.options.only_zero or max(0, min(count, group.units - 1)) == 0:
            return self.plan_with(index, group, count, None)
        return self.plan_with(index, group, count, self.group_problems(model, group))

    def plan_with(self, index: int, group: Group, count: int, problems: list | None,
                  recovery: str | None = None) -> GroupPlan:
        """Decide one group from given problems (None: weight norms, no recovery); ``recovery`` overrides."""
        zeros = zero_units(group)
        if self.options.only_zero:
            removed = zeros[: group.units - 1]
            return finish(group, index, removed, "zero", [], "none", self.unit_name, exact=True)
        count = max(0, min(count, group.units - 1))
        if count == 0:
            decision = base_record(group)
            decision.update(decision="kept", reason="ratio leaves every unit", kept_units=group.units,
                            removed_units=0)
            return GroupPlan(index, np.zeros(0, dtype=np.int64), decision=decision)
        importance = self.importance if problems is not None or self.importance == "magnitude" else "magnitude"
        removed = removal_order(group, problems, importance, count)
        exact = bool(np.isin(removed, zeros).all())
        if recovery is None:
            recovery = self.options.recovery if self.options.reconstruct else "none"
        plan = finish(group, index, removed, importance, problems or [], recovery, self.unit_name, exact)
        if problems is None and self.teacher is not None:
            plan.decision["note"] = "no usable statistics for this layer: weight norms, no recovery"
        return plan

    def sweep(self, model: Model, groups: list[tuple[int, Group]], counts: dict[int, int],
              distill: str) -> Sweep:
        """Prune ``groups`` (``counts`` units each) in graph order, distilling later layers per ``distill``."""
        first_consumer: dict[int, tuple[int, Group]] = {}
        claimed: set[int] = set()
        order = {id(node): position for position, node in enumerate(model.graph.nodes)}
        for index, group in groups:
            consumers = sorted(group.consumers.values(), key=lambda c: order.get(id(c.node), 0))
            first_consumer[id(consumers[0].node)] = (index, group)
            claimed.update(id(consumer.node) for consumer in consumers)
        names = NameSource(model.graph)
        plans: list[GroupPlan] = []
        decisions: list[dict[str, Any]] = []
        started = False
        if self.teacher is None or not self.options.reconstruct:
            distill = "consumers"
        for node in linear_layers(model.graph):
            if id(node) in first_consumer:
                index, group = first_consumer[id(node)]
                if started:  # earlier rewrites may have changed what the group holds: trace it again
                    try:
                        group = retrace(model.graph, infos_of(model), group)
                    except Refused as refusal:
                        decisions.append({**base_record(group), "decision": "skipped", "reason": str(refusal)})
                        continue
                plan = self.plan_group(model, index, group, counts.get(index, 0))
                if plan.removed.size:
                    apply_removal(model.graph, group, plan.removed, refits_by_node(group, plan.refits), names)
                    plans.append(plan)
                    started = True
                decisions.append(plan.decision)
            elif id(node) not in claimed and started and (
                    distill == "all" or (distill == "residual" and residual_of(node) is not None)):
                decisions.append(self._distill(model, node, names))
        return Sweep(plans, decisions)

    def _distill(self, model: Model, node, names: NameSource) -> dict[str, Any]:
        (stats,) = self._statistics(model, [as_consumer(node)])
        recovery = distill_layer(model.graph, node, stats, names)
        record: dict[str, Any] = {"node": node.name, "op": node.op}
        if recovery is None:
            record.update(decision="kept", reason="no usable statistics to distill")
            return record
        record["decision"] = "refitted" if recovery.method != "plain" else "kept"
        record["reason"] = "inputs moved by earlier pruning: distilled from the teacher"
        describe(record, [recovery])
        return record

    # --- the error budget -----------------------------------------------------------------
    def _within_budget(self, snapshot: Model, groups: list[tuple[int, Group]], counts: dict[int, int],
                       ctx: PassContext) -> tuple[set[int], dict[int, dict[str, Any]]]:
        """Group indices to prune so that the outputs stay within ``max_error`` (and records of the others)."""
        options = self.options
        work = snapshot.copy()
        found = {index: c.group for index, c in enumerate(self.find_groups(work)) if c.group is not None}
        sweep = self.sweep(work, [(index, found[index]) for index, _ in groups if index in found], counts,
                           distill="consumers")
        plans = {str(plan.index): plan for plan in sweep.plans}
        feeds = self.budget_feeds(snapshot, ctx)
        references = run_outputs(snapshot, feeds)

        def build(items: list[str]) -> Model:
            candidate = snapshot.copy()
            self.apply_plans(candidate, [plan for key, plan in plans.items() if key in items])
            return candidate

        error_of = error_function(options.error_metric, options.metric)
        fallback = sensitivity_fallback(build, list(plans), feeds, references, error_of, options.max_error)
        self.stats["output_error"] = fallback.error
        self.stats["output_error_all_pruned"] = fallback.full_error
        records = {}
        for key in fallback.fallback:
            plan = plans[key]
            record = dict(plan.decision)
            record.update(decision="kept", reason=f"error budget {options.max_error:g} "
                          f"{options.metric or options.error_metric}", budget_score=float(fallback.scores[key]),
                          kept_units=int(plan.decision.get("units", 0)), removed_units=0)
            records[plan.index] = record
        if fallback.fallback:
            self.notes.append(f"{len(fallback.fallback)} of {len(plans)} groups left unpruned to meet the "
                              "error budget")
        if fallback.error > options.max_error:
            self.notes.append(f"even the least harmful pruning exceeds the budget ({fallback.error:.3g})")
        return {int(key) for key in fallback.kept}, records

    def apply_plans(self, model: Model, plans: list[GroupPlan]) -> None:
        """Apply decided plans to ``model`` (a copy of the model they were decided on), in order.

        Each group is traced again before it is applied: an earlier refit may have added a
        bias or an Add that the group must now cover too.
        """
        found = {index: c.group for index, c in enumerate(self.find_groups(model)) if c.group is not None}
        names = NameSource(model.graph)
        for position, plan in enumerate(plans):
            group = found[plan.index] if position == 0 else retrace(model.graph, infos_of(model), found[plan.index])
            apply_removal(model.graph, group, plan.removed, refits_by_node(group, plan.refits), names)

    def budget_feeds(self, model: Model, ctx: PassContext) -> list[dict[str, np.ndarray]]:
        """The batches output errors are judged on (DATA, else random inputs)."""
        source = ctx.data if ctx.data is not None else _random_feeds(model, ctx)
        return _first_feeds(source, self.options.budget_batches)



def _first_feeds(feeds, count: int) -> list[dict[str, np.ndarray]]:
    result = []
    for feed in feeds:
        if len(result) >= count:
            break
        result.append(feed)
    return result


def _random_feeds(model: Model, ctx: PassContext) -> Feeds:
    return make_feeds(to_proto(model), None, 1, ctx.shapes, random_count=2)
