"""``python -m onnxopt.cli``: the same command line as the ``onnxopt`` script."""

from onnxopt.cli import main

main()
