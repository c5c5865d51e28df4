"""Structural checks run after every pass.

A pass that leaves a dangling input, a duplicated tensor name, an unknown domain, a
missing function or a tensor whose data does not fit its dims must be caught before
anything is written. The checks are the ones up-front validation runs on a user's file
(``onnxopt.validate.check_model_structure``: scopes, declared types, stored data lengths
and ``onnx.checker`` on a weight-stripped copy), run here on the pass's exported output,
so whatever they find after a pass was broken by that pass.
"""

from __future__ import annotations

from onnxopt.errors import ModelDefect
from onnxopt.model_io import Model, checkable_proto
from onnxopt.validate import check_model_structure


class StructureError(Exception):
    """The graph is malformed after a pass."""


def check_structure(model: Model) -> None:
    """Raise StructureError naming the first structural problem of ``model``."""
    try:
        # Large weights are shown as shape-only references (no copy of a single weight): their bytes were checked
        # when the model was loaded, or come from arrays whose size is their shape.
        check_model_structure(checkable_proto(model), None)
    except ModelDefect as defect:
        raise StructureError(str(defect)) from None
