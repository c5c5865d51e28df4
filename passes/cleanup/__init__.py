"""Cleanup: exact rewrites that leave the outputs bit-identical.

These five passes make up the ``default`` preset (with the two fusions) and are looped to
a fixed point by the pass manager, because each one can expose work for another: folding
a Shape subgraph leaves dead nodes, merging duplicate initializers makes nodes identical
for ``cse``, and so on. Each is bit-exact under onnxruntime, so ``--verify`` compares them
bitwise, and each walks If/Loop/Scan bodies and model-local functions.

Read in this order:

* ``eliminate_identity`` — Identity, no-op Reshape/Transpose/Cast, inference Dropout, zero Pad;
* ``fold_constants`` — nodes whose inputs are all constant, evaluated with onnxruntime's own
  kernels (``onnxopt.node_eval``), refusing folds that grow the file;
* ``dedup_initializers`` — identical initializers and Constant nodes, hashed streaming
  (``onnxopt.tensor_content``), byte-compared before merging;
* ``cse`` — identical nodes (same op, attributes, inputs);
* ``eliminate_dead`` — unused nodes, initializers, functions and opset imports.

Framework pieces used: ``onnxopt.graph_edit`` / ``graph_walk`` (scopes, uses, replacing
tensors), ``onnxopt.shape_info`` (types and shapes), ``onnxopt.model_io`` (lazy weights).
"""
