"""Finding twins: initializers that hold the same elements in another layout.

A twin ``T`` of a kept tensor ``K`` satisfies ``T == Reshape(Transpose(K, perm), T.shape)``
bit for bit (either step may be absent). Finding them must stay cheap on models of many
gigabytes, so candidates are narrowed in steps that read more and more of each tensor:

1. same element type and element count (no read);
2. same first and last element: both survive any transpose and any reshape (two reads);
3. same ``multiset_digest`` — a streamed, order-independent hash of the elements (one
   sequential read per tensor, nothing held);
4. per candidate permutation of ``K``'s axes, a sample of elements compared at the
   positions the permutation maps them to (a few reads);
5. a full streamed byte comparison of ``T`` against ``K`` read in the permuted order,
   which alone proves a twin (one tensor in memory, the other streamed).

Axes of size 1 are left out of the permutations (moving them never changes the element
order), and an identical layout with an identical shape is left to ``dedup-initializers``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import onnx_graphsurgeon as gs

from onnxopt.external_data import CHUNK_BYTES
from onnxopt.model_io import read_constant
from onnxopt.tensor_content import ElementReader, element_size, iter_content_chunks, streams_equal

# Tensors with more axes of size > 1 than this are not searched (6! = 720 permutations).
MAX_SEARCHED_RANK = 6
# Elements compared per permutation before any full read (plus the first and the last).
SAMPLE_ELEMENTS = 64


@dataclass(frozen=True)
class Relation:
    """``twin == Reshape(Transpose(keeper, perm), twin_shape)``; ``perm`` is the identity when only reshaped."""

    perm: tuple[int, ...]
    keeper_shape: tuple[int, ...]
    twin_shape: tuple[int, ...]

    @property
    def transposed_shape(self) -> tuple[int, ...]:
        return tuple(self.keeper_shape[axis] for axis in self.perm)

    @property
    def transposes(self) -> bool:
        """True when the element order changes (a Transpose is needed)."""
        return self.perm != tuple(range(len(self.perm)))

    @property
    def reshapes(self) -> bool:
        """True when the transposed keeper still needs a Reshape to the twin's shape."""
        return self.transposed_shape != self.twin_shape

    @property
    def is_matrix_transpose(self) -> bool:
        """Both 2-D and ``twin == keeperᵀ``: what Gemm's transA/transB absorb for free."""
        return len(self.keeper_shape) == 2 and self.perm == (1, 0) and not self.reshapes

    def inverse(self) -> Relation | None:
        """The relation the other way round (keeper from twin), when it has this same form.

        It has whenever the reshape only adds or removes axes of size 1 (then a transpose
        of the twin restores the keeper's order); a reshape that splits or merges axes
        after a transpose has no single-transpose inverse.
        """
        if not self.transposes:
            return Relation(tuple(range(len(self.twin_shape))), self.twin_shape, self.keeper_shape)
        keeper_moving = [axis for axis, dim in enumerate(self.keeper_shape) if dim != 1]
        twin_moving = [axis for axis, dim in enumerate(self.twin_shape) if dim != 1]
        moved = [self.perm[position] for position, dim in enumerate(self.transposed_shape) if dim != 1]
        if [self.keeper_shape[axis] for axis in moved] != [self.twin_shape[axis] for axis in twin_moving]:
            return None
        twin_axis_of = dict(zip(moved, twin_moving, strict=True))  # keeper axis -> twin axis holding it
        fixed = [axis for axis, dim in enumerate(self.twin_shape) if dim == 1]
        perm = (*(twin_axis_of[axis] for axis in keeper_moving), *fixed)
        if list(perm[: len(keeper_moving)]) == twin_moving:
            perm = tuple(range(len(self.twin_shape)))  # only axes of size 1 move: no transpose
        return Relation(perm, self.twin_shape, self.keeper_shape)

    def describe(self) -> str:
        steps = []
        if self.transposes:
            steps.append(f"transpose{list(self.perm)}")
        if self.reshapes:
            steps.append(f"reshape{list(self.twin_shape)}")
        return " + ".join(steps) or "identical"


@dataclass
class SearchCounters:
    """How far candidates got before they were told apart (for the pass's stats)."""

    tensors_hashed: int = 0
    sample_rejections: int = 0
    full_compares: int = 0
    full_compare_failures: int = 0
    skipped_rank: int = 0
    left_for_compute_readers: int = 0  # proven twins not shared: a MatMul/Conv/… would read a rebuilt tensor
    notes: list[str] = field(default_factory=list)


def shape_of(constant: gs.Constant) -> tuple[int, ...]:
    return tuple(int(dim) for dim in constant.shape)


def candidate_perms(shape: tuple[int, ...]) -> Iterator[tuple[int, ...]]:
    """Permutations of ``shape``'s axes that give distinct element orders, the identity first.

    Axes of size 1 stay at the end in their order: moving them never moves an element.
    """
    moving = [axis for axis, dim in enumerate(shape) if dim != 1]
    fixed = [axis for axis, dim in enumerate(shape) if dim == 1]
    yield tuple(range(len(shape)))
    for order in itertools.permutations(moving):
        if list(order) != moving:
            yield (*order, *fixed)


def corner_key(constant: gs.Constant, count: int) -> bytes:
    """The first and last element's bits: equal for every transpose/reshape of the same tensor."""
    reader = ElementReader(constant)
    try:
        return reader.bits([0, count - 1]).tobytes()
    finally:
        reader.close()


def _sample_positions(count: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    drawn = rng.integers(0, count, size=min(SAMPLE_ELEMENTS, count))
    return np.unique(np.concatenate([[0, count - 1], drawn]))


def _keeper_positions(twin_positions: np.ndarray, keeper_shape: tuple[int, ...], perm: tuple[int, ...]) -> np.ndarray:
    """Flat positions in the keeper of the elements at ``twin_positions`` of ``Transpose(keeper, perm)``."""
    transposed_shape = tuple(keeper_shape[axis] for axis in perm)
    twin_index = np.unravel_index(twin_positions, transposed_shape)
    keeper_index = [None] * len(perm)
    for position, axis in enumerate(perm):
        keeper_index[axis] = twin_index[position]
    return np.ravel_multi_index(tuple(keeper_index), keeper_shape)


def _transposed_chunks(keeper: np.ndarray, perm: tuple[int, ...]) -> Iterator[bytes]:
    """``Transpose(keeper, perm)`` as little-endian bytes in C order, in blocks of about CHUNK_BYTES."""
    view = keeper.transpose(perm)
    if view.dtype.byteorder == ">":
        view = view.astype(view.dtype.newbyteorder("<"))
    shape = view.shape
    itemsize = max(1, view.itemsize)
    if not shape:
        yield np.ascontiguousarray(view).tobytes()
        return
    # The fewest leading axes whose sub-blocks fit a chunk; the last of them is walked in runs.
    split = 0
    while split < len(shape) and math.prod(shape[split:]) * itemsize > CHUNK_BYTES:
        split += 1
    if split == 0:
        yield np.ascontiguousarray(view).tobytes()
        return
    inner = math.prod(shape[split:]) * itemsize
    run = max(1, CHUNK_BYTES // max(1, inner))
    for index in np.ndindex(*shape[: split - 1]):
        for start in range(0, shape[split - 1], run):
            yield np.ascontiguousarray(view[(*index, slice(start, start + run))]).tobytes()


def find_relation(keeper: gs.Constant, twin: gs.Constant, counters: SearchCounters, seed: int = 0) -> Relation | None:
    """How ``twin`` is ``keeper`` rearranged, proven by a full comparison; None when it is not.

    The caller has checked element type and count. An identical layout with an identical
    shape is not reported (that is a plain duplicate).
    """
    keeper_shape, twin_shape = shape_of(keeper), shape_of(twin)
    count = math.prod(twin_shape)
    if element_size(keeper) is None or element_size(twin) is None or count == 0:
        return None
    if sum(dim != 1 for dim in keeper_shape) > MAX_SEARCHED_RANK:
        counters.skipped_rank += 1
        return None
    positions = _sample_positions(count, seed)
    keeper_reader, twin_reader = ElementReader(keeper), ElementReader(twin)
    keeper_values: np.ndarray | None = None
    try:
        twin_sample = twin_reader.bits(positions)
        twin_reader.close()
        for perm in candidate_perms(keeper_shape):
            relation = Relation(perm, keeper_shape, twin_shape)
            if not relation.transposes and not relation.reshapes:
                continue  # byte-identical: dedup-initializers' job
            if not np.array_equal(keeper_reader.bits(_keeper_positions(positions, keeper_shape, perm)), twin_sample):
                counters.sample_rejections += 1
                continue
            keeper_reader.close()
            counters.full_compares += 1
            if keeper_values is None:
                keeper_values = np.asarray(read_constant(keeper)).reshape(keeper_shape)
            if streams_equal(_transposed_chunks(keeper_values, perm), iter_content_chunks(twin)):
                return relation
            counters.full_compare_failures += 1
        return None
    finally:
        keeper_reader.close()
        twin_reader.close()
