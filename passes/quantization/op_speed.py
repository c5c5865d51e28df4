"""Is int8 faster here? One-node islands timed in float and in int8.

The paired, interleaved timing itself lives in the framework (``onnxopt.paired_timing``);
this module builds what it times.

Why several thread counts: a decision holds for the threads it was timed under. int8
kernels and float kernels scale differently across cores (EfficientNet-B0 in int8 ran 1.08x
faster than float on one thread and 0.88x slower on two), so unless the user says how the
model will run (``--threads``), the whole-model comparison is made under one thread *and*
under onnxruntime's default (all cores), and the worse of the two counts. Islands (below)
only pre-select which variants the whole-model check times, so they are timed once, under
the last of those counts.

Why islands: a quantized node is judged by a one-node model — the node alone in float
versus the node with its Q/DQ, float in and float out. The island pays for quantizing its
input and dequantizing its output, so a node that wins as an island also wins inside an
int8 chain; the whole-model check afterwards catches what islands cannot see.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence

import numpy as np
import onnx_graphsurgeon as gs

from onnxopt.model_io import Model
from onnxopt.paired_timing import DEFAULT_ROUNDS, compare_models
from onnxopt.passes.quantization.qdq_placement import output_q_tensor

logger = logging.getLogger(__name__)

ISLAND_OUTPUT = "island_output"


def island(model: Model, node_name: str, shapes: dict[str, tuple[int, ...]],
           fold_activation: bool) -> tuple[Model, dict[str, np.ndarray]] | None:
    """A one-node model of ``node_name`` (plus the Relu/Clip it fuses with) and a random feed.

    Tensor names are kept, so ranges and quantization parameters of the full model apply;
    so is the model's folder, which its (possibly external) weights are read from.
    None when an input's shape is unknown.
    """
    graph = model.graph
    by_name = {node.name: node for node in graph.nodes}
    node = by_name[node_name]
    members = [node]
    if fold_activation:
        after = output_q_tensor(node, {t.name for t in graph.outputs})
        if after is not None and after is not node.outputs[0]:
            members.append(after.inputs[0])
    inputs: dict[str, gs.Variable] = {}
    tensors: dict[str, gs.Tensor] = {}
    copies = []
    rng = np.random.default_rng(0)
    feed = {}
    for member in members:
        new_inputs = []
        for tensor in member.inputs:
            if isinstance(tensor, gs.Constant) or not tensor.name:
                new_inputs.append(tensor)
                continue
            if tensor.name not in tensors:
                shape = shapes.get(tensor.name)
                if shape is None:
                    return None
                variable = gs.Variable(tensor.name, dtype=np.float32, shape=list(shape))
                inputs[tensor.name] = variable
                tensors[tensor.name] = variable
                feed[tensor.name] = rng.standard_normal(shape).astype(np.float32)
            new_inputs.append(tensors[tensor.name])
        new_outputs = []
        for tensor in member.outputs:
            variable = gs.Variable(tensor.name, dtype=np.float32)
            tensors[tensor.name] = variable
            new_outputs.append(variable)
        copies.append(gs.Node(member.op, member.name, attrs=dict(member.attrs), inputs=new_inputs,
                              outputs=new_outputs, domain=member.domain))
    final = gs.Variable(ISLAND_OUTPUT, dtype=np.float32)
    copies.append(gs.Node("Identity", f"{node_name}_island_Identity", inputs=[copies[-1].outputs[0]], outputs=[final]))
    mini = gs.Graph(nodes=copies, inputs=list(inputs.values()), outputs=[final], opset=graph.opset,
                    import_domains=graph.import_domains)
    return Model(graph=mini, base_dir=model.base_dir, had_external_data=model.had_external_data), feed


def signature(node: gs.Node, shapes: dict[str, tuple[int, ...]]) -> tuple:
    """Nodes with equal signatures run the same kernels at the same sizes: time them once."""
    parts: list[object] = [node.op, tuple(sorted((k, repr(v)) for k, v in node.attrs.items()))]
    for tensor in node.inputs:
        if isinstance(tensor, gs.Constant):
            parts.append(("const", tuple(tensor.shape)))
        else:
            parts.append(("var", shapes.get(tensor.name)))
    consumers = node.outputs[0].outputs if node.outputs else []
    parts.append(tuple(consumer.op for consumer in consumers))
    return tuple(parts)


def island_ratios(model: Model, nodes: Sequence[str], shapes: dict[str, tuple[int, ...]],
                  quantize_island: Callable[[Model, str], Model], thread_counts: Sequence[int],
                  fold_activation: bool, rounds: int = DEFAULT_ROUNDS) -> dict[str, float]:
    """int8/fp32 time ratio of each node's island, the worst over ``thread_counts``.

    Nodes with one signature share a result.
    """
    by_name = {node.name: node for node in model.graph.nodes}
    measured: dict[tuple, float] = {}
    result: dict[str, float] = {}
    for name in nodes:
        key = signature(by_name[name], shapes)
        if key not in measured:
            built = island(model, name, shapes, fold_activation)
            if built is None:
                measured[key] = math.inf
            else:
                mini, feed = built
                quantized = quantize_island(mini, name)
                worst = 0.0
                for threads in thread_counts:
                    comparison = compare_models(mini, quantized, feed, threads, rounds)
                    worst = max(worst, comparison.pessimistic_ratio)
                    logger.debug("island %s (%s), %d threads: int8/fp32 %.2f (%.3f ms fp32)", name,
                                 by_name[name].op, threads, comparison.ratio, comparison.baseline_ms)
                measured[key] = worst
        result[name] = measured[key]
    return result
