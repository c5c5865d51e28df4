"""Stream intermediate activations of a model, one batch at a time.

Calibration (int8 ranges, fp16 overflow detection, GPTQ statistics) needs the values of
inner tensors. We expose the requested tensors as extra graph outputs of a copy of the
model and run it batch by batch, handing each batch's activations to the caller, who keeps
only running statistics. Memory is one batch of activations, whatever the data size: the
opposite of calibrators that stack every batch before computing ranges.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from onnxopt.model_io import Model
from onnxopt.runtime import create_session

logger = logging.getLogger(__name__)


def with_extra_outputs(model: Model, tensor_names: Iterable[str]) -> Model:
    """A copy of ``model`` whose main graph also outputs the named (main-graph) tensors."""
    work = model.copy()
    tensors = work.graph.tensors()
    existing = {tensor.name for tensor in work.graph.outputs}
    for name in tensor_names:
        if name in existing:
            continue
        tensor = tensors.get(name)
        if tensor is None or isinstance(tensor, gs.Constant):
            continue
        exposed = tensor
        if exposed.dtype is None:
            exposed.dtype = np.float32  # onnxruntime infers the real type; export needs one
        work.graph.outputs.append(exposed)
        existing.add(name)
    return work


def iter_activations(
    model: Model,
    tensor_names: Iterable[str],
    feeds: Iterable[dict[str, np.ndarray]],
    provider: str = "cpu",
    optimize: bool = False,
) -> Iterator[dict[str, np.ndarray]]:
    """For each feed, yield {tensor name: value} for the requested tensors (and outputs).

    Only one batch's activations exist at a time; the caller reduces them.
    """
    names = list(dict.fromkeys(tensor_names))
    probe = with_extra_outputs(model, names)
    session = create_session(probe, provider=provider, optimize=optimize)
    available = [output.name for output in session.get_outputs()]
    wanted = [name for name in available if name in set(names)] or available
    for feed in feeds:
        values = session.run(wanted, feed)
        yield dict(zip(wanted, values, strict=True))


def float_tensor_names(model: Model) -> list[str]:
    """Names of the main graph's float32 node outputs (candidates for range statistics)."""
    names = []
    for node in model.graph.nodes:
        for tensor in node.outputs:
            if tensor.name and (tensor.dtype is None or np.dtype(tensor.dtype) == np.float32):
                names.append(tensor.name)
    return names


def elem_type_of(value: onnx.ValueInfoProto) -> int:
    """The element type of a tensor ValueInfo (0 when unknown)."""
    return value.type.tensor_type.elem_type if value.type.HasField("tensor_type") else 0
