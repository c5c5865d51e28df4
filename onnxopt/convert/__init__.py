"""Framework models → ONNX: PyTorch ``.pt2``, TensorFlow SavedModel / Keras, scikit-learn.

Read in this order: ``source`` (formats, detected from the path, and the framework-neutral
``LoadedSource``), ``signature`` (``--input name:dtype:shape``), ``extras`` (the optional
framework imports and the one-line "install onnxopt[...]" refusal), one module per
framework (``from_torch``, ``from_tf``, ``from_sklearn``), ``agreement`` (framework vs
ONNX on the same feeds) and ``core`` (the ``convert`` function tying them together).
Each framework is an optional extra; nothing here imports one until a file needs it.
"""

from onnxopt.convert.core import DEFAULT_OPSET, ConvertOptions, ConvertResult, convert
from onnxopt.convert.source import detect_format, is_framework_source

__all__ = ["DEFAULT_OPSET", "ConvertOptions", "ConvertResult", "convert", "detect_format", "is_framework_source"]
