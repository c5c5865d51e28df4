"""Layer-wise distillation from the teacher: statistics of a layer, and refits of layers nobody pruned.

Once a layer is pruned, every layer after it sees inputs that drift from the original's.
The sweep in ``structured.py`` therefore refits, in graph order, each linear layer
(MatMul/Gemm with a constant weight, Conv) after the first pruned one against the teacher's
output of the same name, on the student's own inputs — plain, or least squares pulled
towards its current weights, whichever cross-validates better (``recovery.choose_recovery``).

A layer whose output is added to a residual stream (``x + f(x)``, through a bias Add) is
fitted to ``f_teacher + (x_teacher − x_student)``: it also makes up for the drift the
stream carries, which nothing else in a residual network could correct.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from onnxopt.graph_edit import constant_shape
from onnxopt.model_io import Model
from onnxopt.passes.pruning.coupling import Consumer, Segment
from onnxopt.passes.pruning.recovery import Problem, Recovery, choose_recovery
from onnxopt.passes.pruning.rewrite import NameSource, Refit, consumer_bias, consumer_weight_kn, write_refit
from onnxopt.passes.pruning.statistics import (
    ConsumerStatistics,
    TeacherRunner,
    Unsupported,
    collect_consumer_statistics,
)

logger = logging.getLogger(__name__)


def linear_layers(graph: gs.Graph) -> list[gs.Node]:
    """MatMul/Gemm with a constant 2-D weight and ungrouped Conv with a constant kernel, in graph order."""
    found = []
    for node in graph.nodes:
        if len(node.inputs) < 2 or constant_shape(node.inputs[0]) is not None:
            continue
        shape = constant_shape(node.inputs[1])
        if shape is None:
            continue
        if (node.op in ("MatMul", "Gemm") and len(shape) == 2) or (
                node.op == "Conv" and int(node.attrs.get("group", 1)) == 1 and len(shape) >= 3):
            found.append(node)
    return found


def as_consumer(node: gs.Node) -> Consumer:
    """A whole linear layer seen as a consumer of all its input features (for statistics and refits)."""
    shape = constant_shape(node.inputs[1])
    if node.op == "MatMul":
        return Consumer(node, 0, 1, 0, int(shape[0]), frozenset({Segment(0, 1)}))
    if node.op == "Gemm":
        trans_b = int(node.attrs.get("transB", 0))
        return Consumer(node, 0, 1, 1 if trans_b else 0, int(shape[1] if trans_b else shape[0]),
                        frozenset({Segment(0, 1)}))
    return Consumer(node, 0, 1, 1, int(shape[1]), frozenset({Segment(0, 1)}),
                    rows_per_index=int(np.prod(shape[2:])))


def residual_of(node: gs.Node) -> str | None:
    """The tensor ``node``'s output is added to after its bias Adds (a residual stream), or None."""
    out = node.outputs[0]
    while len(out.outputs) == 1 and out.outputs[0].op == "Add":
        add = out.outputs[0]
        others = [tensor for tensor in add.inputs if tensor is not out]
        if len(others) != 1:
            return None
        if constant_shape(others[0]) is None:
            return others[0].name
        out = add.outputs[0]
    return None


@dataclass
class LayerStatistics:
    """A caller's view of one statistics pass: sums per consumer (None where unusable)."""

    stats: list[ConsumerStatistics | None]


def gather_statistics(student: Model, teacher: TeacherRunner, consumers: list[Consumer], data,
                      mask_input: str | None, max_batches: int, residual_targets: bool) -> LayerStatistics:
    residuals = [residual_of(consumer.node) if residual_targets else None for consumer in consumers]
    residuals = [name if name in teacher.available else None for name in residuals]
    try:
        return LayerStatistics(collect_consumer_statistics(student, teacher, consumers, data, mask_input,
                                                           max_batches, residuals))
    except Unsupported as why:
        logger.info("no statistics for %s: %s", ", ".join(c.node.name for c in consumers), why)
        return LayerStatistics([None] * len(consumers))


def problem_for(consumer: Consumer, stats: ConsumerStatistics | None, unit_rows: np.ndarray) -> Problem | None:
    """The least-squares problem of a consumer, or None when its statistics do not fit its weights."""
    if stats is None:
        return None
    weights = consumer_weight_kn(consumer)
    bias = consumer_bias(consumer)
    if bias is None or stats.features != weights.shape[0] or stats.cross.shape[1] != weights.shape[1]:
        return None
    return Problem(stats, weights, bias, unit_rows)


def distill_layer(graph: gs.Graph, node: gs.Node, stats: ConsumerStatistics | None,
                  names: NameSource) -> Recovery | None:
    """Refit one unpruned layer against the teacher when that cross-validates better than leaving it."""
    consumer = as_consumer(node)
    problem = problem_for(consumer, stats, np.arange(consumer.length)[:, None])
    if problem is None:
        return None
    recovery = choose_recovery(problem, np.zeros(0, dtype=np.int64), "distill")
    if recovery.method != "plain":
        write_refit(graph, consumer, Refit(recovery.theta[:-1], recovery.theta[-1]), names)
    return recovery
