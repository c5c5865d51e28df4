"""eliminate-dead: drop what no output depends on.

Nodes whose results nobody reads, the initializers only they read, local functions that
nothing calls and opset imports that no node uses. Other passes leave such debris behind
(a fused BatchNormalization's parameters, the producer of a folded constant), and
exporters emit it too; removing it is always exact.
"""

from __future__ import annotations

import logging
from collections import Counter

import onnx_graphsurgeon as gs

from onnxopt.graph_edit import (
    Scope,
    calls_function,
    function_ids,
    is_standard_op,
    iter_trees,
    node_domain,
    node_subgraphs,
    remove_nodes,
    use_counts,
)
from onnxopt.graph_walk import consumers_by_name, iter_all_graphs
from onnxopt.model_io import Model, constant_nbytes
from onnxopt.pass_api import Contract, Pass, PassContext, PassResult

logger = logging.getLogger(__name__)

_DEFAULT_DOMAINS = ("", "ai.onnx")


def _used_constants(root: gs.Graph) -> dict[str, gs.Constant]:
    """Initializers read in ``root`` or its subgraphs, by name (a copied subgraph may hold its own object)."""
    found: dict[str, gs.Constant] = {}
    for graph in iter_all_graphs(root, include_functions=False):
        for tensor in [*(t for node in graph.nodes for t in node.inputs), *graph.outputs]:
            if isinstance(tensor, gs.Constant):
                found.setdefault(tensor.name, tensor)
    return found


class EliminateDead(Pass):
    """Remove unused nodes, initializers, local functions and opset imports.

    A node is dead when none of its outputs is read - by a node of its graph, by a nested
    If/Loop/Scan body (outer-scope names count as uses) or as a graph output. Graph outputs
    and real graph inputs are never removed; subgraph and function inputs and outputs are
    kept because they bind by position. Nodes of custom domains are kept even when unused
    (onnx cannot vouch that they have no side effects), as are nodes calling a local
    function whose body contains one. Initializers that were listed as graph inputs (IR < 4)
    are already dropped from the inputs on import, so their removal needs no extra step.
    Walks If/Loop/Scan bodies and local functions.
    """

    name = "eliminate-dead"
    contract = Contract.EXACT
    walks_subgraphs = True
    walks_functions = True

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        stats: Counter = Counter(
            nodes_removed=0, initializers_removed=0, bytes_removed=0, functions_removed=0, opset_imports_removed=0
        )
        graph = model.graph
        self._remove_unused_functions(graph, stats)
        pure_functions = self._pure_functions(graph)
        for tree in iter_trees(graph):
            root = tree[0].graph
            before = _used_constants(root)
            self._remove_dead_nodes(tree, pure_functions, stats)
            after = _used_constants(root)
            for key, constant in before.items():
                if key not in after:
                    stats["initializers_removed"] += 1
                    stats["bytes_removed"] += constant_nbytes(constant)
        self._remove_unused_functions(graph, stats)
        self._remove_unused_imports(graph, stats)
        modified = any(stats[key] for key in ("nodes_removed", "functions_removed", "opset_imports_removed"))
        return PassResult(modified, dict(stats))

    # --- nodes --------------------------------------------------------------------------

    def _pure_functions(self, graph: gs.Graph) -> set[tuple[str, str]]:
        """Local functions whose bodies (and the functions they call) use only standard ops."""
        functions = {(f.domain or "", f.name): f for f in graph.functions}
        pure: set[tuple[str, str]] = set()
        changed = True
        while changed:
            changed = False
            for key, function in functions.items():
                if key in pure:
                    continue
                nodes = [node for each in iter_all_graphs(function, include_functions=False) for node in each.nodes]
                if all(is_standard_op(node) or (node_domain(node), node.op) in pure for node in nodes):
                    pure.add(key)
                    changed = True
        return pure

    def _removable(self, node: gs.Node, counts: Counter, pure_functions: set[tuple[str, str]]) -> bool:
        named = [tensor.name for tensor in node.outputs if tensor.name]
        if not named or any(counts[name] > 0 for name in named):
            return False
        return is_standard_op(node) or (node_domain(node), node.op) in pure_functions

    def _remove_dead_nodes(self, tree: list[Scope], pure_functions: set[tuple[str, str]], stats: Counter) -> None:
        root = tree[0].graph
        counts = use_counts(root)
        changed = True
        while changed:
            changed = False
            # Inner graphs first, so a body's dead nodes stop counting as readers of outer tensors.
            for graph in reversed(list(iter_all_graphs(root, include_functions=False))):
                doomed: list[gs.Node] = []
                for node in reversed(graph.nodes):
                    if not self._removable(node, counts, pure_functions):
                        continue
                    doomed.append(node)
                    for tensor in node.inputs:
                        if tensor.name:
                            counts[tensor.name] -= 1
                    for sub in node_subgraphs(node):
                        counts.subtract(consumers_by_name(sub))
                if doomed:
                    stats["nodes_removed"] += remove_nodes(graph, doomed)
                    changed = True
                    break  # the list of nested graphs changed when a node holding a body went away

    # --- functions and imports ----------------------------------------------------------

    def _remove_unused_functions(self, graph: gs.Graph, stats: Counter) -> None:
        known = function_ids(graph)
        by_id = {(f.domain or "", f.name): f for f in graph.functions}
        called: set[tuple[str, str]] = set()
        pending = [graph]
        while pending:
            body = pending.pop()
            for each in iter_all_graphs(body, include_functions=False):
                for node in each.nodes:
                    key = (node_domain(node), node.op)
                    if calls_function(node, known) and key not in called:
                        called.add(key)
                        pending.append(by_id[key])
        unused = [f for f in graph.functions if (f.domain or "", f.name) not in called]
        if unused:
            stats["functions_removed"] += len(unused)
            graph.functions = [f for f in graph.functions if (f.domain or "", f.name) in called]

    def _remove_unused_imports(self, graph: gs.Graph, stats: Counter) -> None:
        def used_domains(root: gs.Graph) -> set[str]:
            return {node_domain(n) for each in iter_all_graphs(root, include_functions=False) for n in each.nodes}

        model_used = used_domains(graph) | {d for f in graph.functions for d in used_domains(f)}
        owners: list[tuple[gs.Graph, set[str]]] = [(graph, model_used)]
        shared = graph.import_domains
        for function in graph.functions:
            if function.import_domains is not shared:
                owners.append((function, used_domains(function)))
        for owner, used in owners:
            imports = list(owner.import_domains or [])
            kept = [entry for entry in imports if entry.domain in _DEFAULT_DOMAINS or entry.domain in used]
            if len(kept) != len(imports):
                stats["opset_imports_removed"] += len(imports) - len(kept)
                owner.import_domains = kept
