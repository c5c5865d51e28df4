"""dedup-initializers: one copy of each distinct constant.

Exported models often carry the same weight twice (tied embeddings, shared biases, the
same constant emitted per layer). Merging them shrinks the file without changing a bit.
"""

from __future__ import annotations

import logging
from collections import defaultdict

import onnx_graphsurgeon as gs

from onnxopt.graph_edit import (
    Scope,
    constant_node_value,
    index_of,
    iter_scopes,
    iter_trees,
    output_names,
    remove_nodes,
    replace_uses,
    subgraph_holders,
)
from onnxopt.initializer_uses import InitializerUse, collect_initializers
from onnxopt.model_io import Model, constant_nbytes
from onnxopt.pass_api import Contract, Pass, PassContext, PassResult
from onnxopt.tensor_content import array_key_bytes, content_digest, content_key, content_sample, contents_equal

logger = logging.getLogger(__name__)


class DedupInitializers(Pass):
    """Merge initializers and Constant nodes whose element type, shape and bytes are identical.

    Candidates are grouped by (type, shape), then by their first and last bytes, then by
    a streamed hash, and every merge is confirmed by comparing the bytes chunk by chunk -
    a hash alone never merges anything, and external tensors are streamed, not loaded.
    A constant is replaced by an equal one only where that one is visible (same graph or
    an enclosing graph). A graph output is never renamed: when one of two equal constants
    is an output, it is the one kept, and two outputs are both kept. Walks If/Loop/Scan
    bodies and local functions (each function body is deduplicated on its own).
    """

    name = "dedup-initializers"
    contract = Contract.EXACT
    walks_subgraphs = True
    walks_functions = True

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        stats = {
            "initializers_merged": 0,
            "constant_nodes_merged": 0,
            "bytes_saved": 0,
            "tensors_hashed": 0,
            "hash_matches_with_different_bytes": 0,
        }
        overridable = set(model.initializer_inputs)  # graph-input defaults: the caller may pass other values
        for tree in iter_trees(model.graph):
            self._merge_initializers(tree, stats, overridable)
        for scope in iter_scopes(model.graph):
            self._merge_constant_nodes(scope, stats)
        modified = stats["initializers_merged"] > 0 or stats["constant_nodes_merged"] > 0
        return PassResult(modified, stats)

    # --- initializers -------------------------------------------------------------------

    def _merge_initializers(self, tree: list[Scope], stats: dict, overridable: set[str]) -> None:
        by_key: dict[tuple, list[InitializerUse]] = defaultdict(list)
        holders: dict[int, list[gs.Node]] = {}  # per home graph, computed when first needed
        for candidate in collect_initializers(tree, overridable):
            key = content_key(candidate.constant)
            if key is not None:
                by_key[key].append(candidate)
        for group in by_key.values():
            if len(group) < 2:
                continue  # a unique (type, shape) cannot have a duplicate: never read its bytes
            by_sample: dict[bytes, list[InitializerUse]] = defaultdict(list)
            for candidate in group:
                by_sample[content_sample(candidate.constant)].append(candidate)
            for same_sample in by_sample.values():
                if len(same_sample) < 2:
                    continue  # its first and last bytes differ from every other: no full read
                by_digest: dict[str, list[InitializerUse]] = defaultdict(list)
                for candidate in same_sample:
                    by_digest[content_digest(candidate.constant)].append(candidate)
                    stats["tensors_hashed"] += 1
                for same_hash in by_digest.values():
                    if len(same_hash) > 1:
                        self._merge_group(same_hash, stats, holders)

    def _merge_group(self, group: list[InitializerUse], stats: dict, holders: dict[int, list[gs.Node]]) -> None:
        # Model outputs first (they must be the survivors), then outer scopes before inner ones.
        group.sort(key=lambda c: (not c.protected, len(c.home.path), c.order))
        keepers: list[InitializerUse] = []
        for candidate in group:
            keeper = None
            if not candidate.protected:
                for other in keepers:
                    if not candidate.home.sees(other.home):
                        continue
                    if contents_equal(other.constant, candidate.constant):
                        keeper = other
                        break
                    stats["hash_matches_with_different_bytes"] += 1
            if keeper is None:
                keepers.append(candidate)
                continue
            saved = constant_nbytes(candidate.constant)
            home = candidate.home
            if id(home.graph) not in holders:
                holders[id(home.graph)] = subgraph_holders(home.graph)
            replace_uses(home.graph, candidate.constant, keeper.constant, holders[id(home.graph)])
            stats["initializers_merged"] += 1
            stats["bytes_saved"] += saved
            logger.debug("merged %s into %s (%d bytes)", candidate.constant.name, keeper.constant.name, saved)

    # --- Constant nodes -----------------------------------------------------------------

    def _merge_constant_nodes(self, scope: Scope, stats: dict) -> None:
        graph = scope.graph
        # A graph output must keep naming a tensor of its own graph: those nodes survive.
        protected = output_names(graph)
        holders = subgraph_holders(graph)
        first_by_key: dict[tuple, list[gs.Node]] = defaultdict(list)
        doomed: list[gs.Node] = []
        for node in list(graph.nodes):
            if len(node.outputs) != 1 or not node.outputs[0].name:
                continue
            key = _constant_node_key(node)
            if key is None:
                continue
            keeper = None
            for other in first_by_key[key]:
                if _constant_node_values_equal(other, node):
                    keeper = other
                    break
            if keeper is None:
                first_by_key[key].append(node)
                continue
            out, kept_out = node.outputs[0], keeper.outputs[0]
            if out.name in protected:
                if kept_out.name in protected:
                    continue  # two model outputs: both names must survive
                # Keep the node whose output is a model output; it has no inputs, so it may move up.
                replace_uses(graph, kept_out, out, holders)
                nodes = list(graph.nodes)
                del nodes[index_of(nodes, node)]
                nodes.insert(index_of(nodes, keeper), node)
                graph.nodes = nodes
                doomed.append(keeper)
                first_by_key[key][index_of(first_by_key[key], keeper)] = node
            else:
                replace_uses(graph, out, kept_out, holders)
                doomed.append(node)
            stats["constant_nodes_merged"] += 1
        remove_nodes(graph, doomed)


def _constant_node_key(node: gs.Node) -> tuple | None:
    value = constant_node_value(node)
    if value is None:
        return None
    if isinstance(value, gs.Constant):
        key = content_key(value)
        return None if key is None else ("tensor", key, content_digest(value))
    return ("array", *array_key_bytes(value))


def _constant_node_values_equal(first: gs.Node, second: gs.Node) -> bool:
    a, b = constant_node_value(first), constant_node_value(second)
    if isinstance(a, gs.Constant) and isinstance(b, gs.Constant):
        return contents_equal(a, b)
    if isinstance(a, gs.Constant) or isinstance(b, gs.Constant):
        return False
    return array_key_bytes(a) == array_key_bytes(b)
