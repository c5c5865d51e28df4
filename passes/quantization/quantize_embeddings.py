"""quantize-embeddings: int8 embedding tables that are gathered, not dequantized whole.

In a transformer the word-embedding table is often the largest single tensor (MiniLM: 47 MB
of its 90 MB), and the int8 passes leave it in float because a Gather is not a compute op.
onnxruntime's ``com.microsoft::GatherBlockQuantized`` gathers rows of a uint8 table and
dequantizes only those rows, so the table shrinks 4× at no run-time cost. Values are
rounded symmetrically per block of ``block_size`` along each row (zero point 128, scale =
block max / 127): the error per element is at most half a step of its block.

Unsafe when the model must run outside onnxruntime (the op is a contrib op): the pass only
runs for the ``ort-cpu``/``ort-cuda`` targets. Tables read by anything other than Gather
(tied output heads) stay float. Walks the main graph only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from onnxopt.errors import BadInputError
from onnxopt.model_io import Model, constant_nbytes, read_constant
from onnxopt.pass_api import Contract, Pass, PassContext, PassOptions, PassResult, SearchSpec

logger = logging.getLogger(__name__)

CONTRIB_DOMAIN = "com.microsoft"
ORT_TARGETS = ("ort-cpu", "ort-cuda")
ZERO_POINT = 128


@dataclass(frozen=True)
class QuantizeEmbeddingsOptions(PassOptions):
    """``block_size``: elements per scale along a row (a power of two ≥ 16);
    ``min_table_bytes``: smaller tables stay float; ``target``: filled from ``--target``."""

    block_size: int = 32
    min_table_bytes: int = 1024 * 1024
    target: str = ""


def quantize_rows(table: np.ndarray, block_size: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 codes (zero point 128) and float32 scales [rows, cols / block_size] of a 2-D table."""
    rows, cols = table.shape
    blocks = np.asarray(table, dtype=np.float32).reshape(rows, cols // block_size, block_size)
    scales = (np.abs(blocks).max(axis=-1) / np.float32(127.0)).astype(np.float32)
    safe = np.where(scales > 0, scales, np.float32(1.0))
    # In place on one float32 buffer: a 50k-row vocabulary is 150 MB per temporary.
    codes = blocks / safe[..., None]
    np.rint(codes, out=codes)
    np.clip(codes, -127, 127, out=codes)
    codes += ZERO_POINT
    return codes.reshape(rows, cols).astype(np.uint8), scales


class QuantizeEmbeddings(Pass):
    """Store large Gather-only embedding tables as int8 blocks (onnxruntime GatherBlockQuantized)."""

    name = "quantize-embeddings"
    contract = Contract.LOSSY
    cleanup = False
    walks_subgraphs = False
    walks_functions = False
    Options = QuantizeEmbeddingsOptions

    @classmethod
    def search_space(cls) -> SearchSpec:
        """For ``onnxopt tune``: on or off after any precision pass, with a few block sizes."""
        return SearchSpec(stage=70, options={"block_size": (32, 64, 128)})

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        options: QuantizeEmbeddingsOptions = self.options  # type: ignore[assignment]
        target = options.target or ctx.target
        if target not in ORT_TARGETS:
            return PassResult(False, notes=[f"target {target} cannot run {CONTRIB_DOMAIN}::GatherBlockQuantized"])
        if options.block_size < 16 or options.block_size & (options.block_size - 1):
            raise BadInputError("quantize-embeddings: block_size must be a power of two of at least 16")
        notes: list[str] = []
        quantized: dict[str, tuple[gs.Constant, gs.Constant, gs.Constant]] = {}
        saved = 0
        for node in list(model.graph.nodes):
            reason = self._refusal(node, options)
            if reason:
                if reason != "not an embedding":
                    notes.append(f"kept float: {node.inputs[0].name} ({reason})")
                continue
            table = node.inputs[0]
            if table.name not in quantized:  # one quantized copy per table, however many Gathers read it
                codes, scales = quantize_rows(read_constant(table), options.block_size)
                zero_points = np.full(scales.shape, ZERO_POINT, dtype=np.uint8)
                quantized[table.name] = (
                    gs.Constant(f"{table.name}_uint8", codes),
                    gs.Constant(f"{table.name}_scales", scales),
                    gs.Constant(f"{table.name}_zero_points", zero_points),
                )
                saved += constant_nbytes(table) - codes.nbytes - scales.nbytes - zero_points.nbytes
            codes_t, scales_t, zero_t = quantized[table.name]
            indices = node.inputs[1]
            node.op, node.domain = "GatherBlockQuantized", CONTRIB_DOMAIN
            node.attrs = {"gather_axis": 0, "quantize_axis": 1, "block_size": options.block_size, "bits": 8}
            node.inputs.clear()
            node.inputs.extend([codes_t, indices, scales_t, zero_t])
        converted = len(quantized)
        if not converted:
            return PassResult(False, {"tables": 0}, notes)
        domains = {entry.domain for entry in (model.graph.import_domains or [])}
        if CONTRIB_DOMAIN not in domains:
            model.graph.import_domains = [*(model.graph.import_domains or []),
                                          onnx.helper.make_opsetid(CONTRIB_DOMAIN, 1)]
        model.graph.cleanup()
        return PassResult(True, {"tables": converted, "bytes_saved": saved}, notes)

    @staticmethod
    def _refusal(node: gs.Node, options: QuantizeEmbeddingsOptions) -> str:
        """Why this node's table stays float ('' when it can be quantized)."""
        if node.op != "Gather" or node.domain or not isinstance(node.inputs[0], gs.Constant):
            return "not an embedding"
        table = node.inputs[0]
        if len(table.shape) != 2 or int(node.attrs.get("axis", 0)) != 0:
            return "not a 2-D table gathered along rows"
        if np.dtype(table.dtype) != np.float32:
            return f"dtype {np.dtype(table.dtype)}"
        if constant_nbytes(table) < options.min_table_bytes:
            return "not an embedding"
        if table.shape[1] % options.block_size:
            return f"row length {table.shape[1]} is not a multiple of block_size {options.block_size}"
        if any(consumer.op != "Gather" for consumer in table.outputs):
            return "also read by a non-Gather op (tied weights)"
        return ""
