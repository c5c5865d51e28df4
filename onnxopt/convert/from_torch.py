"""PyTorch ``torch.export`` programs (``.pt2``) → ONNX through PyTorch's own exporter.

A ``.pt2`` written by ``torch.export.save`` holds the traced graph, the weights, the
input signature with its symbolic dims and range constraints, and the example inputs it
was exported with. We convert with ``torch.onnx.export(program, dynamo=True)``, the
exporter PyTorch maintains (TorchScript export is deprecated), and use the example
inputs as the first agreement feed; random feeds reuse their concrete shapes so that a
symbolic dim never leaves its declared range.

Note: ``torch.export.load`` unpickles parts of the archive, like every PyTorch loader;
only convert ``.pt2`` files from a source you trust.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from onnxopt.convert.extras import require
from onnxopt.convert.source import LoadedSource
from onnxopt.data import InputSpec
from onnxopt.errors import BadInputError

logger = logging.getLogger(__name__)

# torch.onnx's exporter does not go below opset 18; older targets are down-converted by `onnxopt export`.
MIN_OPSET = 18


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _numpy_dtype(torch: Any, dtype: Any) -> np.dtype:
    try:
        return np.dtype(torch.empty((), dtype=dtype).numpy().dtype)
    except TypeError:  # bfloat16 and other dtypes numpy lacks
        raise BadInputError(f"input dtype {dtype} has no numpy equivalent; onnxopt cannot feed it") from None


def _signature(torch: Any, program: Any) -> list[InputSpec]:
    """User inputs with dtypes and shapes (symbolic dims by their symbol name)."""
    names = list(program.graph_signature.user_inputs)
    placeholders = {node.name: node for node in program.graph.nodes if node.op == "placeholder"}
    specs = []
    for name in names:
        value = placeholders[name].meta.get("val") if name in placeholders else None
        if value is None or not hasattr(value, "shape"):
            raise BadInputError(f"input {name!r} of the program is not a tensor; onnxopt converts tensor inputs only")
        shape: list[int | str | None] = [int(dim) if isinstance(dim, int) else str(dim) for dim in value.shape]
        specs.append(InputSpec(name, _numpy_dtype(torch, value.dtype), tuple(shape)))
    return specs


def _example_feed(program: Any, specs: list[InputSpec]) -> dict[str, np.ndarray] | None:
    example = getattr(program, "example_inputs", None)
    if not example:
        return None
    args, kwargs = example
    flat = list(args) + list(kwargs.values())
    if len(flat) != len(specs) or not all(hasattr(value, "detach") for value in flat):
        return None
    return {spec.name: value.detach().cpu().numpy() for spec, value in zip(specs, flat, strict=True)}


def _flatten_outputs(torch: Any, result: Any) -> list[np.ndarray]:
    leaves, _ = torch.utils._pytree.tree_flatten(result)
    return [leaf.detach().cpu().numpy() if hasattr(leaf, "detach") else np.asarray(leaf) for leaf in leaves]


def load_torch(path: Path) -> LoadedSource:
    """Load a ``.pt2`` saved with ``torch.export.save``; BadInputError when it does not load."""
    torch = require("torch", "converting a PyTorch program")
    require("onnxscript", "converting a PyTorch program")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.export.load(str(path))
    except Exception as error:  # zip errors, version mismatches, pickled garbage
        raise BadInputError(
            f"{path}: torch.export.load cannot load it ({type(error).__name__}: {_first_line(error)})"
        ) from None
    specs = _signature(torch, program)
    example = _example_feed(program, specs)
    module = program.module()

    def reference(feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        tensors = [torch.from_numpy(np.ascontiguousarray(feed[spec.name])) for spec in specs]
        with torch.no_grad():
            return _flatten_outputs(torch, module(*tensors))

    def to_onnx(given: list[InputSpec], opset: int) -> onnx.ModelProto:
        if [spec.name for spec in given] != [spec.name for spec in specs]:
            raise BadInputError("a .pt2 program carries its own signature; --input may only restate its inputs")
        if opset < MIN_OPSET:
            raise BadInputError(f"PyTorch's ONNX exporter writes opset {MIN_OPSET} or newer; "
                                f"convert at {MIN_OPSET} and down-convert with `onnxopt export --opset {opset}`")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                onnx_program = torch.onnx.export(program, (), dynamo=True, opset_version=opset, verbose=False)
        except Exception as error:
            raise BadInputError(
                f"{path}: torch.onnx.export failed ({type(error).__name__}: {_first_line(error)})"
            ) from None
        return onnx_program.model_proto

    return LoadedSource(
        path=path,
        framework="pytorch",
        converter=f"torch.onnx (dynamo) {torch.__version__}",
        inputs=specs,
        reference=reference,
        to_onnx=to_onnx,
        example_feeds=[example] if example is not None else [],
        example_shapes={name: list(value.shape) for name, value in (example or {}).items()},
    )
