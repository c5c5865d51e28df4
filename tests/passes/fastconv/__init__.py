"""Tests of the fastconv family: native kernels, fast-conv, strassen-matmul."""
