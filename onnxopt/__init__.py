"""onnxopt: an ONNX graph-rewriting optimizer whose every pass is verified.

Python API::

    from onnxopt import optimize
    result = optimize("model.onnx", "out.onnx", preset="default", verify=True)
    print(result.as_dict()["after"])

Lower-level pieces: ``load``/``save`` (lazy weights, external data, atomic writes),
``PassManager`` (checks, verification, rollback) and the pass registry in ``onnxopt.passes``.
"""

from __future__ import annotations

from onnxopt.api import OptimizeResult, optimize
from onnxopt.errors import BadInputError, OnnxoptError, VerificationError
from onnxopt.model_io import Model, load, save
from onnxopt.pass_manager import PassManager

__all__ = [
    "BadInputError",
    "Model",
    "OnnxoptError",
    "OptimizeResult",
    "PassManager",
    "VerificationError",
    "load",
    "optimize",
    "save",
]
__version__ = "0.1.0"
