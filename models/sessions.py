"""One way to get an onnxruntime session from whatever the caller holds.

Evaluation helpers take a path, a ModelProto, an onnxopt ``Model`` or a ready session
(benchmarks reuse one session across metrics); this turns each into a session with
``onnxopt.runtime.create_session`` (CPU, onnxruntime's own rewrites off unless asked),
so every metric measures the graph as written.
"""

from __future__ import annotations

import os

import onnx
import onnxruntime as ort

from onnxopt.model_io import Model
from onnxopt.runtime import create_session

ModelLike = str | os.PathLike[str] | onnx.ModelProto | Model | ort.InferenceSession


def session_for(model: ModelLike, provider: str = "cpu", optimize: bool = False) -> ort.InferenceSession:
    """``model`` itself if it is a session, else a new session on ``provider``."""
    if isinstance(model, ort.InferenceSession):
        return model
    return create_session(model, provider=provider, optimize=optimize)


def output_names(session: ort.InferenceSession) -> list[str]:
    return [output.name for output in session.get_outputs()]
