"""The search space: built from every pass's search_space() hook, canonical, with presets as starting points."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest

from onnxopt.errors import BadInputError
from onnxopt.pass_api import Contract, ErrorBudget, Pass, PassOptions, PassResult, SearchSpec
from onnxopt.passes import PRESETS, all_passes, cleanup_before
from onnxopt.tune.space import BudgetLink, SearchSpace
from onnxopt.tune.strategy import start_proposals

COSINE = BudgetLink("cosine", 0.005)


def space(link: BudgetLink = COSINE, **kwargs) -> SearchSpace:
    return SearchSpace.from_registry(all_passes(), PRESETS["default"], link, cleanups=cleanup_before, **kwargs)


@pytest.mark.parametrize("name", sorted(all_passes()))
def test_every_registered_hook_names_real_options_with_valid_values(name: str):
    cls = all_passes()[name]
    spec = cls.search_space()
    if spec is None:
        assert cls.contract is Contract.EXACT
        return
    for option, values in spec.options.items():
        assert values, option
        for value in values:  # every candidate builds the pass's options (the one source of truth)
            cls.make_options({option: value})
    for option, condition in spec.conditions.items():
        assert option in spec.options and set(condition) <= set(spec.options) | {"mode"}
    if spec.error_budget is not None:
        cls.make_options({spec.error_budget.option: 0.01})


def test_the_space_holds_the_lossy_passes_grouped_and_the_presets_map_into_it():
    tuned = space()
    assert {"fp16", "qdq", "weight-only", "quantize-embeddings"} <= set(tuned.passes)
    assert not {"eliminate-dead", "fuse-conv-bn"} & set(tuned.passes)  # the cleanups always run
    assert {s.name for s in tuned.groups["precision"]} == {"fp16", "qdq", "weight-only"}
    starts = {p.phase: p.config.key for p in start_proposals(tuned, PRESETS)}
    assert starts["baseline"] == "cleanup"
    assert starts["preset:int8"] == "qdq,quantize-embeddings"
    assert starts["preset:int4"] == "weight-only" and starts["preset:fp16"] == "fp16"
    assert "preset:int8-tensorrt" not in starts  # pins another target
    # Trials run the cleanups the presets run: no twin sharing before passes that quantize weights.
    int8 = [f"{step.name}" for step in tuned.pipeline(tuned.canonical([("qdq", {})]))]
    assert int8 == [*PRESETS["int8"][:-2], "qdq"] and "share-twins" not in int8
    assert "share-twins" in [step.name for step in tuned.pipeline(tuned.canonical([("fp16", {})]))]
    assert "share-twins" not in cleanup_before(["sparsify:pattern=2:4"])


def test_canonical_configurations_drop_defaults_and_options_whose_conditions_fail():
    tuned = space()
    spelled = tuned.canonical([("qdq", {"mode": "dynamic", "method": "entropy", "per_channel": "true"})])
    assert spelled.key == "qdq:mode=dynamic"  # method only matters for static; per_channel=true is the default
    static = tuned.canonical([("qdq", {"method": "minmax", "percentile": 99.99})])
    assert static.key == "qdq:method=minmax"  # percentile only matters for method=percentile
    order = tuned.canonical([("quantize-embeddings", {}), ("fp16", {})])
    assert order.passes == ("fp16", "quantize-embeddings")  # stage order
    with pytest.raises(BadInputError, match="alternatives"):
        tuned.canonical([("fp16", {}), ("qdq", {})])


def test_the_budget_reaches_passes_that_take_one():
    qdq = space().passes["qdq"]
    assert qdq.values["max_error"] == (0.0, 0.005, 0.0025)
    budgeted = space().canonical([("qdq", {"max_error": 0.005})])
    assert budgeted.key == "qdq:error_metric=cosine:max_error=0.005"
    children = space().budget_children(space().canonical([("qdq", {})]))
    assert [c.key for c in children] == ["qdq:error_metric=cosine:max_error=0.005"]  # the user's budget first
    tighter = space().budget_children(children[0])
    assert [c.key for c in tighter] == ["qdq:error_metric=cosine:max_error=0.0025"]  # then a tighter one
    assert space().budget_children(tighter[0]) == []
    accuracy = SearchSpace.from_registry(all_passes(), PRESETS["default"], BudgetLink("accuracy", None))
    assert accuracy.passes["qdq"].values["max_error"] == (0.0, 0.05, 0.02) and not accuracy.passes["qdq"].linked
    user = SearchSpace.from_registry(all_passes(), PRESETS["default"], BudgetLink("python:mod:fn", 0.1))
    assert user.passes["qdq"].linked == {"metric": "mod:fn"}


def test_grid_counts_distinct_configurations_and_moves_stay_in_the_space():
    small = space(include=["fp16", "quantize-embeddings"])
    assert small.grid_size() == (1 + 2) * (1 + 3) == len({c.key for c in small.grid()})
    tuned = space()
    assert tuned.grid_size() > 500
    start = tuned.canonical([("qdq", {})])
    neighbors = tuned.neighbors(start)
    keys = [c.key for c in neighbors]
    assert start.key not in keys and len(keys) == len(set(keys))
    qdq_moves = [key for key in keys if key.startswith("qdq:")]
    assert qdq_moves[0] == "qdq:mode=dynamic"  # declared order: the most promising option first
    assert {"fp16", "weight-only", "cleanup", "qdq,quantize-embeddings"} <= set(keys)
    rng = np.random.default_rng(0)
    for _ in range(20):
        config = tuned.mutate(tuned.random(rng), rng, moves=2)
        assert tuned.canonical(config.steps) == config


def test_overrides_fix_an_option_and_take_it_out_of_the_search():
    fixed = space(overrides={"qdq": {"only_if_faster": "false", "per_channel": "false"}})
    assert "per_channel" not in fixed.passes["qdq"].values
    assert fixed.canonical([("qdq", {})]).key == "qdq:only_if_faster=false:per_channel=false"
    with pytest.raises(BadInputError, match="unknown pass"):
        space(include=["no-such-pass"])


# --- a pass added later declares its own space and is picked up --------------------------


@dataclass(frozen=True)
class _PruneOptions(PassOptions):
    ratio: float = field(default=0.0, metadata={"search": (0.0, 0.25, 0.5)})
    structured: bool = field(default=True, metadata={"search": (True, False)})
    max_error: float = 0.0


class _Prune(Pass):
    """A stand-in for a pruning pass that declares its search space on its options' fields."""

    name = "prune-test"
    contract = Contract.LOSSY
    Options = _PruneOptions

    def run(self, model, ctx) -> PassResult:  # pragma: no cover - never run here
        return PassResult(False)


class _Cluster(_Prune):
    """A stand-in that overrides the hook: its own stage, an error budget."""

    name = "cluster-test"

    @classmethod
    def search_space(cls) -> SearchSpec:
        budget = ErrorBudget(metrics=("rel_l2",), fractions=(1.0,))
        return SearchSpec(options={"ratio": (0.1, 0.2)}, stage=20, error_budget=budget)


def test_passes_added_later_declare_their_own_space():
    registry = {**all_passes(), "prune-test": _Prune, "cluster-test": _Cluster}
    tuned = SearchSpace.from_registry(registry, PRESETS["default"], BudgetLink("rel_l2", 0.02))
    assert tuned.passes["prune-test"].values == {"ratio": (0.0, 0.25, 0.5), "structured": (True, False)}
    assert tuned.passes["cluster-test"].values["max_error"] == (0.0, 0.02)
    config = tuned.canonical([("qdq", {}), ("cluster-test", {"ratio": 0.2})])
    assert config.passes == ("cluster-test", "qdq")  # stage 20 runs before precision (60)
    assert tuned.grid_size() > space().grid_size() * 6
