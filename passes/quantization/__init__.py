"""Quantization: int8 (static Q/DQ and dynamic), int8 embeddings, and low-bit weight-only.

Three passes share the arithmetic in ``common.py`` (scales, zero points, Q/DQ nodes):

* ``qdq`` (``qdq.py``) — int8 activations and weights. Read ``qdq.py`` first, then
  ``qdq_placement.py`` (where Q/DQ pairs go, which tensors share scales),
  ``qdq_rewrite.py`` (applying a placement), ``dynamic.py`` (run-time quantized
  MatMul/Gemm for onnxruntime CPU), ``smoothing.py`` (moving activation outliers into the
  weights, applied per build so no float copy of a weight is ever made), ``op_speed.py``
  (paired timing under the thread counts the model will run with: a node is quantized only
  where it is faster), ``speed_rules.py`` (the same decision from shapes alone,
  ``decide_by=rules``) and the framework's ``onnxopt.error_budget`` (layers kept in float to
  meet an error budget). Ranges come from the framework's streamed calibration (``onnxopt.calibration``).
  For onnxruntime on the CPU every int8 weight stays within ±64 unless the target names a
  VNNI CPU: the framework's ``onnxopt.int8_kernels`` says why, and checks every emitted node.
* ``quantize-embeddings`` (``quantize_embeddings.py``) — Gather-only embedding tables to
  onnxruntime's int8 ``GatherBlockQuantized``.
* ``weight-only`` (``weight_only.py``) — int4 blockwise (round-to-nearest or GPTQ),
  binary and ternary weights with float activations. Read ``weight_only_plan.py`` (which
  weights, in which ``[K, N]`` view), ``lowbit.py`` (the quantizers), ``gptq.py`` (error
  feedback with the input statistics of ``onnxopt.input_statistics``),
  ``weight_only_emit.py`` and ``packing.py`` (onnxruntime's packed layouts, on the
  framework's ``onnxopt.bit_packing``).

Framework pieces used: ``onnxopt.calibration``, ``onnxopt.activations``,
``onnxopt.error_budget``, ``onnxopt.input_statistics``, ``onnxopt.weight_axes``, ``onnxopt.runtime``,
``onnxopt.int8_kernels`` (weight bounds per CPU kind, the saturation check),
``onnxopt.cpu_features`` (the host, for the timing record), ``onnxopt.targets``,
``onnxopt.blas_threads``.
"""
