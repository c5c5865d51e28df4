"""Pruning: make tensors really smaller — neurons, channels, heads, layers — and N:M weight sparsity.

Structured passes remove units from every tensor and weight that carries them, so the
work and the file shrink on every runtime; the original model is the teacher that each
pruned layer is refitted against, in closed form, on calibration data.

* ``prune-neurons`` (``prune_neurons.py``) and ``prune-heads`` (``prune_heads.py``) share
  one driver. Read in this order: ``coupling.py`` (which tensors, weights, Reshape/Split
  constants and attributes carry one dimension, traced op by op; why a candidate is
  refused), ``candidates.py`` (the seeds: producers' output channels, head splits),
  ``statistics.py`` (the consumer's inputs in the pruned model against the teacher's
  outputs, as streamed Gram sums), ``recovery.py`` (optimal-brain-surgeon choice of units
  and the least-squares refit), ``rewrite.py`` (applying a removal everywhere at once;
  ``sliced_values.py`` keeps cut weights of external-data models lazy) and
  ``structured.py`` (the loop over groups, the error budget, the decisions, latency).
* ``only_zero=true`` (either pass) is the exact special case: units whose consumer weights
  are exactly zero go and nothing is refitted. The outputs are bit-identical under
  onnxruntime while the reduction is at most 256 deep (its GEMM accumulates 256-row
  blocks; past that, dropping zero rows regroups the partial sums: float rounding, ~1e-7).
* ``prune-layers`` (``prune_layers.py``, ``blocks.py``): whole residual blocks / transformer
  layers whose output is closest to their input (block influence, ShortGPT) are bypassed.
* ``sparsify`` (``sparsify.py``, ``sparsity.py``): unstructured or N:M (2:4) zeros along
  the reduction axis, by magnitude, Wanda or SparseGPT-style second-order updates.

Framework pieces used: ``onnxopt.shape_info`` (shapes for tracing), ``onnxopt.graph_edit``,
``onnxopt.activations`` (extra outputs for statistics), ``onnxopt.input_statistics``
(padding masks, XᵀX for sparsity), ``onnxopt.hessian_inverse`` (damped inverses shared with
GPTQ), ``onnxopt.error_budget`` (metrics and the budget search shared with ``qdq``),
``onnxopt.paired_timing`` (the measured latency change), ``onnxopt.weight_axes``.
"""
