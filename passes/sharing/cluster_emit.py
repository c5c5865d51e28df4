"""Clustered weights as standard ONNX that runtimes fold back into a dense tensor at load.

A clustered weight is stored as its codebooks and its packed indices; a small chain of
standard ops rebuilds the dense weight from them, and since every input of that chain is
a constant, onnxruntime's constant folding computes it once when the session loads (graph
optimizations on, the default): the file shrinks, the kernels and the speed stay those of
the float model. The chain (opset ≥ 11, for ``BitShift``):

1. Indices of ``b`` bits are split into planes of 4, 2 or 1 bits (``b = 6`` → 4 + 2),
   each packed ``8 / width`` to a byte, low bits first, over the flattened ``[G, M]``
   index matrix (``onnxopt.bit_packing``). A plane is unpacked by two ``BitShift`` nodes
   (shift each slot to the top of the byte, then down to the bottom: no ``BitwiseAnd``,
   which needs opset 18) and a ``Reshape``; planes are combined as ``Σ plane · 2^shift``.
2. Group ``g``'s indices are offset by ``g · K`` (``Range``) so one ``Gather`` on the
   flattened codebooks ``[G · K]`` decodes every group at once.
3. ``Reshape``/``Transpose`` put the ``[G, M]`` values back in the weight's layout (the
   steps of ``cluster_plan.GroupLayout``).

Codebooks are stored in the weight's dtype, in float16 (then ``Cast``), or in int8 with one
float16 scale per group (``Cast`` and ``Mul``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from onnxopt.bit_packing import pack_last_axis
from onnxopt.graph_edit import fresh_name, numpy_to_onnx_dtype
from onnxopt.passes.sharing.cluster_plan import GroupLayout

# Opset of BitShift (and of Range), the first ops the decoding chain needs.
MIN_OPSET = 11
# Widths of the planes a b-bit index is split into (each packs into whole bytes).
PLANES = {1: (1,), 2: (2,), 3: (2, 1), 4: (4,), 5: (4, 1), 6: (4, 2), 7: (4, 2, 1), 8: (8,)}
CODEBOOK_DTYPES = ("auto", "float32", "float16", "int8")


@dataclass
class Palette:
    """What one clustered weight becomes: per-group codebooks and indices in ``layout``'s ``[G, M]`` grouping.

    ``centroids`` hold, per group, the values the codebook stores (for int8 codebooks the
    integer levels, each group scaled by ``codebook_scales``).
    """

    layout: GroupLayout
    centroids: np.ndarray  # [G, K] float64
    indices: np.ndarray  # [G, M] unsigned
    bits: int
    codebook_dtype: np.dtype
    codebook_scales: np.ndarray | None = None  # [G] for int8 codebooks

    def decode(self, dtype: np.dtype) -> np.ndarray:
        """The dense weight the graph rebuilds, computed in numpy the same way (for errors and tests)."""
        return self.layout.from_groups(np.take_along_axis(self.codebook_values(dtype), self.indices.astype(np.int64),
                                                          axis=1))

    def codebook_values(self, dtype: np.dtype) -> np.ndarray:
        """``[G, K]`` codebook entries in the weight's dtype, as the graph computes them."""
        values = self.stored_codebook().astype(dtype)
        if self.codebook_scales is not None:
            scales = self.codebook_scales.astype(np.float16).astype(dtype)
            values = (values * scales[:, None]).astype(dtype)
        return values

    def stored_codebook(self) -> np.ndarray:
        """The codebook array as written to the file."""
        if self.codebook_scales is not None:
            return np.clip(np.rint(self.centroids), -127, 127).astype(np.int8)
        return self.centroids.astype(self.codebook_dtype)


def _pack_planes(indices: np.ndarray, bits: int) -> list[tuple[int, int, np.ndarray]]:
    """(width, shift, packed uint8 bytes) of each plane of the flattened indices."""
    flat = np.asarray(indices, dtype=np.uint16).reshape(-1)
    planes, shift = [], 0
    for width in PLANES[bits]:
        part = ((flat >> shift) & ((1 << width) - 1)).astype(np.uint8)
        planes.append((width, shift, pack_last_axis(part, width)))
        shift += width
    return planes


class _Builder:
    """Appends the decoding nodes of one weight to a graph, with fresh names."""

    def __init__(self, graph: gs.Graph, taken: set[str], base: str) -> None:
        self.graph, self.taken, self.base = graph, taken, base
        self.nodes: list[gs.Node] = []
        self.constants: list[gs.Constant] = []

    def const(self, label: str, value: np.ndarray) -> gs.Constant:
        constant = gs.Constant(fresh_name(f"{self.base}/{label}", self.taken), np.array(value, order="C"))
        self.constants.append(constant)
        return constant

    def node(self, op: str, inputs: list[gs.Tensor], label: str, dtype: np.dtype | None = None,
             shape: list[int] | None = None, **attrs) -> gs.Variable:
        out = gs.Variable(fresh_name(f"{self.base}/{label}", self.taken), dtype=dtype, shape=shape)
        self.nodes.append(gs.Node(op, fresh_name(f"{self.base}/{op}", self.taken), attrs=attrs, inputs=inputs,
                                  outputs=[out]))
        return out


def _unpack_plane(b: _Builder, width: int, packed: np.ndarray, count: int, index: int) -> gs.Tensor:
    """uint8 ``[count]`` values of one plane."""
    if width == 8:
        return b.const(f"indices{index}", packed.reshape(-1)[:count])
    per_byte = 8 // width
    stored = b.const(f"indices{index}_packed", packed.reshape(-1, 1))  # [L, 1]: broadcasts against the slots
    lefts = b.const(f"shift_left{index}", np.array([8 - (slot + 1) * width for slot in range(per_byte)], np.uint8))
    right = b.const(f"shift_right{index}", np.array([8 - width], np.uint8))
    up = b.node("BitShift", [stored, lefts], f"slots{index}", np.uint8, [packed.size, per_byte], direction="LEFT")
    down = b.node("BitShift", [up, right], f"codes{index}", np.uint8, [packed.size, per_byte], direction="RIGHT")
    flat = b.node("Reshape", [down, b.const(f"flat{index}", np.array([-1], np.int64))], f"plane{index}", np.uint8,
                  [packed.size * per_byte])
    if packed.size * per_byte == count:
        return flat
    return b.node("Slice", [flat, b.const(f"start{index}", np.array([0], np.int64)),
                            b.const(f"stop{index}", np.array([count], np.int64))], f"plane{index}_trimmed",
                  np.uint8, [count])


def emit_palette(graph: gs.Graph, weight: gs.Constant, palette: Palette, taken: set[str]) -> tuple[gs.Variable,
                                                                                                    list[gs.Constant]]:
    """Append the decoding chain of ``palette`` to ``graph``; returns its output (the dense weight,
    named after it) and the constants it stores. The caller redirects the weight's readers."""
    dtype = np.dtype(weight.dtype)
    groups, per_group = palette.indices.shape
    clusters = palette.centroids.shape[1]
    count = groups * per_group
    b = _Builder(graph, taken, weight.name + "/palette")

    planes = [_unpack_plane(b, width, packed, count, index)
              for index, (width, _, packed) in enumerate(_pack_planes(palette.indices, palette.bits))]
    shifts = [shift for _, shift, _ in _pack_planes(np.zeros(1, np.uint8), palette.bits)]
    index_type = onnx.TensorProto.INT32
    combined: gs.Tensor = b.node("Cast", [planes[0]], "index0", np.int32, [count], to=index_type)
    for plane, shift, position in zip(planes[1:], shifts[1:], range(1, len(planes)), strict=True):
        part = b.node("Cast", [plane], f"index{position}", np.int32, [count], to=index_type)
        part = b.node("Mul", [part, b.const(f"weight{position}", np.array(1 << shift, np.int32))],
                      f"index{position}_shifted", np.int32, [count])
        combined = b.node("Add", [combined, part], f"index_upto{position}", np.int32, [count])
    if groups > 1:
        shaped = b.node("Reshape", [combined, b.const("grouped_shape", np.array([groups, per_group], np.int64))],
                        "grouped_indices", np.int32, [groups, per_group])
        offsets = b.node("Range", [b.const("range_start", np.array(0, np.int32)),
                                   b.const("range_limit", np.array(groups * clusters, np.int32)),
                                   b.const("range_delta", np.array(clusters, np.int32))], "group_offsets", np.int32,
                         [groups])
        column = b.node("Reshape", [offsets, b.const("column_shape", np.array([groups, 1], np.int64))],
                        "group_offsets_column", np.int32, [groups, 1])
        combined = b.node("Add", [shaped, column], "codebook_indices", np.int32, [groups, per_group])
    codebook: gs.Tensor = b.const("codebook", palette.stored_codebook().reshape(-1))
    if palette.codebook_scales is not None:
        levels = b.node("Cast", [b.node("Reshape", [codebook, b.const("codebook_shape", np.array([groups, clusters],
                                                                                                   np.int64))],
                                        "codebook_levels", np.int8, [groups, clusters])],
                        "codebook_float", dtype, [groups, clusters], to=numpy_to_onnx_dtype(dtype))
        scales: gs.Tensor = b.const("codebook_scale", palette.codebook_scales.astype(np.float16).reshape(groups, 1))
        if dtype != np.float16:
            scales = b.node("Cast", [scales], "codebook_scale_float", dtype, [groups, 1], to=numpy_to_onnx_dtype(dtype))
        scaled = b.node("Mul", [levels, scales], "codebook_scaled", dtype, [groups, clusters])
        codebook = b.node("Reshape", [scaled, b.const("codebook_flat", np.array([-1], np.int64))], "codebook_values",
                          dtype, [groups * clusters])
    elif palette.codebook_dtype != dtype:
        codebook = b.node("Cast", [codebook], "codebook_values", dtype, [groups * clusters],
                          to=numpy_to_onnx_dtype(dtype))
    dense = b.node("Gather", [codebook, combined], "values", dtype, [groups, per_group] if groups > 1 else [count],
                   axis=0)
    for position, (op, argument) in enumerate(palette.layout.inverse_steps()):
        if op == "Reshape":
            dense = b.node("Reshape", [dense, b.const(f"shape{position}", np.array(argument, np.int64))],
                           f"reshaped{position}", dtype, list(argument))
        else:
            shape = [dense.shape[axis] for axis in argument]
            dense = b.node("Transpose", [dense], f"transposed{position}", dtype, shape, perm=list(argument))
    dense.name = weight.name  # the weight leaves the graph; its readers now read this tensor under its name
    graph.nodes.extend(b.nodes)
    return dense, b.constants


def stored_bytes(constants: list[gs.Constant]) -> int:
    """Bytes the decoding chain's constants take in the file."""
    return sum(int(np.asarray(constant.values).nbytes) for constant in constants)
