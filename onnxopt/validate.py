"""Up-front validation: a user's model is checked whole before any pass runs.

Every command that reads a model (``optimize``, ``inspect``, ``check``, the Python API)
loads it through ``onnxopt.model_io.load``, which calls ``validate_model`` on the parsed
protobuf before graph-surgeon imports it. Any defect becomes one ``BadInputError`` line
naming the tensor or node and what is wrong with it (exit code 2, nothing written), so a
broken input is never reported as a pass failure or an internal error, and never yields
an output file.

What is checked, in order (each step assumes the previous ones passed):

1. every name and string is UTF-8 (``text_check``);
2. element types are defined and dims are non-negative and addressable (``declared_types``);
3. each stored tensor's data is exactly as long as its dims say, external data included,
   without reading it (``stored_data``);
4. single assignment, every read defined in scope, subgraph and function references, no
   cycles (``scopes``, shared with the check after every pass);
5. onnx.checker with strict shape inference on a weight-stripped sorted copy
   (``onnx_check``): the verdict of ``check_model(full_check=True)``, except that node
   order is not a defect (graph-surgeon sorts) and sparse initializers count as the dense
   tensors onnxruntime makes of them. So an output that fails the full check while its
   input passed it would be a pass's doing (``bench/bad_input_fuzz.py`` looks for exactly that).

The checks after each pass (``check_model_structure``) are steps 2-4 and the checker
without shape inference: what a pass can break, at a cost paid many times per run.
"""

from __future__ import annotations

from pathlib import Path

import onnx

from onnxopt.declared_types import check_declared_types
from onnxopt.errors import BadInputError, ModelDefect
from onnxopt.onnx_check import check_with_onnx
from onnxopt.scopes import check_scopes
from onnxopt.stored_data import check_stored_data
from onnxopt.text_check import check_text


def check_model_structure(proto: onnx.ModelProto, base_dir: Path | None = None, full: bool = False) -> bool:
    """Types, stored data, scopes and onnx.checker (``full``: with strict shape inference); raises ModelDefect.

    External data is checked against its files when ``base_dir`` is known. Returns True
    when any tensor is stored as external data.
    """
    check_declared_types(proto)
    has_external = check_stored_data(proto, base_dir)
    check_scopes(proto)
    check_with_onnx(proto, full=full)
    return has_external


def validate_model(proto: onnx.ModelProto, base_dir: Path | None, what: str) -> None:
    """Check a user's model whole; raises BadInputError naming the first defect."""
    try:
        check_text(proto)
        if check_model_structure(proto, base_dir, full=True) and base_dir is None:
            raise ModelDefect("model has external data but no folder to read it from")
    except ModelDefect as defect:
        raise BadInputError(f"{what}: {defect}") from None
