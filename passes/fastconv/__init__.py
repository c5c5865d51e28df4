"""Fast convolution (and matrix multiplication) through custom ops with native kernels.

How the family works: a pass finds a pattern (a Conv with the residual Add and Relu/Clip after it, or a
MatMul with constant weights), builds a one-pattern model of it with the node's real shapes, times the
original against each candidate algorithm on the target's provider (or applies fixed rules), and
replaces the pattern by one ``com.onnxopt`` node where a candidate wins. Each custom op is also a
model-local FunctionProto whose body is the original standard subgraph, so optimized models run on any
runtime; onnxruntime with onnxopt's kernels (``onnxopt.kernels``, built from ``native/``) runs the
fast kernels instead.

Read first: ``fast_conv.py`` (the pass and its decisions), then ``match.py`` (what is eligible and why
not), ``islands.py`` / ``timing.py`` / ``accuracy.py`` (how a candidate is judged), ``ops.py`` (the ops
and their function bodies), ``rewrite.py``; ``strassen.py`` is the MatMul counterpart.

Framework pieces used: ``onnxopt.pass_api`` (Pass, options, PassResult), ``onnxopt.graph_edit``
(constants, names, node removal), ``onnxopt.shape_info`` (static shapes), ``onnxopt.runtime``
(onnxruntime sessions with the kernels registered), ``onnxopt.kernels`` (the native library),
``onnxopt.versioning`` (IR version of the timing models), ``onnxopt.model_io`` (Model).
"""
