"""Runs passes in order, checks each one, and rolls back any pass that breaks the model.

Cleanup passes (declared ``cleanup = True``) that stand next to each other form a group
run to a fixed point with an iteration cap; lossy passes run once. After every pass that
changed something: a topological sort, structural checks and ``onnx.checker``; with
verification on, the outputs are compared with the original model's on the same feeds
and judged by the pass's contract. A pass that fails is replaced by the snapshot taken
before it, so a failed check never reaches the output file; the report says why.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from onnxopt.data import Feeds, make_feeds
from onnxopt.errors import BadInputError, PassError, RuntimeLoadError
from onnxopt.graph_walk import toposort_all
from onnxopt.model_io import Model, save, to_proto
from onnxopt.model_stats import ModelCounts, count_model
from onnxopt.pass_api import Contract, Pass, PassContext
from onnxopt.runtime import create_session, run_session
from onnxopt.structure import StructureError, check_structure
from onnxopt.verify import Comparison, compare_runs

logger = logging.getLogger(__name__)

DEFAULT_MAX_ITERATIONS = 8
DEFAULT_VERIFY_BATCHES = 4


@dataclass
class PassRecord:
    """What happened when one pass ran once."""

    name: str
    contract: str
    iteration: int
    modified: bool
    status: str  # "ok", "unchanged", "rolled back", "error"
    seconds: float
    before: dict[str, int]
    after: dict[str, int]
    stats: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    reason: str = ""
    started_s: float = 0.0  # offset from the start of the run, for the report's timeline
    check_seconds: float = 0.0  # structural checks and verification after the pass
    max_abs_error: float | None = None
    max_rel_error: float | None = None
    min_cosine: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {key: value for key, value in self.__dict__.items()}


@dataclass
class RunReport:
    """Everything the manager learned: per-pass records and whole-model figures."""

    records: list[PassRecord] = field(default_factory=list)
    before: ModelCounts | None = None
    after: ModelCounts | None = None
    seconds: float = 0.0
    verification: Comparison | None = None
    iteration_cap_hit: list[str] = field(default_factory=list)

    @property
    def failures(self) -> list[PassRecord]:
        return [record for record in self.records if record.status in ("rolled back", "error")]

    def as_dict(self) -> dict[str, Any]:
        return {
            "seconds": self.seconds,
            "before": self.before.as_dict() if self.before else None,
            "after": self.after.as_dict() if self.after else None,
            "ops_before": self.before.ops if self.before else None,
            "ops_after": self.after.ops if self.after else None,
            "weights_by_dtype_before": self.before.weights_by_dtype if self.before else None,
            "weights_by_dtype_after": self.after.weights_by_dtype if self.after else None,
            "weights_by_op_before": self.before.weights_by_op if self.before else None,
            "weights_by_op_after": self.after.weights_by_op if self.after else None,
            "passes": [record.as_dict() for record in self.records],
            "verification": self.verification.as_dict() if self.verification else None,
            "iteration_cap_hit": self.iteration_cap_hit,
        }


ProgressCallback = Callable[[str, str, int], None]


class Verifier:
    """Reference outputs on fixed feeds: of the original model, and of the model as it stands now.

    A pass's contract is about what *that pass* did: an exact pass must leave the outputs of
    the model it was given bit-identical, a tolerance pass keeps them within its tolerance.
    After a tolerance or lossy pass has changed the numbers, a later exact pass is therefore
    judged against the outputs of the model before it (``current``), not against the
    original's; lossy passes, whose budget is about the original model, are judged against
    the original (``references``), and so is the final verification.
    """

    def __init__(self, original: Model, feeds: Feeds | None, max_batches: int = DEFAULT_VERIFY_BATCHES) -> None:
        if feeds is None:
            feeds = make_feeds(to_proto(original), random_count=2)
        self.feeds = []
        for index, feed in enumerate(feeds):
            if index >= max_batches:
                break
            self.feeds.append(feed)
        session = create_session(original)
        self.references = [run_session(session, feed) for feed in self.feeds]
        self.current = self.references

    def run(self, model: Model) -> list[dict[str, np.ndarray]]:
        session = create_session(model)
        return [run_session(session, feed) for feed in self.feeds]

    def compare(self, model: Model) -> Comparison:
        """``model`` against the original."""
        return compare_runs(self.references, self.run(model))

    def compare_step(self, model: Model) -> tuple[Comparison, Comparison, list[dict[str, np.ndarray]]]:
        """``model`` against the model before the pass and against the original, and its outputs."""
        candidates = self.run(model)
        return compare_runs(self.current, candidates), compare_runs(self.references, candidates), candidates

    def accept(self, outputs: list[dict[str, np.ndarray]]) -> None:
        """The pass was kept: its outputs are what the next pass is judged against."""
        self.current = outputs

    def compare_half_faithfully(self, model: Model) -> Comparison | None:
        """Outputs under the fp16-faithful judge when the model computes in half and is small.

        onnxruntime on the CPU runs many fp16 ops in fp32, which hides overflow that a GPU
        would show; the reference evaluator keeps half tensors half. It is slow, so it is
        used on models up to JUDGE_MAX_WEIGHT_BYTES and on the first feed only.
        """
        from onnxopt.fp16_judge import judge_run

        counts = count_model(model)
        if counts.weight_bytes > JUDGE_MAX_WEIGHT_BYTES or not _has_half_tensors(model):
            return None
        candidate = judge_run(model, self.feeds[0])
        return compare_runs(self.references[:1], [candidate])


JUDGE_MAX_WEIGHT_BYTES = 16 * 1024 * 1024


def _loads_in_onnxruntime(model: Model) -> bool:
    try:
        create_session(model)
    except RuntimeLoadError:
        return False
    return True


def _has_half_tensors(model: Model) -> bool:
    half = (np.float16, "bfloat16")
    for tensor in model.graph.tensors().values():
        if tensor.dtype is not None and (tensor.dtype == np.float16 or str(tensor.dtype) in half):
            return True
    return any(node.op == "Cast" and node.attrs.get("to") in (10, 16) for node in model.graph.nodes)


def _group(passes: list[Pass]) -> list[list[Pass]]:
    groups: list[list[Pass]] = []
    for instance in passes:
        if instance.cleanup and groups and groups[-1][0].cleanup:
            groups[-1].append(instance)
        else:
            groups.append([instance])
    return groups


class PassManager:
    """Run an ordered list of passes over a model with checks, verification and rollback."""

    def __init__(
        self,
        passes: list[Pass],
        ctx: PassContext | None = None,
        verify: bool = False,
        verify_feeds: Feeds | None = None,
        max_iterations: int = DEFAULT_MAX_ITERATIONS,
        dump_dir: Path | None = None,
        strict: bool = False,
        progress: ProgressCallback | None = None,
    ) -> None:
        self.passes = passes
        self.ctx = ctx or PassContext()
        self.verify = verify
        self.verify_feeds = verify_feeds
        self.max_iterations = max_iterations
        self.dump_dir = dump_dir
        self.strict = strict
        self.progress = progress
        self._verifier: Verifier | None = None
        self._history: list[str] = []
        self._started = time.perf_counter()

    def run(self, model: Model) -> tuple[Model, RunReport]:
        """Run every pass; returns the optimized model and the report."""
        report = RunReport(before=count_model(model))
        started = self._started = time.perf_counter()
        if self.verify:
            self._verifier = Verifier(model.copy(), self.verify_feeds or self.ctx.data)
        given_original = self.ctx.original
        if given_original is None:
            self.ctx.original = model.copy()  # the teacher of passes that recover from the original
        try:
            model = self._run_groups(model, report)
        finally:
            self.ctx.original = given_original
        report.after = count_model(model)
        if self._verifier is not None:
            report.verification = self._verifier.compare(model)
        report.seconds = time.perf_counter() - started
        return model, report

    def _run_groups(self, model: Model, report: RunReport) -> Model:
        for group in _group(self.passes):
            if group[0].cleanup:
                model = self._run_to_fixed_point(group, model, report)
            else:
                for instance in group:
                    model = self._run_one(instance, model, report, iteration=1)
        return model

    def _run_to_fixed_point(self, group: list[Pass], model: Model, report: RunReport) -> Model:
        for iteration in range(1, self.max_iterations + 1):
            changed = False
            for instance in group:
                model = self._run_one(instance, model, report, iteration)
                changed = changed or report.records[-1].status == "ok"
            if not changed:
                return model
        report.iteration_cap_hit.append(",".join(p.name for p in group))
        logger.warning("cleanup passes still changing the model after %d iterations", self.max_iterations)
        return model

    def _notify(self, event: str, name: str, iteration: int) -> None:
        if self.progress is not None:
            self.progress(event, name, iteration)

    def _run_one(self, instance: Pass, model: Model, report: RunReport, iteration: int) -> Model:
        self._notify("start", instance.name, iteration)
        before = count_model(model)
        snapshot = model.copy()
        started = time.perf_counter()
        record = PassRecord(
            name=instance.name,
            contract=instance.contract.value,
            iteration=iteration,
            modified=False,
            status="unchanged",
            seconds=0.0,
            before=before.as_dict(),
            after=before.as_dict(),
            started_s=started - self._started,
        )
        try:
            result = instance.run(model, self.ctx)
        except RuntimeLoadError as error:
            if not _loads_in_onnxruntime(snapshot):
                raise  # the model given to the pass cannot run: bad input, not a pass bug
            return self._failed(instance, error, snapshot, model, report, record, started, iteration)
        except BadInputError:
            raise
        except Exception as error:  # a bug in a pass must not corrupt the output
            return self._failed(instance, error, snapshot, model, report, record, started, iteration)
        record.seconds = time.perf_counter() - started
        record.modified = result.modified
        record.stats = dict(result.stats)
        record.notes = list(result.notes)
        if result.modified:
            checked = time.perf_counter()
            model, record = self._check(instance, model, snapshot, record)
            record.check_seconds = time.perf_counter() - checked
        self._history.append(instance.name)
        record.after = count_model(model).as_dict()
        report.records.append(record)
        self._notify("end", instance.name, iteration)
        return model

    def _failed(
        self,
        instance: Pass,
        error: Exception,
        snapshot: Model,
        model: Model,
        report: RunReport,
        record: PassRecord,
        started: float,
        iteration: int,
    ) -> Model:
        """Record a pass that raised, dump the reproducer, and return the model from before it."""
        record.seconds = time.perf_counter() - started
        failure = PassError(instance.name, list(self._history), error)
        record.status, record.reason = "error", str(failure)
        logger.error("%s", failure)
        logger.debug("%s", traceback.format_exc())
        self._dump(snapshot, model, instance.name, len(report.records))
        report.records.append(record)
        self._notify("end", instance.name, iteration)
        if self.strict:
            raise failure from error
        return snapshot

    def _check(self, instance: Pass, model: Model, snapshot: Model, record: PassRecord) -> tuple[Model, PassRecord]:
        try:
            toposort_all(model.graph)
            check_structure(model)
        except (StructureError, Exception) as error:  # toposort raises bare Exceptions on cycles
            record.status, record.reason = "rolled back", f"structural check failed: {str(error).splitlines()[0]}"
            logger.error("pass %s rolled back: %s", instance.name, record.reason)
            if self.strict:
                raise PassError(instance.name, list(self._history), error) from error
            return snapshot, record
        if self._verifier is not None:
            step, whole, outputs = self._verifier.compare_step(model)
            comparison = whole if instance.contract is Contract.LOSSY else step
            record.max_abs_error = comparison.max_abs
            record.max_rel_error = comparison.max_rel
            record.min_cosine = comparison.min_cosine
            ok, why = comparison.meets(instance.contract, instance.tolerance_rel)
            if ok and instance.contract is Contract.LOSSY:
                judged = self._verifier.compare_half_faithfully(model)
                if judged is not None:
                    record.notes.append(f"fp16-faithful judge: max rel error {judged.max_rel:.3g}")
                    ok, why = judged.meets(instance.contract, instance.tolerance_rel)
                    why = f"under the fp16-faithful judge: {why}" if why else why
            if not ok:
                record.status, record.reason = "rolled back", f"verification failed: {why}"
                logger.error("pass %s rolled back: %s", instance.name, why)
                return snapshot, record
            self._verifier.accept(outputs)
        record.status = "ok"
        return model, record

    def _dump(self, before: Model, after: Model, name: str, index: int) -> None:
        if self.dump_dir is None:
            return
        self.dump_dir.mkdir(parents=True, exist_ok=True)
        for label, which in (("before", before), ("after", after)):
            target = self.dump_dir / f"{index:03d}_{name}_{label}.onnx"
            try:
                save(which, target)
                logger.warning("wrote %s", target)
            except Exception as error:  # the broken "after" model may not export at all
                logger.warning("could not write %s: %s", target, error)


def contract_of(passes: list[Pass]) -> Contract:
    """The loosest contract among passes (exact < tolerance < lossy)."""
    order = [Contract.EXACT, Contract.TOLERANCE, Contract.LOSSY]
    return max((p.contract for p in passes), key=order.index, default=Contract.EXACT)


def loosest_tolerance(passes: list[Pass]) -> float:
    """Sum of declared relative tolerances (errors of chained passes add up at worst)."""
    return float(np.sum([p.tolerance_rel for p in passes if p.contract is Contract.TOLERANCE]))
