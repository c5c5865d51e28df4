"""``onnxopt inspect``: what is in a model, without loading its weights into memory.

Duplicate weights are found by streamed content hashes grouped by dtype and shape, so a
user sees how much ``dedup-initializers`` would save before running it.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import onnx_graphsurgeon as gs

from onnxopt.external_data import external_info, is_external
from onnxopt.model_io import Model, constant_nbytes, iter_model_tensor_protos, load, read_proto
from onnxopt.model_stats import count_model, dtype_name, iter_constants
from onnxopt.tensor_content import content_digest


def _value_infos(values: list[gs.Tensor]) -> list[dict[str, Any]]:
    return [
        {
            "name": t.name,
            "dtype": dtype_name(t.dtype) if t.dtype is not None else None,
            "shape": list(t.shape) if t.shape is not None else None,
        }
        for t in values
    ]


def inspect_model(path: Path) -> dict[str, Any]:
    """A JSON-ready description of the model at ``path``."""
    proto = read_proto(path)
    model: Model = load(path)
    counts = count_model(model)
    by_dtype: dict[str, dict[str, int]] = defaultdict(lambda: {"tensors": 0, "parameters": 0, "bytes": 0})
    groups: dict[str, list[gs.Constant]] = defaultdict(list)
    for constant in iter_constants(model):
        entry = by_dtype[dtype_name(constant.dtype)]
        entry["tensors"] += 1
        entry["parameters"] += int(np.prod(constant.shape)) if constant.shape is not None else 0
        entry["bytes"] += constant_nbytes(constant)
        if constant_nbytes(constant) > 0:
            groups[content_digest(constant)].append(constant)
    duplicates = [
        {
            "tensors": sorted(c.name for c in members),
            "bytes_each": constant_nbytes(members[0]),
            "bytes_wasted": constant_nbytes(members[0]) * (len(members) - 1),
        }
        for members in groups.values()
        if len(members) > 1
    ]
    duplicates.sort(key=lambda d: -d["bytes_wasted"])
    external_files: dict[str, int] = defaultdict(int)
    for tensor in iter_model_tensor_protos(proto):
        if is_external(tensor):
            external_files[external_info(tensor).get("location", "")] += int(
                external_info(tensor).get("length", 0) or 0
            )
    subgraphs = sum(1 for node in model.graph.nodes for v in node.attrs.values() if isinstance(v, gs.Graph))
    return {
        "path": str(path),
        "file_bytes": path.stat().st_size,
        "ir_version": proto.ir_version,
        "opsets": {(o.domain or "ai.onnx"): o.version for o in proto.opset_import},
        "producer": f"{proto.producer_name} {proto.producer_version}".strip(),
        "inputs": _value_infos(model.graph.inputs),
        "outputs": _value_infos(model.graph.outputs),
        "nodes": counts.nodes,
        "ops": counts.ops,
        "functions": [f"{f.domain}::{f.name}" for f in model.graph.functions],
        "subgraphs": subgraphs,
        "parameters": counts.parameters,
        "weight_bytes": counts.weight_bytes,
        "weights_by_dtype": dict(by_dtype),
        "duplicate_weights": duplicates,
        "duplicate_bytes": sum(d["bytes_wasted"] for d in duplicates),
        "external_data": dict(external_files),
    }
