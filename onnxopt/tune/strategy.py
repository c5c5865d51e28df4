"""Which configurations to try next: presets first, then sensitivity-guided refinement, then a model.

The search runs in batches. A batch is decided from the finished trials only — never from
which trial finished first — and its size is fixed by the strategy, not by how many
workers an executor has: so the same seed gives the same sequence of trials, and the same
best configuration, on ``local``, ``process:N`` and ``ray``.

1. **Start**: the cleanup-only baseline and every preset that belongs to the space (the
   presets are what a user would try by hand; the search must end no worse than them).
2. **Refine**, every later batch fills its slots in this order:
   - *sensitivity*: a trial that ran but missed the fidelity budget, and is clearly better
     on the objective than the best feasible trial so far, is retried with its pass's
     error-budget option set (``qdq``'s ``max_error``: the pass scores each layer's
     sensitivity and keeps the worst in float until the budget holds) — the user's budget
     first, a tighter one if that still misses on the evaluation DATA;
   - *neighbours* of the best trials: one option changed, or one pass switched, added or
     dropped (options in the order the pass declared them, ranked by the model below once
     it has data);
   - *model*: a pool of mutations and crossovers of the best trials plus random draws,
     ranked by the surrogate (``onnxopt.tune.surrogate``); the best-ranked fill the batch.
3. Stop at ``--trials``, at ``--time-budget`` (checked between batches), or when every
   move leads to a configuration already tried.

All randomness comes from a generator seeded with (seed, number of finished trials).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from onnxopt.tune.objective import Budget, rank
from onnxopt.tune.space import Config, SearchSpace
from onnxopt.tune.surrogate import Surrogate

DEFAULT_BATCH = 4
TOP_PARENTS = 2
POOL_MUTATIONS = 24
POOL_RANDOM = 16


@dataclass(frozen=True)
class Proposal:
    """A configuration to try, why, and the trials it came from."""

    config: Config
    phase: str
    parents: tuple[str, ...] = ()


def start_proposals(space: SearchSpace, presets: Mapping[str, list[str]]) -> list[Proposal]:
    """The baseline and the presets that are configurations of this space, deduplicated."""
    proposals = [Proposal(Config(), "baseline")]
    seen = {proposals[0].config.key}
    for name, items in presets.items():
        config = space.from_pipeline(items)
        if config is not None and config.key not in seen and space.valid(config):
            seen.add(config.key)
            proposals.append(Proposal(config, f"preset:{name}"))
    return proposals


def error_limit(budget: Budget, records: Sequence[dict[str, Any]]) -> float | None:
    """The fidelity budget as an error (accuracy floors become 'reference minus floor')."""
    limit = budget.error_budget()
    if limit is None and budget.metric == "accuracy" and budget.min_metric is not None:
        references = [r["reference_metric"] for r in records if r.get("reference_metric") is not None]
        if references:
            limit = references[0] - budget.min_metric
    return limit


class Strategy:
    """Deterministic proposals from the history of finished trials."""

    def __init__(self, space: SearchSpace, presets: Mapping[str, list[str]], budget: Budget, seed: int = 0,
                 batch_size: int = DEFAULT_BATCH) -> None:
        self.space = space
        self.budget = budget
        self.seed = seed
        self.batch_size = max(1, batch_size)
        self.start = start_proposals(space, presets)
        self.surrogate = Surrogate(space.features)

    def propose(self, history: Sequence[dict[str, Any]], configs: Mapping[str, Config], limit: int) -> list[Proposal]:
        """The next batch, cut to ``limit``; empty when the search has nothing new to try.

        The batch is composed at its full size and then cut, so a search with fewer trials
        is a prefix of one with more: a larger ``--trials`` replays the cached prefix.
        """
        return self._batch(history, configs)[:max(limit, 0)]

    def _batch(self, history: Sequence[dict[str, Any]], configs: Mapping[str, Config]) -> list[Proposal]:
        seen = set(configs) | {record["key"] for record in history}
        start = [p for p in self.start if p.config.key not in seen]
        if start:
            return start
        size = self.batch_size
        self._fit(history, configs)
        chosen: dict[str, Proposal] = {}

        def take(proposals: list[Proposal], slots: int) -> None:
            for proposal in proposals:
                if len(chosen) >= slots:
                    return
                if proposal.config.key not in seen and proposal.config.key not in chosen:
                    chosen[proposal.config.key] = proposal

        half = max(1, size // 2)
        take(self._sensitivity(history, configs), half)
        take(self._neighbors(history, configs), min(size, len(chosen) + half))
        take(self._model(history, configs, seen), size)
        take(self._neighbors(history, configs, parents=len(history)), size)
        return list(chosen.values())

    # --- the three sources --------------------------------------------------------------

    def _fit(self, history: Sequence[dict[str, Any]], configs: Mapping[str, Config]) -> None:
        samples = [(configs[r["key"]], self.budget.objective_value(r) if r.get("status") == "ok" else None,
                    r.get("error"), r.get("status") != "ok") for r in history if r["key"] in configs]
        self.surrogate.fit(samples, error_limit(self.budget, history))

    def _by_score(self, proposals: list[Proposal]) -> list[Proposal]:
        scores = self.surrogate.score([p.config for p in proposals])
        order = sorted(range(len(proposals)), key=lambda i: (scores[i], i))
        return [proposals[i] for i in order]

    def _sensitivity(self, history: Sequence[dict[str, Any]], configs: Mapping[str, Config]) -> list[Proposal]:
        """Budget misses retried with their pass's error budget, lowest objective first."""
        limit = error_limit(self.budget, history)
        misses = [r for r in history if r.get("status") == "ok" and r["key"] in configs
                  and self.budget.objective_value(r) is not None
                  and any(v.startswith(("error", self.budget.metric)) for v in self.budget.violations(r))
                  and not any(v.startswith(("latency", "size")) for v in self.budget.violations(r))]
        if limit is not None:  # hopeless misses (ten times over) are not worth a trial each
            misses = [r for r in misses if r.get("error") is not None and r["error"] <= 10 * max(limit, 1e-12)]
        # Keeping layers in float only ever costs speed and size: a miss that is not clearly
        # better than the best feasible trial already cannot win after its fallback.
        leader = next(iter(rank(history, self.budget)), None)
        if leader is not None:
            ceiling = self.budget.objective_value(leader) / (1 + (self.budget.margin if self.budget.noisy() else 0.0))
            misses = [r for r in misses if self.budget.objective_value(r) < ceiling]
        misses.sort(key=lambda r: (self.budget.objective_value(r), r["key"]))
        return [Proposal(child, "sensitivity", (record["key"],))
                for record in misses for child in self.space.budget_children(configs[record["key"]])]

    def _parents(self, history: Sequence[dict[str, Any]], configs: Mapping[str, Config], count: int) -> list[dict]:
        ranked = [r for r in rank(history, self.budget) if r["key"] in configs]
        if ranked:
            return ranked[:count]
        finished = [r for r in history
                    if r.get("status") == "ok" and r.get("error") is not None and r["key"] in configs]
        return sorted(finished, key=lambda r: (r["error"], r["key"]))[:count]

    def _neighbors(self, history: Sequence[dict[str, Any]], configs: Mapping[str, Config],
                   parents: int = TOP_PARENTS) -> list[Proposal]:
        proposals = []
        for parent in self._parents(history, configs, parents):
            moves = self.space.neighbors(configs[parent["key"]])
            neighbors = [Proposal(c, "neighbor", (parent["key"],)) for c in moves]
            proposals.extend(self._by_score(neighbors) if self.surrogate.fitted else neighbors)
        return proposals

    def _model(self, history: Sequence[dict[str, Any]], configs: Mapping[str, Config],
               seen: set[str]) -> list[Proposal]:
        rng = np.random.default_rng([self.seed, len(history)])
        parents = self._parents(history, configs, 4)
        pool: dict[str, Proposal] = {}
        for index in range(POOL_MUTATIONS):
            if not parents:
                break
            parent = parents[index % len(parents)]
            child = self.space.mutate(configs[parent["key"]], rng, moves=1 + int(rng.integers(2)))
            if len(parents) > 1 and rng.random() < 0.3:
                other = parents[int(rng.integers(len(parents)))]
                child = self.space.crossover(child, configs[other["key"]], rng)
                pool.setdefault(child.key, Proposal(child, "model", (parent["key"], other["key"])))
            else:
                pool.setdefault(child.key, Proposal(child, "model", (parent["key"],)))
        for _ in range(POOL_RANDOM):
            child = self.space.random(rng)
            pool.setdefault(child.key, Proposal(child, "model"))
        fresh = [p for p in pool.values() if p.config.key not in seen and self.space.valid(p.config)]
        if self.surrogate.fitted:
            return self._by_score(fresh)
        return [fresh[i] for i in rng.permutation(len(fresh))]
