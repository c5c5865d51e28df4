"""The search's decisions: deterministic under any completion order, stable under timing noise, cheaper than a grid.

A simulated executor stands in for real trials here (real ones are in test_search.py and
test_ray.py): it computes each trial's latency ratio, size and error from the
configuration by a fixed rule, multiplies the latency by noise drawn per (noise seed,
configuration), and hands the records back in whatever order it is told to.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from onnxopt.tune import tune
from onnxopt.tune.executors import Executor
from onnxopt.tune.objective import Budget, best, pareto_front, rank

TUNED = {"qdq", "fp16", "weight-only", "quantize-embeddings"}


def _truth(steps: dict[str, dict[str, Any]], qdq_error: float) -> dict[str, float]:
    """The simulated model's true latency ratio, size (bytes) and error for a configuration."""
    latency, size, error = 1.0, 1_000_000.0, 0.0
    if "fp16" in steps:
        latency, size, error = 1.02, 500_000.0, 1e-6
    if "weight-only" in steps:
        scheme = steps["weight-only"].get("scheme", "int4")
        latency, size, error = 0.9, 170_000.0, {"int4": 0.02, "ternary": 0.2, "binary": 0.5}[scheme]
    if "qdq" in steps:
        options = steps["qdq"]
        dynamic = options.get("mode") == "dynamic"
        latency, size = (0.55 if dynamic else 0.45), 280_000.0
        error = qdq_error + 0.001 * len([k for k in options if k not in ("max_error", "error_metric")])
        if options.get("max_error"):
            latency += 0.05
            error = min(error, 0.9 * options["max_error"])
    if "quantize-embeddings" in steps:
        size -= 100_000.0
        error += 1e-4
    return {"latency_ratio": latency, "size_bytes": size, "error": error}


class SimulatedExecutor(Executor):
    """Records by rule, latency noise per (seed, configuration), returned in a chosen order."""

    name = "simulated"

    def __init__(self, noise_seed: int = 0, noise: float = 0.01, order: str = "forward", qdq_error: float = 0.003,
                 fail: str = "") -> None:
        self.noise_seed, self.noise, self.order, self.qdq_error, self.fail = noise_seed, noise, order, qdq_error, fail
        self.ran: list[str] = []

    def run(self, jobs: list[dict[str, Any]]) -> Iterator[tuple[int, dict[str, Any]]]:
        records = []
        for job in jobs:
            steps = {step["name"]: step["options"] for step in job["pipeline"] if step["name"] in TUNED}
            key = ",".join(sorted(f"{name}{sorted(options.items())}" for name, options in steps.items()))
            self.ran.append(key)
            if self.fail and self.fail in steps:
                records.append({"status": "failed", "reason": f"RuntimeError: {self.fail} raised"})
                continue
            truth = _truth(steps, self.qdq_error)
            seed = int(hashlib.sha256(f"{self.noise_seed}/{key}".encode()).hexdigest()[:8], 16)
            factor = float(np.exp(np.random.default_rng(seed).normal(0.0, self.noise)))
            records.append({**truth, "status": "ok", "reason": "", "latency_ratio": truth["latency_ratio"] * factor,
                            "latency_ms": 10.0 * truth["latency_ratio"] * factor, "metric_value": 1 - truth["error"],
                            "trial_s": 0.0})
        order = list(range(len(jobs)))
        if self.order == "reverse":
            order.reverse()
        elif self.order == "shuffle":
            order = [int(i) for i in np.random.default_rng(len(self.ran)).permutation(len(jobs))]
        for index in order:
            yield index, records[index]


def _search(digits, executor: Executor, trials: int = 16, max_error: float = 0.005, **kwargs):
    return tune(digits["model"], None, data=digits["data"], metric="cosine", max_error=max_error,
                objective=kwargs.pop("objective", "latency"), trials=trials, executor=executor, use_cache=False,
                seed=kwargs.pop("seed", 0), **kwargs)


def test_completion_order_changes_nothing(digits):
    runs = [_search(digits, SimulatedExecutor(order=order)) for order in ("forward", "reverse", "shuffle")]
    sequences = [[t["key"] for t in run.trials] for run in runs]
    assert sequences[0] == sequences[1] == sequences[2]
    assert len({run.best["key"] for run in runs}) == 1
    assert [t["index"] for t in runs[0].trials] == list(range(len(runs[0].trials)))


@pytest.mark.parametrize("noise_seed", range(8))
def test_timing_noise_below_the_margin_does_not_change_the_winner(digits, noise_seed: int):
    result = _search(digits, SimulatedExecutor(noise_seed=noise_seed, noise=0.015))
    # All static int8 configurations tie within the margin; the tie-breaks (lowest error, then
    # smallest file, then the simplest) pick the int8 preset, whatever the noise did.
    assert result.best["key"] == "qdq,quantize-embeddings"


def test_a_smaller_search_is_a_prefix_of_a_larger_one(digits):
    small = _search(digits, SimulatedExecutor(), trials=7)
    large = _search(digits, SimulatedExecutor(), trials=15)
    assert [t["key"] for t in small.trials] == [t["key"] for t in large.trials][:7]


def test_a_budget_miss_is_refined_with_the_pass_sensitivity_budget(digits):
    # Only misses that could beat the best feasible trial are refined: keeping layers in float never speeds up.
    # int8 misses the 0.005 budget (error 0.007): the pass's own budget option fixes it.
    result = _search(digits, SimulatedExecutor(qdq_error=0.007), trials=12)
    phases = {t["key"]: t["phase"] for t in result.trials}
    assert "qdq:error_metric=cosine:max_error=0.005,quantize-embeddings" in phases
    assert phases["qdq:error_metric=cosine:max_error=0.005,quantize-embeddings"] == "sensitivity"
    assert "max_error" in result.best["key"] and result.best["feasible"]
    assert result.document["space"]["grid_size"] > 10 * len(result.trials)


def test_failures_are_records_and_the_search_goes_on(digits):
    result = _search(digits, SimulatedExecutor(fail="fp16"), trials=10)
    failed = [t for t in result.trials if t["status"] == "failed"]
    assert failed and all("fp16" in t["key"] and "raised" in t["reason"] for t in failed)
    assert result.best is not None and len(result.trials) == 10


def test_hard_budgets_are_respected(digits):
    result = _search(digits, SimulatedExecutor(), max_size_mb=0.2, objective="latency", trials=12)
    assert result.best is not None and result.best["size_bytes"] <= 200_000
    for trial in result.trials:
        if trial["status"] == "ok" and trial["size_bytes"] > 200_000:
            assert not trial["feasible"] and any("size" in v for v in trial["violations"])
    nothing = _search(digits, SimulatedExecutor(), max_latency_ms=1.0, trials=6)
    assert nothing.best is None and nothing.output is None
    hurried = _search(digits, SimulatedExecutor(), trials=20, time_budget_s=1e-9)
    # The first batch only: the baseline and the presets of the space, none of the later phases.
    phases = [t["phase"] for t in hurried.trials]
    assert hurried.document["cost"]["stopped"] == "time budget" and len(phases) < 20
    assert phases[0] == "baseline" and "preset:int8" in phases and all(p.startswith("preset:") for p in phases[1:])


def _record(key: str, latency: float, error: float, size: float = 1.0) -> dict[str, Any]:
    return {"key": key, "status": "ok", "latency_ratio": latency, "error": error, "size_bytes": size,
            "config": [{"pass": part, "options": {}} for part in key.split(",")]}


def test_ranking_uses_the_noise_band_and_deterministic_tie_breaks():
    budget = Budget(metric="cosine", max_error=0.01)
    records = [_record("a", 0.50, 0.004), _record("b", 0.49, 0.006), _record("c", 0.60, 0.001),
               _record("d", 0.30, 0.5)]
    assert [r["key"] for r in rank(records, budget)] == ["a", "b", "c"]  # a and b tie: lower error first
    assert best(records, Budget(metric="cosine", max_error=0.01, margin=0.0))["key"] == "b"
    assert [r["key"] for r in pareto_front(records, budget)] == ["d", "b", "a", "c"]


def test_without_the_margin_the_same_noise_does_change_the_winner(digits):
    winners = {_search(digits, SimulatedExecutor(noise_seed=seed, noise=0.015), margin=0.0).best["key"]
               for seed in range(4)}
    assert len(winners) > 1  # what the band protects against


def test_only_misses_that_could_win_are_refined():
    from onnxopt.passes import PRESETS, all_passes, cleanup_before
    from onnxopt.tune.space import BudgetLink, SearchSpace
    from onnxopt.tune.strategy import Strategy

    space = SearchSpace.from_registry(all_passes(), PRESETS["default"], BudgetLink("cosine", 0.005),
                                      cleanups=cleanup_before)
    budget = Budget(metric="cosine", max_error=0.005)
    configs = {c.key: c for c in (space.canonical([("qdq", {})]), space.canonical([("fp16", {})]))}
    strategy = Strategy(space, PRESETS, budget)

    def history(fp16_latency: float) -> list[dict[str, Any]]:
        return [{**_record("qdq", 0.45, 0.007), "config": configs["qdq"].as_list()},
                {**_record("fp16", fp16_latency, 1e-6), "config": configs["fp16"].as_list()}]

    assert [p.config.key for p in strategy._sensitivity(history(1.0), configs)] == [
        "qdq:error_metric=cosine:max_error=0.005"]
    assert strategy._sensitivity(history(0.46), configs) == []  # the fallback could only be slower than fp16
