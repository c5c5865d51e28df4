"""``tune(...)``: search the registered passes for the best model within a fidelity budget.

The loop: the strategy proposes a batch; each proposal is looked up in the cache or sent
to the executor as a trial job; the batch's records are stored in proposal order (not
completion order); repeat until ``trials``, ``time_budget_s`` or the space runs out.
Then every trial is judged against the budget, the Pareto front and the best are chosen
(``onnxopt.tune.objective``), the best model is brought to ``output`` and the report is
written. A trial never stops the search: whatever happens to it is a record.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnxopt
from onnxopt.errors import BadInputError
from onnxopt.model_io import model_file_bytes
from onnxopt.report.schema import header
from onnxopt.targets import TARGETS
from onnxopt.tune.cache import FileBundle, TrialCache, data_bundle, default_cache_dir, model_bundle, trial_key
from onnxopt.tune.executors import Executor, LocalExecutor, make_executor
from onnxopt.tune.hosts import host_tags
from onnxopt.tune.objective import Budget, best, pareto_front
from onnxopt.tune.results import check_report_path, objectives_for, ordered_trial, write_report
from onnxopt.tune.space import BudgetLink, Config, SearchSpace, format_value
from onnxopt.tune.strategy import DEFAULT_BATCH, Proposal, Strategy

logger = logging.getLogger(__name__)

KEEP_MODELS = ("front", "all", "none")
Progress = Callable[[str, dict[str, Any]], None]


@dataclass
class TuneResult:
    """What ``tune`` returns: the report document, the front, the best trial and where its model went."""

    document: dict[str, Any]
    trials: list[dict[str, Any]]
    front: list[dict[str, Any]]
    best: dict[str, Any] | None
    output: Path | None = None
    notes: list[str] = field(default_factory=list)


def parse_overrides(items: Iterable[str]) -> dict[str, dict[str, str]]:
    """``pass.key=value`` items (like ``optimize -O``) as {pass: {key: value}}."""
    fixed: dict[str, dict[str, str]] = {}
    for item in items:
        target, sep, value = item.partition("=")
        name, dot, key = target.rpartition(".")
        if not sep or not dot or not name or not key:
            raise BadInputError(f"option override {item!r} must look like pass.key=value")
        fixed.setdefault(name, {})[key.replace("-", "_")] = value
    return fixed


def _check_inputs(model: Path, data: Path | None, calib: Path | None, budget: Budget, target: str, trials: int,
                  keep_models: str, time_budget_s: float | None) -> None:
    if not model.is_file():
        raise BadInputError(f"{model}: no such model file")
    for name, path in (("--data", data), ("--calib", calib)):
        if path is not None and not path.exists():
            raise BadInputError(f"{name} {path}: no such file or folder")
    budget.validate()
    if budget.metric == "accuracy" and data is None:
        raise BadInputError("--metric accuracy needs --data holding inputs and 'labels'")
    if target not in TARGETS:
        raise BadInputError(f"unknown target {target!r} (choose from {', '.join(TARGETS)})")
    if trials < 1:
        raise BadInputError("--trials must be at least 1")
    if keep_models not in KEEP_MODELS:
        raise BadInputError(f"keep_models must be one of {', '.join(KEEP_MODELS)}")
    if time_budget_s is not None and time_budget_s <= 0:
        raise BadInputError("--time-budget must be positive")


def _bundle_info(bundle: FileBundle | None) -> dict[str, Any] | None:
    return {"path": bundle.path, "digest": bundle.digest} if bundle else None


class _Search:
    """The state of one search: space, strategy, cache, executor, and the records so far."""

    def __init__(self, space: SearchSpace, strategy: Strategy, budget: Budget, cache: TrialCache, models_dir: Path,
                 bundles: dict[str, FileBundle | None], settings: dict[str, Any], limits: dict[str, Any],
                 progress: Progress | None) -> None:
        self.space, self.strategy, self.budget, self.cache = space, strategy, budget, cache
        self.models_dir, self.bundles, self.settings, self.limits = models_dir, bundles, settings, limits
        self.progress = progress
        tags = host_tags()
        # What else decides a trial's numbers: the hardware class, and the user metric's code.
        self.key_settings = {**settings, "metric_source": _metric_digest(settings["metric"]),
                             "hardware": {name: tags[name] for name in ("cpu", "cpu_flags", "onnxruntime")}}
        self.history: list[dict[str, Any]] = []
        self.configs: dict[str, Config] = {}

    def cache_key(self, config: Config) -> str:
        digest = {role: bundle.digest if bundle else None for role, bundle in self.bundles.items()}
        # The whole pipeline, cleanups included, is part of the key: a trial cached under other cleanups
        # (e.g. twin sharing before a quantizer) made another model.
        pipeline = ",".join(step.name for step in self.space.pipeline(config))
        return trial_key(digest["model"], digest["calib"], digest["data"], f"{pipeline}|{config.key}",
                         self.key_settings, onnxopt.__version__)

    def job(self, config: Config, cache_key: str, output: Path | None) -> dict[str, Any]:
        pipeline = [{"name": step.name, "options": dict(step.options)} for step in self.space.pipeline(config)]
        return {"kind": "trial", "key": cache_key, "pipeline": pipeline, "settings": self.settings,
                "output": str(output) if output else None, "limits": self.limits,
                **{role: bundle.as_dict() if bundle else None for role, bundle in self.bundles.items()}}

    def _record(self, proposal: Proposal, cache_key: str, raw: dict[str, Any], cached: bool) -> dict[str, Any]:
        record = dict(raw)
        record.update({
            "index": len(self.history), "key": proposal.config.key, "cache_key": cache_key, "phase": proposal.phase,
            "parents": list(proposal.parents), "config": proposal.config.as_list(),
            "pipeline": [":".join([step.name, *(f"{k}={format_value(v)}" for k, v in step.options.items())])
                         for step in self.space.pipeline(proposal.config)],
            "cached": cached,
        })
        record.setdefault("status", "crashed")
        record.setdefault("reason", "")
        return record

    def run_batch(self, executor: Executor, proposals: list[Proposal]) -> None:
        """Run one batch; records land in proposal order whatever order the trials finish in."""
        slots: list[dict[str, Any] | None] = [None] * len(proposals)
        keys = []
        jobs, job_slots = [], []
        for slot, proposal in enumerate(proposals):
            self.configs[proposal.config.key] = proposal.config
            key = self.cache_key(proposal.config)
            keys.append(key)
            cached = self.cache.get(key)
            if cached is not None:
                slots[slot] = cached | {"_cached": True}
                continue
            jobs.append(self.job(proposal.config, key, self.models_dir / f"{key}.onnx"))
            job_slots.append(slot)
        finished: list[dict[str, Any]] = []
        for slot in range(len(proposals)):
            if slots[slot] is not None:
                self._notify_trial(proposals[slot], slots[slot], finished)
        for index, raw in executor.run(jobs):
            slot = job_slots[index]
            slots[slot] = raw
            self.cache.put(keys[slot], raw)
            self._notify_trial(proposals[slot], raw, finished)
        for slot, proposal in enumerate(proposals):
            raw = dict(slots[slot] or {"status": "crashed", "reason": "no result from the executor"})
            cached = bool(raw.pop("_cached", False))
            self.history.append(self._record(proposal, keys[slot], raw, cached))

    def _notify_trial(self, proposal: Proposal, raw: dict[str, Any], finished: list[dict[str, Any]]) -> None:
        """Tell the progress callback about a finished trial and the best so far (display only)."""
        finished.append({**raw, "key": proposal.config.key, "phase": proposal.phase})
        if self.progress is not None:
            self.progress("trial", {"record": finished[-1], "best": best([*self.history, *finished], self.budget),
                                    "done": len(self.history) + len(finished)})


def _metric_digest(metric: str) -> str | None:
    """SHA-256 of the module defining a ``python:module:function`` metric (None for built-ins)."""
    if not metric.startswith("python:"):
        return None
    module = metric.removeprefix("python:").partition(":")[0]
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin or not Path(spec.origin).is_file():
        return None
    return hashlib.sha256(Path(spec.origin).read_bytes()).hexdigest()


def _materialize_best(search: _Search, executor: Executor, record: dict[str, Any], output: Path,
                      notes: list[str]) -> bool:
    """Bring the best trial's model to ``output``; optimize it again here if its file is gone."""
    if executor.fetch(record, output):
        return False
    notes.append(f"the model of {record['key']} was no longer on disk; optimized it again")
    config = search.configs[record["key"]]
    with tempfile.TemporaryDirectory(prefix="onnxopt-tune-best-") as folder:
        target = Path(folder) / output.name
        job = search.job(config, record["cache_key"], target)
        redo = next(LocalExecutor().run([job]))[1]
        if redo.get("status") != "ok" or not LocalExecutor().fetch(redo, output):
            raise BadInputError(f"the best configuration {record['key']} could not be optimized again: "
                                f"{redo.get('reason')}")
        violations = search.budget.violations(redo)
        if violations:
            notes.append(f"warning: optimized again, {record['key']} measured {'; '.join(violations)}")
    return True


def tune(
    model: str | Path,
    output: str | Path | None = None,
    *,
    data: str | Path | None = None,
    calib: str | Path | None = None,
    metric: str = "cosine",
    max_error: float | None = None,
    min_metric: float | None = None,
    objective: str = "latency",
    max_latency_ms: float | None = None,
    max_size_mb: float | None = None,
    margin: float = 0.05,
    trials: int = 24,
    time_budget_s: float | None = None,
    executor: str | Executor = "local",
    seed: int = 0,
    target: str = "ort-cpu",
    passes: Iterable[str] | None = None,
    exclude_passes: Iterable[str] = (),
    overrides: Iterable[str] = (),
    batch_size: int = 1,
    shapes: Mapping[str, list[int]] | None = None,
    threads: int = 1,
    warmup_runs: int = 5,
    timed_runs: int = 50,
    min_timing_s: float = 0.5,
    strategy_batch: int = DEFAULT_BATCH,
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
    trial_timeout_s: float | None = 1800.0,
    trial_memory_mb: float | None = None,
    isolate: bool = True,
    keep_models: str = "front",
    report: str | Path | None = None,
    command: str = "",
    progress: Progress | None = None,
) -> TuneResult:
    """Search pass configurations of ``model`` for the best one within the fidelity budget.

    ``data`` is the evaluation DATA (held-out inputs, plus ``labels`` for accuracy);
    ``calib`` the calibration DATA (default: ``data``; given alone, it is also the
    evaluation DATA; with neither, trials are judged on random inputs and calibrated without
    data, which suits output-error metrics only). Every trial optimizes the model with
    the exact cleanups plus one configuration of the registered passes' search spaces,
    measures its error against the original on ``data``, its size and its latency (timed
    interleaved with the original, ``threads`` intra-op threads, as deployed). The best
    feasible trial's model is written to ``output``; ``report`` gets the JSON (or Markdown)
    report. Returns the report document, the Pareto front and the best trial (None when
    no trial met the budget).
    """
    model, output = Path(model), Path(output) if output is not None else None
    data_path, calib_path = (Path(data) if data is not None else None), (Path(calib) if calib is not None else None)
    budget = Budget(metric=metric, max_error=max_error, min_metric=min_metric, objective=objective,
                    max_latency_ms=max_latency_ms, max_size_mb=max_size_mb, margin=margin)
    _check_inputs(model, data_path, calib_path, budget, target, trials, keep_models, time_budget_s)
    if data_path is None and calib_path is not None:
        data_path = calib_path  # judged on the calibration set rather than on random inputs
    if output is not None and output.resolve() == model.resolve():
        raise BadInputError("output path is the input file; onnxopt never overwrites its input")
    if output is not None and not output.resolve().parent.is_dir():
        raise BadInputError(f"{output}: output folder does not exist")
    if report is not None:
        check_report_path(report)  # a bad suffix is a one-line error before any work

    from onnxopt.passes import PRESETS, all_passes, cleanup_before

    space = SearchSpace.from_registry(all_passes(), PRESETS["default"], BudgetLink(metric, budget.error_budget()),
                                      include=passes, exclude=exclude_passes, overrides=parse_overrides(overrides),
                                      cleanups=cleanup_before)
    bundles = {"model": model_bundle(model), "calib": data_bundle(calib_path) if calib_path else None,
               "data": data_bundle(data_path) if data_path else None}
    settings = {"target": target, "metric": metric, "batch_size": batch_size, "shapes": dict(shapes or {}),
                "threads": threads, "warmup_runs": warmup_runs, "timed_runs": timed_runs, "min_timing_s": min_timing_s,
                "measure_memory": objective == "memory", "provider": "cpu"}
    limits = {"timeout_s": trial_timeout_s, "memory_mb": trial_memory_mb, "isolate": isolate}
    cache = TrialCache(Path(cache_dir) if cache_dir else default_cache_dir(), enabled=use_cache)
    scratch = None if use_cache else Path(tempfile.mkdtemp(prefix="onnxopt-tune-"))
    models_dir = cache.root / "models" if scratch is None else scratch
    strategy = Strategy(space, PRESETS, budget, seed=seed, batch_size=strategy_batch)
    search = _Search(space, strategy, budget, cache, models_dir, bundles, settings, limits, progress)
    grid = space.grid_size()
    owned = isinstance(executor, str)
    runner = make_executor(executor) if isinstance(executor, str) else executor
    started = time.perf_counter()
    notes: list[str] = []
    stopped = "trials"
    try:
        if progress:
            progress("start", {"trials": trials, "grid_size": grid, "executor": runner.name})
        while len(search.history) < trials:
            # Checked between batches; the first (baseline and presets) always runs, so there is a comparison.
            if time_budget_s is not None and search.history and time.perf_counter() - started > time_budget_s:
                stopped = "time budget"
                break
            proposals = strategy.propose(search.history, search.configs, trials - len(search.history))
            if not proposals:
                stopped = "space exhausted"
                break
            search.run_batch(runner, proposals)
        records = search.history
        for record in records:
            record["violations"] = budget.violations(record)
            record["feasible"] = not record["violations"]
            record["objective_value"] = budget.objective_value(record)
        front = pareto_front(records, budget)
        front_keys = {record["key"] for record in front}
        for record in records:
            record["pareto"] = record["key"] in front_keys
        winner = best(records, budget)
        rebuilt = False
        if winner is not None and output is not None:
            rebuilt = _materialize_best(search, runner, winner, output, notes)
    finally:
        if owned:
            runner.close()
    wall = time.perf_counter() - started
    if keep_models != "all" and scratch is None:
        keep = front_keys | ({winner["key"]} if winner else set()) if keep_models == "front" else set()
        for record in records:
            if record["key"] not in keep:
                cache.drop_model(record["cache_key"])
    if scratch is not None:
        shutil.rmtree(scratch, ignore_errors=True)
    document = _document(model, bundles, budget, space, records, front, winner, output, rebuilt, stopped, wall,
                         runner, settings, limits, seed, trials, time_budget_s, strategy_batch, command, grid, notes)
    if report is not None:
        write_report(document, report)
    if progress:
        progress("done", {"best": winner, "document": document})
    return TuneResult(document=document, trials=records, front=front, best=winner,
                      output=output if winner is not None else None, notes=notes)


def _document(model: Path, bundles: dict[str, FileBundle | None], budget: Budget, space: SearchSpace,
              records: list[dict[str, Any]], front: list[dict[str, Any]], winner: dict[str, Any] | None,
              output: Path | None, rebuilt: bool, stopped: str, wall: float, runner: Executor,
              settings: dict[str, Any], limits: dict[str, Any], seed: int, trials: int,
              time_budget_s: float | None, strategy_batch: int, command: str, grid: int,
              notes: list[str]) -> dict[str, Any]:
    from onnxopt.passes import PRESETS

    by_key = {record["key"]: record for record in records}
    presets = {}
    for name, items in PRESETS.items():
        config = space.from_pipeline(items)
        if config is not None and config.key in by_key:
            record = by_key[config.key]
            presets[name] = {"key": config.key, "feasible": record["feasible"],
                             "objective_value": record["objective_value"], "error": record.get("error")}
    peaks = [r["peak_rss_bytes"] for r in records if r.get("peak_rss_bytes") and not r.get("cached")]
    hosts = {json_key(r["host"]): r["host"] for r in records if r.get("host")}
    for record in records:
        record["id"] = record["key"]
        record["hostname"] = (record.get("host") or {}).get("hostname")
    return {
        **header("tune"),
        "command": command,
        "model": str(model),
        "model_digest": bundles["model"].digest,
        "model_bytes": model_file_bytes(model),
        "objectives": objectives_for(budget.objective),
        "data": _bundle_info(bundles["data"]),
        "calib": _bundle_info(bundles["calib"]),
        "settings": {**budget.as_dict(), **settings, **{f"trial_{k}": v for k, v in limits.items()},
                     "executor": runner.name, "workers": runner.workers, "seed": seed, "trials": trials,
                     "time_budget_s": time_budget_s, "strategy_batch": strategy_batch},
        "space": {**space.describe(), "presets": {name: (c.key if (c := space.from_pipeline(items)) else None)
                                                   for name, items in PRESETS.items()}},
        "trials": [ordered_trial(record) for record in records],
        "front": [record["key"] for record in front],
        "best": None if winner is None else {
            "key": winner["key"], "index": winner["index"], "config": winner["config"],
            "pipeline": winner["pipeline"], "output": str(output) if output else None, "rebuilt": rebuilt},
        "presets": presets,
        "notes": notes,
        "hosts": list(hosts.values()),
        "cost": {"wall_s": round(wall, 3), "trials_run": sum(1 for r in records if not r.get("cached")),
                 "trials_cached": sum(1 for r in records if r.get("cached")),
                 "trial_s_total": round(sum(r.get("trial_s") or 0.0 for r in records if not r.get("cached")), 3),
                 "peak_rss_bytes_max": max(peaks) if peaks else None, "stopped": stopped,
                 "phases": dict(Counter(r["phase"].split(":")[0] for r in records)),
                 "grid_size": grid},
    }


def json_key(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)

