"""Quantization: int8 (static Q/DQ and dynamic), int8 embeddings, and low-bit weight-only.

Three passes share the arithmetic in ``common.py`` (scales, zero points, Q/DQ nodes):

* ``qdq`` (``qdq.py``) — int8 activations and weights. Read ``qdq.py`` first, then
  ``qdq_placement.py`` (where Q/DQ pairs go, which tensors share scales),
  ``qdq_rewrite.py`` (applying a placement), ``dynamic.py`` (run-time quantized
  MatMul/Gemm for onnxruntime CPU), ``smoothing.py`` (moving activation outliers into the
  weights), ``op_speed.py`` (paired timing: a node is quantized only where it is faster)
  and the framework's ``onnxopt.error_budget`` (layers kept in float to meet an error
  budget). Ranges come from the framework's streamed calibration (``onnxopt.calibration``).
* ``quantize-embeddings`` (``quantize_embeddings.py``) — Gather-only embedding tables to
  onnxruntime's int8 ``GatherBlockQuantized``.
* ``weight-only`` (``weight_only.py``) — int4 blockwise (round-to-nearest or GPTQ),
  binary and ternary weights with float activations. Read ``weight_only_plan.py`` (which
  weights, in which ``[K, N]`` view), ``lowbit.py`` (the quantizers), ``gptq.py`` (error
  feedback with the input statistics of ``onnxopt.input_statistics``),
  ``weight_only_emit.py`` and ``packing.py`` (the packed formats).

Framework pieces used: ``onnxopt.calibration``, ``onnxopt.activations``, ``onnxopt.error_budget``,
``onnxopt.input_statistics``, ``onnxopt.weight_axes``, ``onnxopt.runtime``.
"""
