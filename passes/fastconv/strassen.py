"""strassen-matmul: Strassen's seven-product MatMul where it measures faster than onnxruntime's.

For each MatMul of the main graph with a constant 2-D right-hand side and large static sizes, the pass
times the original against ``StrassenMatMul`` with one and two levels of recursion (the right-hand
side's combinations are packed once at kernel creation) and keeps the winner only when it beats
onnxruntime's MLAS GEMM by ``min_speedup`` within ``max_rel_error``. Strassen trades multiplications for
additions that are memory-bound and for a larger error (it grows with each level): on CPUs where the
GEMM already runs near FMA peak it rarely wins below a few thousand per dimension - the pass measures
and says so in its decisions rather than assuming.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import onnx
import onnx.helper as oh
import onnx.numpy_helper
import onnx_graphsurgeon as gs

from onnxopt import kernels
from onnxopt.errors import BadInputError
from onnxopt.graph_edit import all_tensor_names, constant_array, fresh_name, is_standard_op, remove_nodes
from onnxopt.model_io import Model
from onnxopt.pass_api import Contract, Pass, PassContext, PassOptions, PassResult
from onnxopt.runtime import run_session
from onnxopt.shape_info import infer_tensor_infos, known_elem_type, known_shape
from onnxopt.versioning import minimum_ir_version

from .accuracy import relative_error
from .ops import STRASSEN_OP, ensure_function, make_node, strassen_function
from .timing import TimingConfig, make_sessions, time_variants

logger = logging.getLogger(__name__)

LEVELS = (1, 2)
ISLAND_OPSET = 17


@dataclass(frozen=True)
class StrassenOptions(PassOptions):
    target: str = ""  # empty: the pipeline's --target; GPU targets leave MatMuls alone
    threads: int = 0  # 0: onnxruntime's default (all cores)
    min_dim: int = 512  # M, K and N must all reach this
    min_speedup: float = 1.1
    max_rel_error: float = 1e-4
    rounds: int = 7
    batch: int = 1  # for a symbolic batch dimension of A


class StrassenMatMul(Pass):
    """Replace large MatMuls with constant weights by a Strassen custom op where measured faster.

    Eligible: float32 MatMul, B a constant 2-D initializer, A of static shape [..., M, K] with M, K, N
    all >= ``min_dim``. Candidates: one and two levels of Strassen's recursion over onnxopt's packed GEMM.
    The custom op carries MatMul as its function body, so the model runs without the kernels. Needs the
    kernel library (it measures); GPU targets are left alone. ``stats["decisions"]`` lists each MatMul
    with the measured times and errors. Skips If/Loop/Scan bodies and local functions.
    """

    name = "strassen-matmul"
    contract = Contract.TOLERANCE
    tolerance_rel = 1e-3
    cleanup = False
    walks_subgraphs = False
    walks_functions = False
    Options = StrassenOptions

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        options: StrassenOptions = self.options  # type: ignore[assignment]
        if options.min_dim < 2 or options.min_speedup < 1.0 or options.rounds < 3 or options.threads < 0:
            raise BadInputError("strassen-matmul: min_dim >= 2, min_speedup >= 1, rounds >= 3, threads >= 0 needed")
        target = options.target or ctx.target
        infos = infer_tensor_infos(model)
        config = TimingConfig(threads=options.threads, rounds=options.rounds)
        decisions, chosen = [], []
        library = kernels.available()
        for node in [n for n in model.graph.nodes if n.op == "MatMul"]:
            entry: dict = {"node": node.name, "decision": "keep"}
            decisions.append(entry)
            shapes = _eligible(node, infos, options, entry)
            if shapes is None:
                continue
            if target in ("ort-cuda", "tensorrt"):
                entry["reason"] = f"{target}: left alone"
                continue
            if not library:
                kernels.warn_unavailable()
                entry["reason"] = "kernel library unavailable: cannot measure"
                continue
            levels = _measure(node, shapes, config, options, entry)
            if levels:
                chosen.append((node, levels))
        taken = all_tensor_names(model.graph)
        for node, levels in chosen:
            _replace(model, node, levels, taken)
        if chosen:
            model.graph.toposort()
        return PassResult(bool(chosen), {"matmuls": len(decisions), "replaced": len(chosen), "decisions": decisions})


def _eligible(node: gs.Node, infos, options: StrassenOptions, entry: dict) -> tuple | None:
    if not is_standard_op(node) or len(node.inputs) != 2:
        entry["reason"] = "not a standard MatMul"
        return None
    b = constant_array(node.inputs[1])
    if b is None or b.ndim != 2 or b.dtype != np.float32:
        entry["reason"] = "right-hand side is not a constant 2-D float32 matrix"
        return None
    a = node.inputs[0]
    shape = known_shape(a, infos)
    if known_elem_type(a, infos) != 1 or shape is None or len(shape) < 2:
        entry["reason"] = "left-hand side is not float32 of known rank >= 2"
        return None
    dims = [options.batch if (i == 0 and not isinstance(d, int)) else d for i, d in enumerate(shape)]
    if any(not isinstance(d, int) or d < 1 for d in dims):
        entry["reason"] = "left-hand side shape is not static"
        return None
    rows = int(np.prod(dims[:-1]))
    k, n = int(b.shape[0]), int(b.shape[1])
    entry["shape"] = {"a": dims, "b": [k, n], "m": rows}
    if dims[-1] != k:
        entry["reason"] = "inner dimensions differ"
        return None
    if min(rows, k, n) < options.min_dim:
        entry["reason"] = f"smaller than min_dim {options.min_dim}"
        return None
    return tuple(dims), b


def _island(a_shape: tuple, b: np.ndarray, levels: int) -> onnx.ModelProto:
    out_shape = [*a_shape[:-1], int(b.shape[1])]
    if levels == 0:
        node = oh.make_node("MatMul", ["a", "b"], ["y"])
        functions = []
    else:
        node = oh.make_node(STRASSEN_OP, ["a", "b"], ["y"], domain=kernels.DOMAIN, levels=levels)
        functions = [strassen_function(ISLAND_OPSET)]
    graph = oh.make_graph([node], "island", [oh.make_tensor_value_info("a", 1, list(a_shape))],
                          [oh.make_tensor_value_info("y", 1, out_shape)], [onnx.numpy_helper.from_array(b, "b")])
    imports = [oh.make_opsetid("", ISLAND_OPSET)] + ([oh.make_opsetid(kernels.DOMAIN, 1)] if functions else [])
    model = oh.make_model(graph, opset_imports=imports, functions=functions)
    model.ir_version = minimum_ir_version(model)
    return model


def _measure(node: gs.Node, shapes: tuple, config: TimingConfig, options: StrassenOptions, entry: dict) -> int:
    a_shape, b = shapes
    models = {"original": _island(a_shape, b, 0)}
    models.update({f"levels{level}": _island(a_shape, b, level) for level in LEVELS})
    sessions = make_sessions(models, config)
    feed = {"a": np.random.default_rng(0).standard_normal(a_shape).astype(np.float32)}
    reference = feed["a"].astype(np.float64) @ b.astype(np.float64)
    errors = {name: relative_error(run_session(session, feed)["y"], reference) for name, session in sessions.items()}
    times = time_variants(sessions, feed, config)
    entry["baseline_ms"] = round(times["original"].median_ms, 4)
    entry["baseline_rel_error"] = float(f"{errors['original']:.3e}")
    entry["candidates"] = {}
    best, best_ratio = 0, 1.0 / options.min_speedup
    for level in LEVELS:
        name = f"levels{level}"
        measured = times[name]
        entry["candidates"][name] = {**measured.as_dict(), "speedup": round(1.0 / measured.ratio, 3),
                                     "rel_error": float(f"{errors[name]:.3e}")}
        if errors[name] <= options.max_rel_error and measured.ratio <= best_ratio:
            best, best_ratio = level, measured.ratio
    if best:
        entry.update(decision=f"strassen{best}", reason=f"{1.0 / best_ratio:.2f}x faster")
    else:
        entry["reason"] = f"no Strassen level {options.min_speedup:g}x faster than onnxruntime's GEMM within the bound"
    return best


def _replace(model: Model, node: gs.Node, levels: int, taken: set[str]) -> None:
    ensure_function(model, strassen_function(model.opset))
    inputs, output = list(node.inputs), node.outputs[0]
    name = fresh_name(f"{node.name or output.name}_strassen", taken)
    node.inputs.clear()
    node.outputs.clear()
    model.graph.nodes.append(make_node(STRASSEN_OP, inputs, output, name, {"levels": int(levels)}))
    remove_nodes(model.graph, [node])
