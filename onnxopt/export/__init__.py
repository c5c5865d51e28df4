"""ONNX → the file a target runtime loads: the ORT format, TensorRT engines, prepared ONNX.

Read in this order: ``prepare`` (fixed shapes, opset/IR down-conversion, applied to a
copy), ``ort_format`` (onnxruntime's own converter, the reduced-operator config, the
kernels report and the bit-identity check), ``tensorrt`` (precision flags from the
model's types, optimization profiles from ``--shape MIN/OPT/MAX``, engine build and run
where TensorRT is importable) and ``core`` (the ``export`` function and ``--check``).
"""

from onnxopt.export.core import FORMATS, SUFFIXES, ExportOptions, ExportResult, export
from onnxopt.export.ort_format import OrtOptions
from onnxopt.export.prepare import PrepareOptions

__all__ = ["FORMATS", "SUFFIXES", "ExportOptions", "ExportResult", "OrtOptions", "PrepareOptions", "export"]
