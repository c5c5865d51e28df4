"""What a converter hands the common code: a loaded framework model, framework-neutral.

Each framework module (``from_torch``, ``from_tf``, ``from_sklearn``) loads a file into a
``LoadedSource``: the input signature it found, the feeds it carries (a ``.pt2`` keeps its
example inputs), a function that runs the original model (the reference for the
agreement check) and one that converts it to ONNX. The common code (``convert.core``)
never touches a framework, so adding one is one module. ``detect_format`` decides from
the path alone, before any heavy import, so a wrong file is refused in milliseconds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from onnxopt.data import InputSpec
from onnxopt.errors import BadInputError

# The file kinds onnxopt converts, by suffix; a folder is a TensorFlow SavedModel.
SUFFIX_FORMATS = {
    ".onnx": "onnx",
    ".pt2": "torch",
    ".keras": "keras",
    ".h5": "keras",
    ".skops": "skops",
    ".pkl": "pickle",
    ".pickle": "pickle",
    ".joblib": "pickle",
}
SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")
FRAMEWORK_OF_FORMAT = {
    "torch": "pytorch",
    "keras": "tensorflow",
    "savedmodel": "tensorflow",
    "skops": "scikit-learn",
    "pickle": "scikit-learn",
}

Outputs = list[np.ndarray] | dict[str, np.ndarray]


@dataclass
class LoadedSource:
    """A framework model ready to convert, with everything the agreement check needs."""

    path: Path
    framework: str
    converter: str  # converter name and version, recorded in the model's metadata
    inputs: list[InputSpec]
    reference: Callable[[dict[str, np.ndarray]], Outputs]
    to_onnx: Callable[[list[InputSpec], int], onnx.ModelProto]
    example_feeds: list[dict[str, np.ndarray]] = field(default_factory=list)
    # Concrete shapes for random feeds where the signature has symbolic dims (from example inputs).
    example_shapes: dict[str, list[int]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    # Whether --input may rename inputs (scikit-learn's one feature matrix has no name of its own).
    renamable_inputs: bool = False


def detect_format(path: Path) -> str:
    """The source format of ``path`` from its suffix (or SavedModel folder); BadInputError otherwise."""
    if not path.exists():
        raise BadInputError(f"{path}: no such file or folder")
    if path.is_dir():
        if any((path / name).is_file() for name in SAVED_MODEL_FILES):
            return "savedmodel"
        raise BadInputError(f"{path}: folder holds no TensorFlow SavedModel (no saved_model.pb)")
    kind = SUFFIX_FORMATS.get(path.suffix.lower())
    if kind is None:
        if path.suffix.lower() in (".pt", ".pth"):
            raise BadInputError(
                f"{path}: a .pt/.pth file is a TorchScript or state-dict checkpoint; save the model with "
                "torch.export.save(torch.export.export(model, args), 'model.pt2') and convert the .pt2"
            )
        known = ", ".join(sorted(SUFFIX_FORMATS))
        raise BadInputError(f"{path}: unsupported source format {path.suffix or '(no suffix)'} "
                            f"(known: {known}, or a SavedModel folder)")
    if path.stat().st_size == 0:
        raise BadInputError(f"{path}: empty file")
    return kind


def is_framework_source(path: Path) -> bool:
    """Whether ``path`` needs converting before the optimizer can read it (not ONNX)."""
    suffix = path.suffix.lower()
    return path.is_dir() or suffix in (".pt", ".pth") or SUFFIX_FORMATS.get(suffix, "onnx") != "onnx"
