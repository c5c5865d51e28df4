"""``sparsify``: zero weights, unstructured or N:M (2:4) along the reduction axis.

What: the constant weights of MatMul (B, 2-D), Gemm (B, per ``transB``) and Conv get zeros —
``pattern=unstructured`` removes ``ratio`` of each output's weights, ``pattern=2:4`` (any
``N:M``) keeps ``N`` of every ``M`` consecutive weights along the reduction axis (a Conv's
input channels at each kernel position), as TensorRT's sparse tactics need. Chosen by
magnitude, Wanda (``|w|·‖x‖``) or, with DATA, SparseGPT (second-order updates of the
weights that stay, from the layer's input statistics ``XᵀX``).

Why, honestly: onnxruntime runs these weights dense — there is no speed gain on it.
The gains are TensorRT's 2:4 kernels (``onnxopt check --target tensorrt`` lists the weights
that satisfy 2:4) and file size where sparse storage is smaller (``storage=auto`` writes a
sparse initializer when its int64 indices and values take fewer bytes than the dense
tensor: above about 67 % zeros; onnx's full-check shape inference cannot read sparse
initializers' shapes, onnxruntime loads them).

When unsafe: lossy; 50 % of weights is a lot for a model trained dense (the report lists
each weight's relative output error). Weights shared by several nodes, read inside
subgraphs, or whose reduction size is not a multiple of ``M`` are skipped with a reason.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import onnx.numpy_helper
import onnx_graphsurgeon as gs
from onnx_graphsurgeon.ir.tensor import SparseValues

from onnxopt.data import make_feeds
from onnxopt.error_budget import ERROR_METRICS, error_function, run_outputs, sensitivity_fallback
from onnxopt.errors import BadInputError
from onnxopt.graph_edit import constant_array, constant_shape
from onnxopt.input_statistics import padding_mask_input
from onnxopt.model_io import Model, to_proto
from onnxopt.pass_api import Contract, Pass, PassContext, PassOptions, PassResult, check_choice
from onnxopt.passes.pruning.distill import as_consumer
from onnxopt.passes.pruning.rewrite import NameSource
from onnxopt.passes.pruning.sparsity import one_shot_mask, relative_output_error, sparsegpt
from onnxopt.passes.pruning.statistics import collect_input_grams
from onnxopt.runtime_errors import ORT_RUN_ERRORS
from onnxopt.target_rules import nm_group_fraction

logger = logging.getLogger(__name__)

METHODS = ("auto", "magnitude", "wanda", "sparsegpt")
STORAGES = ("dense", "auto")
# Sparse storage: 4-byte values plus 8-byte int64 indices per non-zero.
SPARSE_BYTES_PER_NONZERO = 12


@dataclass(frozen=True)
class SparsifyOptions(PassOptions):
    """Options of ``sparsify``.

    ``pattern``: unstructured | ``N:M`` (e.g. 2:4). ``ratio``: share of weights zeroed
    (unstructured only; N:M zeroes ``1 - N/M``). ``method``: auto (sparsegpt with DATA,
    else magnitude) | magnitude | wanda | sparsegpt. ``op_types``: MatMul, Gemm, Conv.
    ``min_weight_elements``: smaller weights stay dense. ``exclude``: regexes of node or
    weight names. ``storage``: dense | auto (sparse initializer where smaller).
    ``max_error``: output error budget (``error_metric``/``metric`` as in qdq) on
    ``budget_batches`` batches; the weights whose sparsity costs most stay dense.
    ``damp_ratio``: SparseGPT's damping of ``XᵀX``. ``calib_max_batches``: batches of DATA
    read (0 = all). ``calib_mask_input``: input whose zeros mark padding ("auto").
    """

    pattern: str = "2:4"
    ratio: float = 0.5
    method: str = "auto"
    op_types: tuple[str, ...] = ("MatMul", "Gemm", "Conv")
    min_weight_elements: int = 1024
    exclude: tuple[str, ...] = ()
    storage: str = "dense"
    max_error: float = 0.0
    error_metric: str = "rel_l2"
    metric: str = ""
    budget_batches: int = 4
    damp_ratio: float = 0.01
    calib_max_batches: int = 0
    calib_mask_input: str = "auto"


def parse_pattern(pattern: str) -> tuple[int, int] | None:
    """``(N, M)`` for "N:M", None for "unstructured"; BadInputError otherwise."""
    if pattern == "unstructured":
        return None
    left, sep, right = pattern.partition(":")
    try:
        n, m = int(left), int(right)
    except ValueError:
        n = m = 0
    if not sep or not 0 < n < m:
        raise BadInputError(f"sparsify: pattern must be 'unstructured' or 'N:M' with 0 < N < M, got {pattern!r}")
    return n, m


@dataclass
class Target:
    """A weight to sparsify: its node, its ``[K, N]`` view (K along the N:M groups) and how to write it back."""

    node: gs.Node
    weight: gs.Tensor

    def to_kn(self, values: np.ndarray) -> np.ndarray:
        op = self.node.op
        if op == "MatMul":
            return values
        if op == "Gemm":
            return values.T if int(self.node.attrs.get("transB", 0)) else values
        # Conv [O, C, kh, kw] -> rows (kh, kw, c): M consecutive rows are M input channels at one position.
        return values.transpose(2, 3, 1, 0).reshape(-1, values.shape[0])

    def from_kn(self, matrix: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        op = self.node.op
        if op == "MatMul":
            return matrix
        if op == "Gemm":
            return matrix.T if int(self.node.attrs.get("transB", 0)) else matrix
        out, channels, *kernel = shape
        return matrix.reshape(*kernel, channels, out).transpose(3, 2, 0, 1)

    def hessian_order(self, shape: tuple[int, ...]) -> np.ndarray | None:
        """Permutation from the statistics' row order (channel-major) to this view's (Conv only)."""
        if self.node.op != "Conv":
            return None
        _, channels, *kernel = shape
        positions = int(np.prod(kernel))
        return (np.arange(channels)[None, :] * positions + np.arange(positions)[:, None]).reshape(-1)

    def reduction(self, shape: tuple[int, ...]) -> int:
        return int(shape[1]) if self.node.op == "Conv" else self.to_kn(np.empty(shape)).shape[0]


def find_targets(graph: gs.Graph, options: SparsifyOptions, pattern: tuple[int, int] | None
                 ) -> tuple[list[Target], list[dict[str, Any]]]:
    """Weights to sparsify, and records of the ones left dense (with reasons)."""
    patterns = [re.compile(entry) for entry in options.exclude]
    targets, skipped = [], []
    main = {id(node) for node in graph.nodes}
    for node in graph.nodes:
        if node.op not in options.op_types or len(node.inputs) < 2:
            continue
        weight = node.inputs[1]
        shape = constant_shape(weight)
        if shape is None or constant_shape(node.inputs[0]) is not None:
            continue
        record = {"node": node.name, "op": node.op, "weight": weight.name, "decision": "skipped"}
        if (node.op in ("MatMul", "Gemm") and len(shape) != 2) or (node.op == "Conv" and len(shape) < 3):
            continue
        target = Target(node, weight)
        reason = ""
        if node.op == "Conv" and int(node.attrs.get("group", 1)) != 1:
            reason = "grouped convolution"
        elif len(weight.outputs) != 1 or any(id(reader) not in main for reader in weight.outputs):
            reason = "weight read by several nodes"
        elif int(np.prod(shape)) < options.min_weight_elements:
            reason = f"{int(np.prod(shape))} elements, below min_weight_elements={options.min_weight_elements}"
        elif any(p.fullmatch(node.name or "") or p.fullmatch(weight.name) for p in patterns):
            reason = "excluded"
        elif pattern is not None and target.reduction(tuple(shape)) % pattern[1]:
            reason = f"reduction size {target.reduction(tuple(shape))} is not a multiple of {pattern[1]}"
        if reason:
            skipped.append({**record, "reason": reason})
        else:
            targets.append(target)
    return targets, skipped


class Sparsify(Pass):
    """Zero weights in N:M (2:4) or unstructured patterns (magnitude, Wanda, SparseGPT); dense on onnxruntime."""

    name = "sparsify"
    contract = Contract.LOSSY
    cleanup = False
    walks_subgraphs = False
    walks_functions = False
    Options = SparsifyOptions

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        options: SparsifyOptions = self.options  # type: ignore[assignment]
        pattern = self._validate(options)
        targets, decisions = find_targets(model.graph, options, pattern)
        notes: list[str] = []
        stats: dict[str, Any] = {"pattern": options.pattern}
        method = options.method
        if method == "auto":
            method = "sparsegpt" if ctx.data is not None else "magnitude"
        if method in ("wanda", "sparsegpt") and ctx.data is None:
            raise BadInputError(f"sparsify: method={method} needs calibration data (--calib DATA)")
        if ctx.data is None:
            message = "sparsify: no calibration DATA: weights chosen by magnitude"
            ctx.logger.warning("%s", message)
            notes.append(message)
        stats["method"] = method
        if not targets:
            stats["decisions"] = decisions
            return PassResult(False, stats, [*notes, "no weight to sparsify"])
        grams = self._statistics(model, targets, ctx, options) if ctx.data is not None else [None] * len(targets)
        results: dict[str, np.ndarray] = {}
        for target, gram in zip(targets, grams, strict=True):
            values = np.asarray(constant_array(target.weight))
            sparse, record = self._sparsify(target, values, gram, pattern, options, method)
            results[target.node.name or target.weight.name] = sparse
            decisions.append(record)
        chosen = list(results)
        if options.max_error > 0:
            chosen = self._within_budget(model, targets, results, chosen, ctx, options, stats, notes, decisions)
        names = NameSource(model.graph)
        written = 0
        dense_bytes = stored_bytes = 0
        for target in targets:
            key = target.node.name or target.weight.name
            if key not in chosen:
                continue
            values = np.asarray(constant_array(target.weight))
            sparse = results[key].astype(values.dtype)
            constant = _stored(names.fresh(f"{target.weight.name}_sparse"), sparse, options.storage)
            dense_bytes += values.nbytes
            stored_bytes += _nbytes(constant)
            target.node.inputs[1] = constant
            written += 1
        model.graph.cleanup(remove_unused_graph_inputs=False)
        stats.update(decisions=decisions, sparsified=written, dense_weight_bytes=dense_bytes,
                     stored_weight_bytes=stored_bytes)
        notes.append("onnxruntime runs sparse weights dense: no speed-up there (TensorRT's 2:4 kernels do use them)")
        return PassResult(written > 0, stats, notes)

    @staticmethod
    def _validate(options: SparsifyOptions) -> tuple[int, int] | None:
        pattern = parse_pattern(options.pattern)
        check_choice("sparsify", "method", options.method, METHODS)
        check_choice("sparsify", "storage", options.storage, STORAGES)
        if options.error_metric not in ERROR_METRICS:
            raise BadInputError(f"sparsify: error_metric {options.error_metric!r} unknown")
        if pattern is None and not 0.0 < options.ratio < 1.0:
            raise BadInputError("sparsify: ratio must be in (0, 1)")
        unknown = sorted(set(options.op_types) - {"MatMul", "Gemm", "Conv"})
        if unknown:
            raise BadInputError(f"sparsify: op_types {', '.join(unknown)} not supported (MatMul, Gemm, Conv)")
        for entry in options.exclude:
            try:
                re.compile(entry)
            except re.error as error:
                raise BadInputError(f"sparsify: bad exclude pattern {entry!r} ({error})") from None
        return pattern

    @staticmethod
    def _statistics(model: Model, targets: list[Target], ctx: PassContext,
                    options: SparsifyOptions) -> list[np.ndarray | None]:
        try:
            return collect_input_grams(model, [as_consumer(target.node) for target in targets], ctx.data,
                                       padding_mask_input(model, options.calib_mask_input), options.calib_max_batches)
        except ORT_RUN_ERRORS as error:
            raise BadInputError(f"calibration data does not fit the model: {str(error).splitlines()[0]}") from None

    @staticmethod
    def _sparsify(target: Target, values: np.ndarray, gram: np.ndarray | None, pattern: tuple[int, int] | None,
                  options: SparsifyOptions, method: str) -> tuple[np.ndarray, dict[str, Any]]:
        shape = tuple(values.shape)
        weights = target.to_kn(values.astype(np.float64))
        hessian = None
        if gram is not None:
            order = target.hessian_order(shape)
            hessian = gram if order is None else gram[np.ix_(order, order)]
        norms = np.sqrt(np.maximum(np.diag(hessian), 0.0)) if hessian is not None else None
        plain = weights * one_shot_mask(weights, norms if method != "magnitude" else None, pattern, options.ratio)
        used = method if hessian is not None or method == "magnitude" else "magnitude"
        if used == "sparsegpt":
            sparse = sparsegpt(weights, hessian, pattern, options.ratio, options.damp_ratio)
        else:
            sparse = plain
        record: dict[str, Any] = {"node": target.node.name, "op": target.node.op, "weight": target.weight.name,
                                  "decision": "sparsified", "method": used, "pattern": options.pattern,
                                  "sparsity": float(np.mean(sparse == 0))}
        if pattern is not None:
            record["satisfies_pattern"] = nm_group_fraction(sparse, *pattern) == 1.0
        if hessian is not None:
            record["error_before_recovery"] = relative_output_error(weights, plain, hessian)
            record["error_after_recovery"] = relative_output_error(weights, sparse, hessian)
        return target.from_kn(sparse, shape), record

    @staticmethod
    def _within_budget(model: Model, targets: list[Target], results: dict[str, np.ndarray], chosen: list[str],
                       ctx: PassContext, options: SparsifyOptions, stats: dict[str, Any], notes: list[str],
                       decisions: list[dict[str, Any]]) -> list[str]:
        source = ctx.data if ctx.data is not None else make_feeds(to_proto(model), None, 1, ctx.shapes, random_count=2)
        feeds = [feed for _, feed in zip(range(options.budget_batches), source, strict=False)]
        references = run_outputs(model, feeds)
        by_key = {target.node.name or target.weight.name: target for target in targets}

        def build(items: list[str]) -> Model:
            candidate = model.copy()
            nodes = {node.name: node for node in candidate.graph.nodes}
            for key in items:
                node = nodes.get(by_key[key].node.name)
                if node is not None:
                    values = np.asarray(constant_array(node.inputs[1]))
                    node.inputs[1] = gs.Constant(f"{node.inputs[1].name}_trial", results[key].astype(values.dtype))
            return candidate

        fallback = sensitivity_fallback(build, chosen, feeds, references,
                                        error_function(options.error_metric, options.metric), options.max_error)
        stats["output_error"] = fallback.error
        stats["output_error_all_sparse"] = fallback.full_error
        dense = set(fallback.fallback)
        for record in decisions:
            key = record.get("node") or record.get("weight")
            if key in dense:
                record.update(decision="kept", reason=f"error budget {options.max_error:g}")
        if dense:
            notes.append(f"{len(dense)} weight(s) left dense to meet the error budget")
        return fallback.kept


def _stored(name: str, values: np.ndarray, storage: str) -> gs.Constant:
    """A dense constant, or (``storage=auto``) a sparse initializer when that takes fewer bytes."""
    nonzero = int(np.count_nonzero(values))
    if storage == "auto" and nonzero * SPARSE_BYTES_PER_NONZERO < values.nbytes:
        flat = values.reshape(-1)
        indices = np.flatnonzero(flat).astype(np.int64)
        proto = onnx.helper.make_sparse_tensor(onnx.numpy_helper.from_array(flat[indices], name),
                                               onnx.numpy_helper.from_array(indices, ""), list(values.shape))
        return gs.Constant(name, SparseValues(proto))
    return gs.Constant(name, np.ascontiguousarray(values))


def _nbytes(constant: gs.Constant) -> int:
    values = constant._values
    if isinstance(values, SparseValues):
        return int(values.tensor.ByteSize())
    return int(np.asarray(values).nbytes)
