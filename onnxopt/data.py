"""DATA: the one input format for verification, calibration and benchmarks.

Either one ``.npz`` whose arrays are named after the model inputs, batch axis holding N
samples (we slice batches of ``batch_size`` along axis 0), or a folder of ``.npz`` files,
each a complete feed. Feeds are produced lazily, one batch at a time, so calibration
never holds the whole data set's activations. Without DATA we make random inputs from the
declared shapes (symbolic dims from ``--shape``; integer inputs get small ranges).
"""

from __future__ import annotations

import logging
import math
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from onnxopt.errors import BadInputError
from onnxopt.report import human_bytes

logger = logging.getLogger(__name__)

_NP_FROM_ONNX = {
    onnx.TensorProto.FLOAT: np.float32,
    onnx.TensorProto.DOUBLE: np.float64,
    onnx.TensorProto.FLOAT16: np.float16,
    onnx.TensorProto.INT64: np.int64,
    onnx.TensorProto.INT32: np.int32,
    onnx.TensorProto.INT16: np.int16,
    onnx.TensorProto.INT8: np.int8,
    onnx.TensorProto.UINT8: np.uint8,
    onnx.TensorProto.UINT16: np.uint16,
    onnx.TensorProto.UINT32: np.uint32,
    onnx.TensorProto.UINT64: np.uint64,
    onnx.TensorProto.BOOL: np.bool_,
}

# Symbolic non-batch dims (sequence length, image size) get this size in random feeds:
# long enough that a transformer's attention and a CNN's pooling see realistic shapes.
DEFAULT_SYMBOLIC_DIM = 32
# A random feed is built in memory from the declared shapes before anything runs. Real inputs
# (token ids, 4K images, short videos) are far below this; a dimension of 2^40 from a damaged
# or mis-exported file is refused here, naming the input, instead of failing as MemoryError.
MAX_RANDOM_FEED_BYTES = 1 << 30
_warned_symbolic: set[tuple[str, str]] = set()


@dataclass(frozen=True)
class InputSpec:
    """A model input: name, numpy dtype and shape (ints, or strings for symbolic dims)."""

    name: str
    dtype: np.dtype
    shape: tuple[int | str | None, ...]
    # For integer inputs used as Gather indices into a constant table: the table's size
    # along the gathered axis, so random ids stay in range (token ids, embedding rows).
    index_bound: int | None = None


def input_specs(model: onnx.ModelProto) -> list[InputSpec]:
    """The real inputs of a model (initializers listed as inputs under IR < 4 excluded)."""
    initializers = {init.name for init in model.graph.initializer}
    bounds = _gather_index_bounds(model)
    specs = []
    for value in model.graph.input:
        if value.name in initializers:
            continue
        tensor_type = value.type.tensor_type
        if not value.type.HasField("tensor_type"):
            raise BadInputError(f"input {value.name!r} is not a tensor; give DATA for it")
        dtype = _NP_FROM_ONNX.get(tensor_type.elem_type)
        if dtype is None:
            raise BadInputError(f"input {value.name!r} has an element type onnxopt cannot generate; give DATA")
        shape: list[int | str | None] = []
        for dim in tensor_type.shape.dim:
            if dim.HasField("dim_value"):
                shape.append(int(dim.dim_value))
            else:
                shape.append(dim.dim_param or None)
        specs.append(InputSpec(value.name, np.dtype(dtype), tuple(shape), bounds.get(value.name)))
    return specs


def graph_input_specs(graph: gs.Graph, initializer_inputs: list[str] | tuple[str, ...] = ()) -> list[InputSpec]:
    """``input_specs`` of a graph-surgeon graph, without exporting the model (seconds for a large one)."""
    tables = {}
    for node in graph.nodes:
        if node.op == "Gather" and len(node.inputs) > 1 and isinstance(node.inputs[0], gs.Constant):
            axis = int(node.attrs.get("axis", 0))
            dims = list(node.inputs[0].shape)
            if dims and -len(dims) <= axis < len(dims) and int(dims[axis]) > 0:
                name = node.inputs[1].name
                tables[name] = min(tables.get(name, int(dims[axis])), int(dims[axis]))
    specs = []
    for tensor in graph.inputs:
        if tensor.name in initializer_inputs:
            continue
        shape = tuple(dim if isinstance(dim, int) else (dim or None) for dim in (tensor.shape or []))
        dtype = np.dtype(tensor.dtype) if tensor.dtype is not None else np.dtype(np.float32)
        specs.append(InputSpec(tensor.name, dtype, shape, tables.get(tensor.name)))
    return specs


def _gather_index_bounds(model: onnx.ModelProto) -> dict[str, int]:
    """Smallest constant-table size each graph input indexes through a Gather."""
    tables = {init.name: list(init.dims) for init in model.graph.initializer}
    bounds: dict[str, int] = {}
    for node in model.graph.node:
        if node.op_type != "Gather" or len(node.input) < 2 or node.input[0] not in tables:
            continue
        axis = next((attr.i for attr in node.attribute if attr.name == "axis"), 0)
        dims = tables[node.input[0]]
        if dims and -len(dims) <= axis < len(dims) and dims[axis] > 0:
            bounds[node.input[1]] = min(bounds.get(node.input[1], dims[axis]), dims[axis])
    return bounds


def parse_shape_option(items: tuple[str, ...] | list[str]) -> dict[str, list[int]]:
    """Parse ``--shape name=d0,d1,...`` options."""
    shapes: dict[str, list[int]] = {}
    for item in items:
        name, sep, dims = item.partition("=")
        if not sep or not name:
            raise BadInputError(f"--shape expects name=d0,d1,..., got {item!r}")
        try:
            shapes[name] = [int(d) for d in dims.split(",") if d.strip()]
        except ValueError:
            raise BadInputError(f"--shape {item!r}: dimensions must be integers") from None
        if any(dim < 0 for dim in shapes[name]):
            raise BadInputError(f"--shape {item!r}: dimensions cannot be negative")
    return shapes


def _concrete_shape(spec: InputSpec, shapes: dict[str, list[int]], batch_size: int) -> list[int]:
    if spec.name in shapes:
        given = shapes[spec.name]
        if len(given) != len(spec.shape):
            raise BadInputError(f"--shape {spec.name}: rank {len(given)} but the model declares rank {len(spec.shape)}")
        return given
    concrete = []
    for axis, dim in enumerate(spec.shape):
        if isinstance(dim, int):
            concrete.append(dim)
        else:
            concrete.append(batch_size if axis == 0 else DEFAULT_SYMBOLIC_DIM)
            if axis != 0 and (spec.name, str(dim)) not in _warned_symbolic:
                _warned_symbolic.add((spec.name, str(dim)))
                logger.warning(
                    "input %s: symbolic dim %r set to %d (use --shape)", spec.name, dim, DEFAULT_SYMBOLIC_DIM
                )
    return concrete


def random_feed_shapes(
    specs: list[InputSpec], shapes: dict[str, list[int]] | None = None, batch_size: int = 1
) -> dict[str, list[int]]:
    """The concrete shape of each input of a random feed, refused when the feed would not fit in memory.

    Raises BadInputError naming the largest input before anything is allocated when the
    feed would exceed MAX_RANDOM_FEED_BYTES: sizes that came from ``--shape``, the batch
    size or symbolic dims can be changed with ``--shape``; a fixed declared shape cannot.
    """
    shapes = shapes or {}
    concrete = {spec.name: _concrete_shape(spec, shapes, batch_size) for spec in specs}
    sizes = {spec.name: math.prod(concrete[spec.name]) * spec.dtype.itemsize for spec in specs}
    if sum(sizes.values()) <= MAX_RANDOM_FEED_BYTES:
        return concrete
    largest = max(specs, key=lambda spec: sizes[spec.name])
    problem = (
        f"input {largest.name!r}: a random feed of shape {concrete[largest.name]} ({largest.dtype}) needs "
        f"{human_bytes(sizes[largest.name])}, over the {human_bytes(MAX_RANDOM_FEED_BYTES)} limit"
    )
    fixed = largest.name not in shapes and all(isinstance(dim, int) for dim in largest.shape)
    if fixed and math.prod(largest.shape) * largest.dtype.itemsize > MAX_RANDOM_FEED_BYTES:
        raise BadInputError(f"{problem}; the model declares this shape as fixed, so no input of a smaller size "
                            "fits it: check the model's input shape")
    raise BadInputError(f"{problem}; give smaller sizes with --shape {largest.name}=d0,d1,... "
                        "(or --batch-size), or real inputs as DATA")


def random_feed(
    specs: list[InputSpec], shapes: dict[str, list[int]] | None = None, batch_size: int = 1, seed: int = 0
) -> dict[str, np.ndarray]:
    """A random feed from declared shapes; integer inputs get ranges safe for ids and masks."""
    rng = np.random.default_rng(seed)
    concrete = random_feed_shapes(specs, shapes, batch_size)
    feed = {}
    for spec in specs:
        shape = concrete[spec.name]
        lowered = spec.name.lower()
        if spec.dtype == np.bool_:
            feed[spec.name] = np.asarray(rng.random(shape) > 0.5)  # an array even for 0-d inputs
        elif np.issubdtype(spec.dtype, np.integer):
            if "mask" in lowered:
                feed[spec.name] = np.ones(shape, dtype=spec.dtype)
            elif "type" in lowered or "segment" in lowered:
                feed[spec.name] = np.zeros(shape, dtype=spec.dtype)
            else:
                feed[spec.name] = rng.integers(0, spec.index_bound or 100, size=shape).astype(spec.dtype)
        else:
            feed[spec.name] = rng.standard_normal(shape).astype(spec.dtype)
    return feed


@dataclass
class Feeds:
    """A re-iterable source of feeds: DATA from disk or random ones."""

    specs: list[InputSpec]
    path: Path | None = None
    batch_size: int = 1
    shapes: dict[str, list[int]] = field(default_factory=dict)
    random_count: int = 2
    max_batches: int | None = None

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        for produced, feed in enumerate(self._iter_unbounded()):
            if self.max_batches is not None and produced >= self.max_batches:
                return
            yield feed

    def _iter_unbounded(self) -> Iterator[dict[str, np.ndarray]]:
        if self.path is None:
            for seed in range(self.random_count):
                yield random_feed(self.specs, self.shapes, self.batch_size, seed)
            return
        if self.path.is_dir():
            files = sorted(self.path.glob("*.npz"))
            if not files:
                raise BadInputError(f"DATA folder {self.path} holds no .npz files")
            for file in files:
                yield self._checked(_load_npz(file), file.name)
            return
        arrays = _load_npz(self.path)
        sample_count = self._sample_count(arrays)
        for start in range(0, sample_count, self.batch_size):
            batch = {name: arrays[name][start : start + self.batch_size] for name in self._names()}
            yield self._checked(batch, self.path.name)

    def _names(self) -> list[str]:
        return [spec.name for spec in self.specs]

    def _sample_count(self, arrays: dict[str, np.ndarray]) -> int:
        counts = {name: arrays[name].shape[0] if arrays[name].ndim else 1 for name in self._names() if name in arrays}
        self._checked({name: arrays[name] for name in self._names() if name in arrays}, str(self.path), batch=False)
        if len(set(counts.values())) > 1:
            raise BadInputError(f"DATA {self.path}: inputs hold different sample counts {counts}")
        count = next(iter(counts.values()), 0)
        if count == 0:
            raise BadInputError(f"DATA {self.path}: no samples")
        return count

    def _checked(self, feed: dict[str, np.ndarray], source: str, batch: bool = True) -> dict[str, np.ndarray]:
        missing = [name for name in self._names() if name not in feed]
        if missing:
            raise BadInputError(
                f"DATA {source}: missing input(s) {', '.join(missing)} (has {', '.join(sorted(feed)) or 'nothing'})"
            )
        checked = {}
        for spec in self.specs:
            value = np.asarray(feed[spec.name])
            if value.dtype != spec.dtype:
                same_kind = np.issubdtype(value.dtype, np.floating) == np.issubdtype(spec.dtype, np.floating)
                if not same_kind or value.dtype == np.bool_ or spec.dtype == np.bool_:
                    raise BadInputError(
                        f"DATA {source}: input {spec.name!r} is {value.dtype}, the model takes {spec.dtype}"
                    )
                value = value.astype(spec.dtype)
            if len(spec.shape) != value.ndim:
                raise BadInputError(
                    f"DATA {source}: input {spec.name!r} has rank {value.ndim}, the model takes rank {len(spec.shape)}"
                )
            for axis, (want, got) in enumerate(zip(spec.shape, value.shape, strict=True)):
                if isinstance(want, int) and want != got and not (axis == 0 and not batch):
                    raise BadInputError(
                        f"DATA {source}: input {spec.name!r} has shape {list(value.shape)}, "
                        f"the model takes {list(spec.shape)}"
                    )
            checked[spec.name] = value
        return checked


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    if not path.exists():
        raise BadInputError(f"DATA {path}: no such file or folder")
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as error:  # a damaged archive
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise BadInputError(f"DATA {path}: not a readable .npz ({reason})") from None


def make_feeds(
    model: onnx.ModelProto,
    data: str | Path | None = None,
    batch_size: int = 1,
    shapes: dict[str, list[int]] | None = None,
    max_batches: int | None = None,
    random_count: int = 2,
) -> Feeds:
    """A Feeds for ``model``: DATA when given, else random inputs."""
    if batch_size < 1:
        raise BadInputError("--batch-size must be at least 1")
    specs = input_specs(model)
    shapes = shapes or {}
    unknown = sorted(set(shapes) - {spec.name for spec in specs})
    if unknown:
        raise BadInputError(f"--shape names unknown input(s): {', '.join(unknown)}")
    feeds = Feeds(
        specs=specs,
        path=Path(data) if data is not None else None,
        batch_size=batch_size,
        shapes=shapes,
        max_batches=max_batches,
        random_count=random_count,
    )
    if feeds.path is not None:
        next(iter(feeds), None)  # validate up front: bad DATA is a usage error, not a mid-run failure
    else:
        random_feed_shapes(specs, shapes, batch_size)  # refuse impossible sizes before any pass runs
    return feeds
