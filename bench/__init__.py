"""Benchmark scripts (not tests): run from the project root as ``python -m bench.<script>``.

- ``compare``: onnxopt's presets vs the peers users would pick instead, on the sample models.
- ``large_model``: peak memory of ``onnxopt optimize`` on a > 2 GB model with external data.
Results go to ``bench/results/`` as markdown and JSON.
"""
