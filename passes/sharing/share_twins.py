"""share-twins: one stored copy of a weight that the file holds twice in different layouts.

Exporters write a tied parameter once per use in the layout that use wants: PyTorch's
exporter stores GPT-2's language-model head as the token-embedding table transposed, a
second 38.6 M-parameter tensor (154 MB at GPT-2 small) with the same values. Byte-identical
copies are ``dedup-initializers``' job; this pass finds copies that are transposed,
reshaped or both (``twin_search``), keeps one, and lets the readers of the other read the
kept one (``twin_rewrite``), bit-exact.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

import onnx_graphsurgeon as gs

from onnxopt.graph_edit import all_tensor_names, iter_trees
from onnxopt.graph_walk import toposort_all
from onnxopt.initializer_uses import InitializerUse, collect_initializers
from onnxopt.model_io import Model, constant_nbytes
from onnxopt.pass_api import Contract, Pass, PassContext, PassOptions, PassResult
from onnxopt.passes.sharing.twin_rewrite import ReaderPlan, apply_plan, plan_readers
from onnxopt.passes.sharing.twin_search import Relation, SearchCounters, corner_key, find_relation, shape_of
from onnxopt.shape_info import TensorInfo, infer_tensor_infos, known_shape
from onnxopt.tensor_content import content_key, element_size, multiset_digest

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ShareTwinsOptions(PassOptions):
    """``min_tensor_bytes``: smaller initializers are not searched (a Transpose node costs
    about as much as a tiny tensor saves). ``rebuild_for_compute``: also share a pair when a
    MatMul/Conv/… would read the rebuilt (Transpose/Reshape) tensor; exact once onnxruntime
    folds the rebuild at session load (graph optimizations on), but with optimizations off
    its kernel for a computed weight may round differently, so off by default."""

    min_tensor_bytes: int = 1024
    rebuild_for_compute: bool = False


@dataclass
class _Choice:
    keeper: InitializerUse
    twin: InitializerUse
    relation: Relation
    plan: ReaderPlan

    @property
    def cost(self) -> int:
        return self.plan.nodes_added(self.relation)

    @property
    def rebuilds_for_compute(self) -> bool:
        """A MatMul/Conv/… would read a computed tensor where it read an initializer."""
        return self.plan.compute_reads > 0


class ShareTwins(Pass):
    """Keep one copy of initializers that are transposes and/or reshapes of each other (exact).

    Candidates must agree on element type, count, first and last element and an
    order-independent streamed hash before any layout is tried; a twin is proven by a full
    byte comparison of one tensor against the other read in the permuted order (one tensor
    in memory, the other streamed), never by a hash. Readers then take the kept tensor
    through Gemm's transA/transB, a composed Transpose or a MatMul turned Gemm where that
    is free, else through one Transpose/Reshape node (folded by onnxruntime at session
    load). Of a pair, the tensor kept is the one that needs fewer new nodes. Unsafe: never —
    graph outputs keep their names, graph-input defaults (overridable) are never shared,
    and a twin is only replaced where the kept tensor is visible. Walks If/Loop/Scan
    bodies; local functions hold no initializers and their Constant nodes are left alone.
    """

    name = "share-twins"
    contract = Contract.EXACT
    walks_subgraphs = True
    walks_functions = False
    Options = ShareTwinsOptions

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        options: ShareTwinsOptions = self.options  # type: ignore[assignment]
        counters = SearchCounters()
        stats: dict[str, object] = {"twins_shared": 0, "bytes_saved": 0, "nodes_added": 0, "gemm_flipped": 0,
                                    "matmul_to_gemm": 0, "transposes_composed": 0}
        decisions: list[dict[str, object]] = []
        ranks = _LazyRanks(model)
        taken = all_tensor_names(model.graph)
        overridable = set(model.initializer_inputs)
        for tree in iter_trees(model.graph, include_functions=False):
            candidates = [each for each in collect_initializers(tree, overridable)
                          if _searchable(each.constant, options.min_tensor_bytes)]
            for group in _narrowed_groups(candidates, counters):
                for choice in self._choices(group, counters, ranks, options.rebuild_for_compute):
                    added = apply_plan(choice.twin.home, choice.twin.constant, choice.keeper.constant,
                                       choice.relation, choice.plan, taken)
                    saved = constant_nbytes(choice.twin.constant)
                    stats["twins_shared"] += 1
                    stats["bytes_saved"] += saved
                    stats["nodes_added"] += added
                    for key, value in choice.plan.free_rewrites().items():
                        stats[key] += value
                    decisions.append({"pass": self.name, "tensor": choice.twin.constant.name,
                                      "kept": choice.keeper.constant.name, "relation": choice.relation.describe(),
                                      "bytes_saved": saved, "nodes_added": added})
                    logger.info("shared %s as %s of %s (%d bytes, %d nodes added)", choice.twin.constant.name,
                                choice.relation.describe(), choice.keeper.constant.name, saved, added)
        if stats["twins_shared"]:
            toposort_all(model.graph)
        stats.update({"tensors_hashed": counters.tensors_hashed, "sample_rejections": counters.sample_rejections,
                      "full_compares": counters.full_compares,
                      "full_compare_failures": counters.full_compare_failures,
                      "twins_left_for_compute_readers": counters.left_for_compute_readers})
        if decisions:
            stats["decisions"] = decisions
        return PassResult(bool(stats["twins_shared"]), stats, counters.notes)

    def _choices(self, group: list[InitializerUse], counters: SearchCounters, ranks: _LazyRanks,
                 rebuild_for_compute: bool) -> Iterable[_Choice]:
        """Pairs of one group to share, greedily: each tensor is compared with the ones after it.

        Outer scopes and graph outputs come first, so they are the first candidates to keep;
        of a pair, the tensor kept is the one whose twin's readers need fewer new nodes
        (ties keep the first).
        """
        group = sorted(group, key=lambda c: (not c.protected, len(c.home.path), c.order))
        merged: set[int] = set()
        for index, pivot in enumerate(group):
            if id(pivot) in merged:
                continue
            for other in group[index + 1 :]:
                if id(other) in merged:
                    continue
                possible = _both_ways(pivot, other, counters, ranks)
                found = [choice for choice in possible if rebuild_for_compute or not choice.rebuilds_for_compute]
                if not found:
                    if possible:
                        counters.left_for_compute_readers += 1
                        counters.notes.append(f"{pivot.constant.name} and {other.constant.name} are twins but not "
                                              "shared: a MatMul/Conv/… would read the rebuilt tensor "
                                              "(share-twins:rebuild_for_compute=true allows it)")
                    continue
                best = min(found, key=lambda choice: choice.cost)
                merged.add(id(best.twin))
                yield best
                if best.twin is pivot:
                    break


def _both_ways(first: InitializerUse, second: InitializerUse, counters: SearchCounters,
               ranks: _LazyRanks) -> list[_Choice]:
    """Keeping ``first`` (``second`` its twin) and the other way round, where each is possible.

    One full comparison proves the pair; the reverse relation is derived from it when it
    has the same form, else searched.
    """
    relation = find_relation(first.constant, second.constant, counters)
    if relation is not None:
        reverse = relation.inverse()
        if reverse is None and not first.protected and first.home.sees(second.home):
            reverse = find_relation(second.constant, first.constant, counters)
    else:
        reverse = find_relation(second.constant, first.constant, counters)
    choices = []
    for keeper, twin, how in ((first, second, relation), (second, first, reverse)):
        if how is not None and not twin.protected and twin.home.sees(keeper.home):
            choices.append(_Choice(keeper, twin, how, plan_readers(twin.home, twin.constant, how, ranks)))
    return choices


def _searchable(constant: gs.Constant, min_bytes: int) -> bool:
    return (content_key(constant) is not None and element_size(constant) is not None
            and constant_nbytes(constant) >= max(1, min_bytes))


def _narrowed_groups(candidates: list[InitializerUse], counters: SearchCounters) -> Iterable[list[InitializerUse]]:
    """Groups that agree on type and count, then on first/last element, then on the multiset digest."""
    by_count: dict[tuple, list[InitializerUse]] = defaultdict(list)
    for candidate in candidates:
        key = content_key(candidate.constant)
        assert key is not None
        by_count[(key[0], math.prod(key[1]))].append(candidate)
    for (_, count), same_count in by_count.items():
        one_shape = len({shape_of(c.constant) for c in same_count}) == 1
        if len(same_count) < 2 or (one_shape and _all_square_free(same_count)):
            continue
        by_corner: dict[bytes, list[InitializerUse]] = defaultdict(list)
        for candidate in same_count:
            by_corner[corner_key(candidate.constant, count)].append(candidate)
        for same_corner in by_corner.values():
            if len(same_corner) < 2:
                continue
            by_digest: dict[str | None, list[InitializerUse]] = defaultdict(list)
            for candidate in same_corner:
                by_digest[multiset_digest(candidate.constant)].append(candidate)
                counters.tensors_hashed += 1
            for digest, same_digest in by_digest.items():
                if digest is not None and len(same_digest) > 1:
                    yield same_digest


def _all_square_free(group: list[InitializerUse]) -> bool:
    """True when tensors of this one shape cannot be transposes of each other (no two axes of equal size > 1).

    Same-shaped tensors can only be twins through a transpose that keeps the shape, which
    needs two axes of equal length; otherwise they are plain duplicates or unrelated.
    """
    dims = [dim for dim in shape_of(group[0].constant) if dim != 1]
    return len(set(dims)) == len(dims)


class _LazyRanks:
    """Ranks of activations, from shape inference run only when a MatMul first asks."""

    def __init__(self, model: Model) -> None:
        self.model = model
        self.infos: dict[str, TensorInfo] | None = None

    def __call__(self, tensor: gs.Tensor) -> int | None:
        declared = getattr(tensor, "shape", None)
        if declared is not None:
            return len(declared)
        if self.infos is None:
            self.infos = infer_tensor_infos(self.model)
        shape = known_shape(tensor, self.infos)
        return None if shape is None else len(shape)
