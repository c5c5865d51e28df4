"""Optional frameworks: import them on demand, or say in one line which extra to install.

PyTorch, TensorFlow and scikit-learn are heavy and optional (``onnxopt[torch]``,
``onnxopt[tf]``, ``onnxopt[sklearn]``). A converter asks for its modules here, so that a
user without the extra gets ``BadInputError`` naming the ``pip install`` to run instead
of an ImportError traceback deep inside a converter.
"""

from __future__ import annotations

import importlib
import logging
import os
from types import ModuleType

from onnxopt.errors import BadInputError

logger = logging.getLogger(__name__)

# Which extra brings each importable module.
EXTRA_OF_MODULE = {
    "torch": "torch",
    "onnxscript": "torch",
    "tensorflow": "tf",
    "tf2onnx": "tf",
    "keras": "tf",
    "sklearn": "sklearn",
    "skl2onnx": "sklearn",
    "skops": "sklearn",
    "joblib": "sklearn",
}


def require(module: str, purpose: str) -> ModuleType:
    """Import ``module`` or raise BadInputError naming the extra that provides it."""
    if module.startswith("tensorflow") or module.startswith("tf2onnx") or module == "keras":
        # TensorFlow prints C++ log lines on import unless told otherwise; keep the terminal for our report.
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        return importlib.import_module(module)
    except ImportError as error:
        extra = EXTRA_OF_MODULE.get(module.split(".")[0], module)
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        logger.debug("import %s failed: %s", module, reason)
        raise BadInputError(
            f"{purpose} needs {module.split('.')[0]}, which is not installed: pip install 'onnxopt[{extra}]'"
        ) from None
