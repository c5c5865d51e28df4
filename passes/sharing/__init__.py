"""Parameter sharing: several places read one stored set of values.

Two passes, one exact and one lossy (byte-identical copies are merged by
``dedup-initializers`` in ``cleanup/``, which runs before these):

* ``share-twins`` (``share_twins.py``, exact, in the ``default`` preset right after
  ``dedup-initializers``) — initializers equal to another up to a transpose, a reshape or
  both (a tied language-model head stored transposed) are stored once. Read
  ``share_twins.py`` first, then ``twin_search.py`` (narrowing candidates: type and count,
  first/last element, an order-independent streamed hash, sampled layouts, a full streamed
  comparison) and ``twin_rewrite.py`` (how each reader takes the kept tensor: Gemm
  transA/transB, composed Transpose, MatMul→Gemm, else a Transpose/Reshape node).

Framework pieces used: ``onnxopt.initializer_uses`` (initializers with the scope that sees
their readers), ``onnxopt.tensor_content`` (streamed digests, element reads, streamed
comparison), ``onnxopt.graph_edit`` (replacing uses across subgraphs), ``onnxopt.shape_info``.
"""
