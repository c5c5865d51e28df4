"""fuse-matmul-add: MatMul followed by a bias Add becomes one Gemm.

Gemm adds the bias while writing the product, saving a pass over the output and an
intermediate tensor. Gemm is stricter than MatMul + Add (2-D operands, a bias that
broadcasts one way to [M, N]), so every condition is checked from known shapes; the sum
is reassociated, hence a declared tolerance.
"""

from __future__ import annotations

import logging
from collections import Counter

import onnx
import onnx_graphsurgeon as gs

from onnxopt.graph_edit import (
    Scope,
    detach,
    is_standard_op,
    iter_trees,
    output_names,
    producer,
    use_counts,
)
from onnxopt.model_io import Model
from onnxopt.pass_api import Contract, Pass, PassContext, PassResult
from onnxopt.shape_info import Dim, TensorInfo, infer_tensor_infos, known_elem_type, known_shape

logger = logging.getLogger(__name__)

# float16 would round the product before the bias in MatMul + Add but not in Gemm.
_FUSABLE_TYPES = (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE)
_MIN_OPSET = 7  # Gemm broadcasts its bias without the old `broadcast` attribute from opset 7


class _Refused(Exception):
    """A MatMul + Add pair that cannot become a Gemm; the message says why."""




def bias_fits_gemm(bias: tuple[Dim, ...], rows: Dim, cols: Dim) -> bool:
    """True when ``bias`` broadcasts one way to [rows, cols] (each dim 1 or provably equal)."""
    if len(bias) > 2:
        return False
    target = (rows, cols)[2 - len(bias) :]
    for dim, want in zip(bias, target, strict=True):
        if dim == 1:
            continue
        if dim is None or want is None or dim != want:
            return False
    return True


class FuseMatMulAdd(Pass):
    """Replace MatMul(A, B) + Add(bias) by Gemm(A, B, bias) where Gemm computes the same.

    Conditions: A and B have rank 2 (known from constants or shape inference); the bias
    has rank <= 2 and each of its dimensions is 1 or provably equal to the matching one of
    [M, N], so the Add output is exactly [M, N]; the MatMul output is read only by the Add;
    element type float32 or float64; opset >= 7. The Gemm takes the Add's output name.
    Refusals are counted by reason. Walks If/Loop/Scan bodies; in local functions shapes
    are unknown, so only constant operands qualify there.
    """

    name = "fuse-matmul-add"
    contract = Contract.TOLERANCE
    tolerance_rel = 1e-5
    walks_subgraphs = True
    walks_functions = True

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        self._refused: Counter = Counter()
        infos = infer_tensor_infos(model)
        fused = 0
        for tree in iter_trees(model.graph):
            counts = use_counts(tree[0].graph)
            tree_infos = infos if tree[0].function is None else {}
            for scope in tree:
                fused += self._scope(scope, tree_infos, counts)
        stats: dict = {"nodes_fused": fused, "nodes_removed": fused}
        if self._refused:
            stats["refused"] = dict(self._refused)
        return PassResult(fused > 0, stats)

    def _scope(self, scope: Scope, infos: dict[str, TensorInfo], counts: Counter) -> int:
        replaced: dict[int, gs.Node | None] = {}  # id(old node) -> Gemm taking its place, or None
        local = {id(node) for node in scope.graph.nodes}
        for add in list(scope.graph.nodes):
            if add.op != "Add" or not is_standard_op(add) or len(add.inputs) != 2:
                continue
            for side in (0, 1):
                matmul = producer(add.inputs[side])
                if matmul is None or matmul.op != "MatMul" or not is_standard_op(matmul) or id(matmul) not in local:
                    continue
                try:
                    self._check(scope, matmul, add, side, infos, counts)
                except _Refused as reason:
                    self._refused[str(reason)] += 1
                    continue
                replaced[id(matmul)] = None
                replaced[id(add)] = self._rewrite(matmul, add, side)
                break
        if replaced:
            # One rebuild per graph: each Gemm sits where its Add was (after its operands, before its readers).
            scope.graph.nodes = [
                replaced.get(id(node), node) for node in scope.graph.nodes if replaced.get(id(node), node) is not None
            ]
        return sum(1 for node in replaced.values() if node is not None)

    # --- match/check --------------------------------------------------------------------

    def _check(
        self, scope: Scope, matmul: gs.Node, add: gs.Node, side: int, infos: dict[str, TensorInfo], counts: Counter
    ) -> None:
        product, bias = add.inputs[side], add.inputs[1 - side]
        if scope.opset < _MIN_OPSET:
            raise _Refused(f"opset {scope.opset} < {_MIN_OPSET}")
        if counts[product.name] != 1 or product.name in output_names(scope.graph):
            raise _Refused("MatMul output has other readers")
        if bias is product:
            raise _Refused("Add reads the product twice")
        left, right = (known_shape(tensor, infos) for tensor in matmul.inputs)
        if left is None or right is None:
            raise _Refused("MatMul operand rank unknown")
        if len(left) != 2 or len(right) != 2:
            raise _Refused("MatMul operands are not both rank 2")
        elem_type = known_elem_type(matmul.inputs[0], infos) or known_elem_type(matmul.inputs[1], infos)
        if elem_type not in _FUSABLE_TYPES:
            raise _Refused("element type is not float32/float64")
        bias_shape = known_shape(bias, infos)
        if bias_shape is None:
            raise _Refused("bias shape unknown")
        if not bias_fits_gemm(bias_shape, left[0], right[1]):
            raise _Refused("bias does not broadcast one way to [M, N]")

    # --- rewrite ------------------------------------------------------------------------

    def _rewrite(self, matmul: gs.Node, add: gs.Node, side: int) -> gs.Node:
        """The Gemm replacing ``matmul`` and ``add`` (both detached); the caller places it."""
        left, right = matmul.inputs[0], matmul.inputs[1]
        bias, result = add.inputs[1 - side], add.outputs[0]
        gemm = gs.Node("Gemm", name=add.name or matmul.name, domain=add.domain)
        detach(matmul)
        detach(add)
        gemm.inputs = [left, right, bias]
        gemm.outputs = [result]
        logger.debug("fused MatMul %s + Add %s into Gemm", matmul.name, add.name)
        return gemm
