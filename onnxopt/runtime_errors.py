"""The onnxruntime exceptions that mean "this input does not fit this model".

Running a session on a feed of the wrong shape or type raises one of these; calibration
and measurement code maps them to ``BadInputError`` so a user sees one clear line instead
of a traceback.
"""

from __future__ import annotations

from onnxruntime.capi import onnxruntime_pybind11_state as _state

ORT_RUN_ERRORS: tuple[type[BaseException], ...] = (
    _state.Fail,
    _state.InvalidArgument,
    _state.InvalidGraph,
    _state.NotImplemented,
    _state.RuntimeException,
)
