"""Parameter sharing: several places read one stored set of values.

Two passes, one exact and one lossy (byte-identical copies are merged by
``dedup-initializers`` in ``cleanup/``, which runs just before ``share-twins``):

* ``share-twins`` (``share_twins.py``, exact, in the ``default`` preset) — initializers
  equal to another up to a transpose, a reshape or both (a tied language-model head stored
  transposed) are stored once. Read ``share_twins.py`` first, then ``twin_search.py``
  (narrowing candidates: type and count, first/last element, an order-independent streamed
  hash, sampled layouts, a full streamed comparison) and ``twin_rewrite.py`` (how each
  reader takes the kept tensor: Gemm transA/transB, composed Transpose, MatMul→Gemm, else
  a Transpose/Reshape node — never a rebuilt weight under a MatMul/Conv unless asked).
* ``cluster-weights`` (``cluster_weights.py``, lossy, the ``palettize`` preset) — weights
  become per-group k-means codebooks plus packed indices (palettization), rebuilt by a
  chain of standard ops that onnxruntime folds into the dense weight at session load.
  Read ``cluster_weights.py`` first, then ``cluster_plan.py`` (which weights, and the
  ``[G, M]`` grouping of their elements), ``importance.py`` (weights of each element's
  error from streamed input statistics), ``palette_fit.py`` with ``kmeans.py`` (weighted
  k-means++ / Lloyd over all groups at once; indices by nearest entry or error feedback),
  and ``cluster_emit.py`` (the packed planes and the decoding chain).

Framework pieces used: ``onnxopt.initializer_uses`` (initializers with the scope that sees
their readers), ``onnxopt.tensor_content`` (streamed digests, element reads, streamed
comparison), ``onnxopt.graph_edit`` (replacing uses across subgraphs), ``onnxopt.shape_info``,
``onnxopt.input_statistics`` (streamed ``XᵀX`` and channel energies), ``onnxopt.error_feedback``
(the GPTQ loop shared with weight-only quantization), ``onnxopt.bit_packing``.
"""
