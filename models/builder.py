"""A small onnx.helper wrapper that every model builder shares.

Builders describe a graph as a sequence of ``node(...)`` calls that return output names,
the way exporters emit it; this class owns the bookkeeping that would otherwise be copied
into each builder: unique node and tensor names, de-duplicated small constants, external
initializers, and writing the file atomically with the lowest IR version its opset needs
(onnx would otherwise stamp its newest IR, which older runtimes refuse).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import onnx
import onnx.helper
import onnx.numpy_helper

from onnxopt.versioning import minimum_ir_version

logger = logging.getLogger(__name__)

OPSET = 17
SIZES = ("tiny", "small", "base")


class GraphBuilder:
    """Accumulates nodes, initializers, inputs and outputs of one ONNX graph."""

    def __init__(self, name: str, opset: int = OPSET) -> None:
        self.name = name
        self.opset = opset
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs: list[onnx.ValueInfoProto] = []
        self._used_names: set[str] = set()
        self._constants: dict[tuple[str, tuple[int, ...], bytes], str] = {}

    def unique(self, base: str) -> str:
        """``base`` if unused, else ``base_1``, ``base_2``, …"""
        name, index = base, 0
        while name in self._used_names:
            index += 1
            name = f"{base}_{index}"
        self._used_names.add(name)
        return name

    def input(self, name: str, elem_type: int, shape: Sequence[int | str]) -> str:
        self._used_names.add(name)
        self.inputs.append(onnx.helper.make_tensor_value_info(name, elem_type, list(shape)))
        return name

    def output(self, name: str, elem_type: int, shape: Sequence[int | str | None] | None) -> str:
        self.outputs.append(onnx.helper.make_tensor_value_info(name, elem_type, None if shape is None else list(shape)))
        return name

    def initializer(self, name: str, array: np.ndarray) -> str:
        """A named weight; ``name`` must be new (weights keep their source names)."""
        if name in self._used_names:
            raise ValueError(f"initializer name {name!r} is already used")
        self._used_names.add(name)
        self.initializers.append(onnx.numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def external_initializer(self, name: str, elem_type: int, shape: Sequence[int], location: str,
                             offset: int, length: int) -> str:
        """A weight whose bytes the caller already wrote into ``location`` at ``offset``."""
        if name in self._used_names:
            raise ValueError(f"initializer name {name!r} is already used")
        self._used_names.add(name)
        tensor = onnx.TensorProto()
        tensor.name = name
        tensor.data_type = elem_type
        tensor.dims.extend(shape)
        tensor.data_location = onnx.TensorProto.EXTERNAL
        for key, value in (("location", location), ("offset", str(offset)), ("length", str(length))):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value
        self.initializers.append(tensor)
        return name

    def const(self, value: np.ndarray | Sequence[int] | float | int, dtype: type | np.dtype | None = None) -> str:
        """A small constant (shape vector, scalar, axes); equal constants share one initializer."""
        array = np.asarray(value, dtype=dtype)
        if array.dtype == np.float64 and dtype is None:
            array = array.astype(np.float32)
        key = (array.dtype.str, array.shape, array.tobytes())
        if key not in self._constants:
            name = self.unique(f"const_{len(self._constants)}")
            self.initializers.append(onnx.numpy_helper.from_array(np.ascontiguousarray(array), name))
            self._constants[key] = name
        return self._constants[key]

    def node(self, op_type: str, inputs: Sequence[str], name: str, outputs: int | Sequence[str] = 1,
             domain: str = "", **attrs) -> str | list[str]:
        """Append a node named ``name`` (made unique); returns its output name(s)."""
        node_name = self.unique(name)
        if isinstance(outputs, int):
            out_names = [node_name if outputs == 1 else f"{node_name}_out{index}" for index in range(outputs)]
            for out in out_names:
                self._used_names.add(out)
        else:
            out_names = list(outputs)
            self._used_names.update(out_names)
        self.nodes.append(onnx.helper.make_node(op_type, list(inputs), out_names, name=node_name, domain=domain,
                                                **attrs))
        return out_names[0] if len(out_names) == 1 else out_names

    def model(self, doc_string: str = "") -> onnx.ModelProto:
        """The ModelProto, with the lowest IR version its opset and features need."""
        graph = onnx.helper.make_graph(self.nodes, self.name, self.inputs, self.outputs, self.initializers)
        proto = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", self.opset)],
                                       producer_name="onnxopt-models", doc_string=doc_string)
        proto.ir_version = minimum_ir_version(proto)
        return proto


def write_model(proto: onnx.ModelProto, path: str | os.PathLike[str]) -> Path:
    """Write ``proto`` to ``path`` through a temporary file and a rename (never a partial file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(proto.SerializeToString())
        os.chmod(temp, 0o644)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    logger.info("wrote %s (%d bytes, IR %d)", path, path.stat().st_size, proto.ir_version)
    return path


def size_argument(value: str) -> str:
    if value not in SIZES:
        raise argparse.ArgumentTypeError(f"size must be one of {', '.join(SIZES)}")
    return value


def run_cli(description: str, build: Callable[..., Path], add_arguments: Callable[[argparse.ArgumentParser], None]
            | None = None, sizes: bool = True) -> None:
    """``python -m models.<name> OUT.onnx [--size …]``: parse arguments and call ``build``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("output", type=Path, help="where to write the .onnx file")
    if sizes:
        parser.add_argument("--size", type=size_argument, default="base", help=f"one of {', '.join(SIZES)}")
    if add_arguments is not None:
        add_arguments(parser)
    parser.add_argument("--quiet", action="store_true", help="do not log what was written")
    arguments = vars(parser.parse_args())
    logging.basicConfig(level=logging.WARNING if arguments.pop("quiet") else logging.INFO, format="%(message)s")
    output = arguments.pop("output")
    build(output, **arguments)
