"""Fusion: merge neighbouring ops into one, within a declared float tolerance (1e-5).

* ``fuse_conv_bn`` — an inference BatchNormalization folded into the Conv before it
  (weights and bias recomputed in float64, stored in the weights' type);
* ``fuse_matmul_add`` — MatMul + Add into Gemm where shapes prove it legal (2-D).

Both are part of the ``default`` preset, run to a fixed point with the cleanup passes, and
have contract ``tolerance``: the result differs from the original only by rounding
(reassociation). Framework pieces used: ``onnxopt.graph_edit``, ``onnxopt.shape_info``.
"""
