"""onnxopt: an ONNX graph-rewriting optimizer whose every pass is verified.

Python API::

    from onnxopt import optimize
    result = optimize("model.onnx", "out.onnx", preset="default", verify=True)
    print(result.as_dict()["after"])

    from onnxopt import tune
    found = tune("model.onnx", "best.onnx", data="held_out.npz", metric="cosine", max_error=0.005)
    print(found.best["key"], [trial["key"] for trial in found.front])

Lower-level pieces: ``load``/``save`` (lazy weights, external data, atomic writes),
``PassManager`` (checks, verification, rollback) and the pass registry in ``onnxopt.passes``.
"""

from __future__ import annotations

from onnxopt.api import OptimizeResult, optimize
from onnxopt.errors import BadInputError, OnnxoptError, VerificationError
from onnxopt.model_io import Model, load, save
from onnxopt.pass_manager import PassManager

# Imported eagerly: the subpackage ``onnxopt.tune`` must be loaded before the name ``tune``
# is bound to the function, or a later ``import onnxopt.tune.x`` would rebind it to the package.
from onnxopt.tune import TuneResult, tune

__all__ = [
    "BadInputError",
    "Model",
    "OnnxoptError",
    "OptimizeResult",
    "PassManager",
    "TuneResult",
    "VerificationError",
    "load",
    "optimize",
    "save",
    "tune",
]
__version__ = "0.1.0"
