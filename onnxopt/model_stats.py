"""Size and shape counters of a model, for reports and ``inspect``.

Counting never loads weights: sizes come from the lazy values' metadata.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import onnx_graphsurgeon as gs

from onnxopt.graph_walk import iter_all_graphs
from onnxopt.model_io import Model, constant_nbytes


def dtype_name(dtype: object) -> str:
    """A readable name for a numpy or onnx dtype."""
    try:
        return np.dtype(dtype).name  # type: ignore[arg-type]
    except TypeError:
        return str(dtype)


def iter_constants(model: Model) -> list[gs.Constant]:
    """Every distinct weight tensor: initializers of all graphs and Constant-node values."""
    seen: dict[int, gs.Constant] = {}
    for graph in iter_all_graphs(model.graph):
        for tensor in graph.tensors().values():
            if isinstance(tensor, gs.Constant):
                seen.setdefault(id(tensor), tensor)
        for node in graph.nodes:
            if node.op == "Constant" and isinstance(node.attrs.get("value"), gs.Constant):
                seen.setdefault(id(node.attrs["value"]), node.attrs["value"])
    return list(seen.values())


@dataclass
class ModelCounts:
    """Nodes, weights and bytes of a model (all graphs and functions included)."""

    nodes: int
    initializers: int
    parameters: int
    weight_bytes: int
    ops: dict[str, int]
    weights_by_dtype: dict[str, int] = field(default_factory=dict)  # bytes per weight dtype
    weights_by_op: dict[str, int] = field(default_factory=dict)  # bytes per op type of a weight's first reader

    def as_dict(self) -> dict[str, object]:
        return {
            "nodes": self.nodes,
            "initializers": self.initializers,
            "parameters": self.parameters,
            "weight_bytes": self.weight_bytes,
        }


def count_model(model: Model) -> ModelCounts:
    """Counts for reports: nodes, initializers, parameters, weight bytes, op histogram."""
    ops: Counter[str] = Counter()
    nodes = 0
    initializers = 0
    for graph in iter_all_graphs(model.graph):
        for node in graph.nodes:
            nodes += 1
            ops[f"{node.domain}::{node.op}" if node.domain else node.op] += 1
        initializers += sum(1 for t in graph.tensors().values() if isinstance(t, gs.Constant))
    constants = iter_constants(model)
    parameters = sum(int(np.prod(c.shape)) if c.shape is not None else 0 for c in constants)
    sizes = {id(c): constant_nbytes(c) for c in constants}
    by_dtype: Counter[str] = Counter()
    for constant in constants:
        by_dtype[dtype_name(constant.dtype)] += sizes[id(constant)]
    return ModelCounts(nodes, initializers, parameters, sum(sizes.values()), dict(ops.most_common()),
                       dict(by_dtype.most_common()), _bytes_by_reader(model, sizes))


def _bytes_by_reader(model: Model, sizes: dict[int, int]) -> dict[str, int]:
    """Weight bytes by the op type of the first node that reads each weight (a Constant node holds its own)."""
    by_op: Counter[str] = Counter()
    seen: set[int] = set()
    for graph in iter_all_graphs(model.graph):
        for node in graph.nodes:
            op = f"{node.domain}::{node.op}" if node.domain else node.op
            held = [node.attrs.get("value")] if node.op == "Constant" else []
            for tensor in [*node.inputs, *held]:
                key = id(tensor)
                if key in sizes and key not in seen:
                    seen.add(key)
                    by_op[op] += sizes[key]
    unread = sum(size for key, size in sizes.items() if key not in seen)
    if unread:
        by_op["(not read)"] += unread
    return dict(by_op.most_common())
