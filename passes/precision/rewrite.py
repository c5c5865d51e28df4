"""Apply a precision Plan to the graph: convert weights and attributes, insert boundary casts.

Given each node's mode (``plan``), the rewrite

* converts float32 constants read by half slots to the half type, tensor by tensor
  (``read_constant``), in place when every reader wants half, as a second ``*_fp16`` copy
  when fp32 readers share it; external-data weights become lazy half tensors computed
  from their file when written, so the model's weights are never all in memory;
* rewrites typed attributes of half nodes (Cast ``to``, Constant/ConstantOfShape values,
  Random* and EyeLike ``dtype``);
* inserts one Cast per (graph, tensor, target type) where a producer and a reader
  disagree, including graph outputs (the main graph keeps its output names: the half
  tensor is renamed and the Cast produces the original name);
* updates the declared type of every tensor whose type changed (value_info, subgraph
  inputs/outputs), so no stale fp32 annotation survives;
* removes Cast chains that return to their starting float type (fp32 -> half -> fp32
  between fp32 nodes, half -> fp32 -> half), so fp32 islands are not full of casts, and
  casts that the conversion turned into no-ops.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import ml_dtypes
import numpy as np
import onnx
import onnx_graphsurgeon as gs

from onnxopt.external_data import ExternalLazyValues
from onnxopt.model_io import Model, read_constant
from onnxopt.passes.precision.half_values import HalfLazyValues
from onnxopt.passes.precision.op_rules import BFLOAT16, FLOAT, FLOAT16
from onnxopt.passes.precision.plan import ANY, FP32, HALF, Plan, WeightStats, weight_stats
from onnxopt.passes.precision.tensor_types import ScopedGraph

logger = logging.getLogger(__name__)

# Cast chains among these types that return to where they started carry the start value.
_ROUND_TRIP_TYPES = frozenset({FLOAT, FLOAT16, BFLOAT16})


def _suffix(elem: int) -> str:
    return {FLOAT16: "fp16", BFLOAT16: "bf16"}.get(elem, "fp32")


def half_numpy_dtype(half: int) -> np.dtype:
    return np.dtype(ml_dtypes.bfloat16) if half == BFLOAT16 else np.dtype(np.float16)


@dataclass
class RewriteStats:
    constants_converted: int = 0
    constants_duplicated: int = 0
    attributes_converted: int = 0
    casts_inserted: int = 0
    casts_removed: int = 0
    tensors_retyped: int = 0
    weight_bytes_before: int = 0
    weight_bytes_after: int = 0
    flushed_to_zero: dict[str, int] = field(default_factory=dict)


class Rewriter:
    """Carries out one Plan on the model it was made for."""

    def __init__(self, model: Model, plan: Plan) -> None:
        self.model = model
        self.plan = plan
        self.half = plan.options.half
        self.half_np = half_numpy_dtype(self.half)
        self.stats = RewriteStats()
        self.names: set[str] = set()
        self.final: dict[int, int] = {}  # id(tensor) -> element type after conversion
        self.casts: dict[tuple[int, int, str], gs.Variable] = {}
        self.touched: set[int] = set()  # ids of Cast nodes we created or changed
        self.inserted: set[int] = set()  # ids of Cast nodes we created
        self.constant_uses: dict[int, tuple[gs.Constant, list[tuple[gs.Node, int, str]]]] = {}

    # ---- public ------------------------------------------------------------------------
    def run(self) -> RewriteStats:
        self._collect_names()
        self._final_types()
        for graph in self.plan.graphs:
            for node in list(graph.graph.nodes):
                if self.plan.half.get(id(node)):
                    self._rewrite_attributes(node)
                self._fix_inputs(graph, node)
        for graph in self.plan.graphs:
            self._fix_outputs(graph)
        self._convert_constants()
        self._update_declared_types()
        self._simplify_casts()
        # Each graph on its own: graph-surgeon's recursive sort loops forever on models
        # that have both subgraphs and local functions.
        for graph in self.plan.graphs:
            graph.graph.toposort(recurse_subgraphs=False, recurse_functions=False, mode="nodes")
        return self.stats

    # ---- names and types ---------------------------------------------------------------
    def _collect_names(self) -> None:
        for graph in self.plan.graphs:
            self.names.update(graph.graph.tensors().keys())
            self.names.update(node.name for node in graph.graph.nodes if node.name)
            self.names.update(t.name for t in graph.graph.inputs + graph.graph.outputs)

    def _unique(self, base: str) -> str:
        name, count = base, 1
        while name in self.names:
            count += 1
            name = f"{base}_{count}"
        self.names.add(name)
        return name

    def _final_types(self) -> None:
        plan = self.plan
        for graph in plan.graphs:
            tensors = list(graph.graph.inputs) + [t for node in graph.graph.nodes for t in node.outputs]
            for tensor in tensors:
                if not tensor.name or id(tensor) in self.final:
                    continue
                original = plan.orig_type(graph, tensor)
                if original == FLOAT:
                    self.final[id(tensor)] = self.half if plan.produced(tensor) == HALF else FLOAT
                    self.stats.tensors_retyped += self.final[id(tensor)] != FLOAT
                elif original is not None:
                    self.final[id(tensor)] = original

    def _type_now(self, graph: ScopedGraph, tensor: gs.Tensor) -> int | None:
        if isinstance(tensor, gs.Constant):
            return int(onnx.helper.np_dtype_to_tensor_dtype(np.dtype(tensor.dtype)))
        if id(tensor) in self.final:
            return self.final[id(tensor)]
        return self.plan.orig_type(graph, tensor)

    # ---- casts -------------------------------------------------------------------------
    def _cast(self, graph: ScopedGraph, tensor: gs.Variable, want: str, name: str | None = None) -> gs.Variable:
        key = (id(graph.graph), id(tensor), want)
        if name is None and key in self.casts:
            return self.casts[key]
        target = self.half if want == HALF else FLOAT
        suffix = _suffix(target)
        out = gs.Variable(name or self._unique(f"{tensor.name}/{suffix}"),
                          dtype=self._np_dtype(target), shape=tensor.shape)
        node = gs.Node("Cast", name=self._unique(f"{tensor.name}/cast_{suffix}"), attrs={"to": int(target)},
                       inputs=[tensor], outputs=[out])
        graph.graph.nodes.append(node)
        self.plan.node_graph[id(node)] = graph
        self.final[id(out)] = target
        self.touched.add(id(node))
        self.inserted.add(id(node))
        self.stats.casts_inserted += 1
        if name is None:
            self.casts[key] = out
        return out

    def _np_dtype(self, elem: int) -> np.dtype:
        return self.half_np if elem == self.half else np.dtype(np.float32)

    def _fix_inputs(self, graph: ScopedGraph, node: gs.Node) -> None:
        plan = self.plan
        for index, tensor in enumerate(list(node.inputs)):
            if not plan.is_float(graph, tensor):
                continue
            want = plan.input_want(node, index)
            if isinstance(tensor, gs.Constant):
                entry = self.constant_uses.setdefault(id(tensor), (tensor, []))
                entry[1].append((node, index, want))
                continue
            if want == ANY:
                continue
            have = self.final.get(id(tensor), FLOAT)
            target = self.half if want == HALF else FLOAT
            if have != target:
                node.inputs[index] = self._cast(graph, tensor, want)

    def _fix_outputs(self, graph: ScopedGraph) -> None:
        plan = self.plan
        want = HALF if plan.io_half(graph) else FP32
        target = self.half if want == HALF else FLOAT
        is_main = graph.owner is None and graph.function is None
        replaced: dict[int, gs.Variable] = {}  # a tensor listed twice gets one cast
        for position, tensor in enumerate(list(graph.graph.outputs)):
            if not plan.is_float(graph, tensor) or isinstance(tensor, gs.Constant):
                continue
            if id(tensor) in replaced:
                graph.graph.outputs[position] = replaced[id(tensor)]
                continue
            have = self.final.get(id(tensor), FLOAT)
            if have == target:
                continue
            if is_main and tensor.inputs:
                original = tensor.name
                tensor.name = self._unique(f"{original}/{_suffix(have)}")
                self.names.add(original)
                graph.graph.outputs[position] = self._cast(graph, tensor, want, name=original)
            else:
                graph.graph.outputs[position] = self._cast(graph, tensor, want)
            replaced[id(tensor)] = graph.graph.outputs[position]

    # ---- attributes and constants ------------------------------------------------------
    def _count(self, data: np.ndarray, name: str) -> None:
        stats: WeightStats = weight_stats(data, self.half_np)
        if stats.flushed:
            self.stats.flushed_to_zero[name] = stats.flushed
        self.stats.weight_bytes_before += data.nbytes
        self.stats.weight_bytes_after += data.size * self.half_np.itemsize

    def _converted(self, values: np.ndarray, name: str) -> np.ndarray:
        data = np.asarray(values)
        self._count(data, name)
        return data.astype(self.half_np)

    def _half_values(self, constant: gs.Constant) -> np.ndarray | HalfLazyValues:
        """Eager half values for in-memory constants, a lazy recipe for external ones."""
        if isinstance(constant._values, ExternalLazyValues):
            self._count(read_constant(constant), constant.name)  # one read, not kept
            return HalfLazyValues(constant._values, self.half_np)
        return self._converted(read_constant(constant), constant.name)

    def _rewrite_attributes(self, node: gs.Node) -> None:
        typing = self.plan.typing.get(id(node))
        if typing is None or 0 not in typing.half_outputs or node.domain:
            return
        changed = False
        if node.op == "Cast" and int(node.attrs.get("to", 0)) == FLOAT:
            node.attrs["to"] = int(self.half)
            self.touched.add(id(node))
            changed = True
        elif node.op in ("Constant", "ConstantOfShape"):
            changed = self._rewrite_value_attribute(node)
        elif node.op in ("RandomNormal", "RandomUniform"):
            if int(node.attrs.get("dtype", FLOAT)) == FLOAT:
                node.attrs["dtype"] = int(self.half)
                changed = True
        elif node.op in ("RandomNormalLike", "RandomUniformLike", "EyeLike", "Bernoulli") and (
            node.attrs.get("dtype") is not None and int(node.attrs["dtype"]) == FLOAT
        ):
            node.attrs["dtype"] = int(self.half)
            changed = True
        if changed:
            self.stats.attributes_converted += 1

    def _rewrite_value_attribute(self, node: gs.Node) -> bool:
        value = node.attrs.get("value")
        label = node.name or node.outputs[0].name
        if isinstance(value, gs.Constant):
            if np.dtype(value.dtype) != np.float32:
                return False
            node.attrs["value"] = gs.Constant(value.name or label, self._converted(read_constant(value), label))
            return True
        if node.op == "ConstantOfShape" and value is None:
            node.attrs["value"] = gs.Constant(label + "/value", np.zeros((1,), dtype=self.half_np))
            return True
        for key, shape in (("value_float", ()), ("value_floats", None)):
            if node.attrs.get(key) is not None:
                data = np.array(node.attrs.pop(key), dtype=np.float32)
                data = data.reshape(shape) if shape is not None else data.reshape(-1)
                node.attrs["value"] = gs.Constant(label, self._converted(data, label))
                return True
        return False

    def _convert_constants(self) -> None:
        for constant, uses in self.constant_uses.values():
            wants = {want for _, _, want in uses}
            if HALF not in wants:
                continue
            converted = self._half_values(constant)
            if FP32 not in wants:
                constant.values = converted
                # graph-surgeon remembers the imported type and storage for export; the new
                # values carry their own type and live in memory until saved.
                constant._export_dtype = None
                constant.data_location = None
                self.stats.constants_converted += 1
                continue
            copy = gs.Constant(self._unique(f"{constant.name}_{_suffix(self.half)}"), converted)
            for node, index, want in uses:
                if want == HALF:
                    node.inputs[index] = copy
            self.stats.constants_converted += 1
            self.stats.constants_duplicated += 1

    def _update_declared_types(self) -> None:
        """Every tensor that changed type says so; untyped ones stay untyped."""
        plan = self.plan
        for graph in plan.graphs:
            boundary = {id(t) for t in graph.graph.inputs + graph.graph.outputs}
            tensors = list(graph.graph.inputs) + [t for node in graph.graph.nodes for t in node.outputs]
            for tensor in tensors:
                if isinstance(tensor, gs.Constant) or not tensor.name:
                    continue
                elem = self.final.get(id(tensor))
                if elem not in (self.half, FLOAT) or plan.orig_type(graph, tensor) != FLOAT:
                    continue
                if tensor.dtype is not None or id(tensor) in boundary:
                    tensor.dtype = self._np_dtype(elem)

    # ---- cast cleanup ------------------------------------------------------------------
    def _simplify_casts(self) -> None:
        """Bypass no-op casts and float round trips this pass created; drop dead casts."""
        graph_outputs = {id(t) for graph in self.plan.graphs for t in graph.graph.outputs}
        changed = True
        while changed:
            changed = False
            for graph in self.plan.graphs:
                for node in list(graph.graph.nodes):
                    if node.op != "Cast" or node.domain or not node.inputs or not node.outputs:
                        continue
                    output = node.outputs[0]
                    if id(output) in graph_outputs:
                        continue
                    source = self._bypass_source(graph, node)
                    if source is None or not output.outputs:
                        continue
                    for consumer in list(output.outputs):
                        for index, candidate in enumerate(consumer.inputs):
                            if candidate is output:
                                consumer.inputs[index] = source
                    self.touched.add(id(node))  # now dead: dropped below
                    if source is not node.inputs[0]:  # the chain's first cast may be dead too
                        self.touched.add(id(node.inputs[0].inputs[0]))
                    self.stats.casts_removed += 1
                    changed = True
            changed |= self._drop_dead_casts(graph_outputs)

    def _bypass_source(self, graph: ScopedGraph, node: gs.Node) -> gs.Tensor | None:
        """What readers of this Cast can read instead, or None to keep it.

        A cast to the type its input already has is a no-op when we made it so; a chain
        X -> half -> X (or half -> fp32 -> half) between float types returns its input,
        which loses nothing (X is at least as precise as what came out of the chain).
        """
        target = int(node.attrs.get("to", 0))
        source = node.inputs[0]
        source_type = self._type_now(graph, source)
        if source_type == target and (id(node) in self.touched or target in (FLOAT16, BFLOAT16)):
            return source
        if not source.inputs or target not in _ROUND_TRIP_TYPES:
            return None
        first = source.inputs[0]
        if first.op != "Cast" or first.domain or not first.inputs:
            return None
        origin = first.inputs[0]
        middle = int(first.attrs.get("to", 0))
        if self._type_now(graph, origin) == target and middle in _ROUND_TRIP_TYPES:
            return origin
        return None

    def _drop_dead_casts(self, graph_outputs: set[int]) -> bool:
        dropped = False
        for graph in self.plan.graphs:
            for node in list(graph.graph.nodes):
                if node.op != "Cast" or id(node) not in self.touched:
                    continue
                if any(out.outputs or id(out) in graph_outputs for out in node.outputs):
                    continue
                node.inputs.clear()
                node.outputs.clear()
                graph.graph.nodes.remove(node)
                self.stats.casts_inserted -= id(node) in self.inserted  # count what remains
                dropped = True
        return dropped
