"""TensorFlow SavedModel folders and Keras ``.keras`` files → ONNX through tf2onnx.

A SavedModel carries its serving signatures (``serving_default`` unless ``--signature``
names another): input names, dtypes and shapes come from there, and the outputs keep
the signature's output names. A ``.keras`` file is loaded with Keras' ``safe_mode``
(it refuses to deserialize Lambda layers' bytecode) and converted with its input layers
as the signature. Both run through tf2onnx's ``from_function``/``from_keras``, the
converter's public Python API, on the CPU.
"""

from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from onnxopt.convert.extras import require
from onnxopt.convert.source import LoadedSource
from onnxopt.data import InputSpec
from onnxopt.errors import BadInputError

logger = logging.getLogger(__name__)
DEFAULT_SIGNATURE = "serving_default"


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _keep_alive(owner: Any) -> Any:
    """Referenced from closures so the loaded SavedModel (owner of the variables) is not collected."""
    return owner


def _spec_of(name: str, tensor_spec: Any) -> InputSpec:
    shape = tuple(None if dim is None else int(dim) for dim in tensor_spec.shape)
    return InputSpec(name, np.dtype(tensor_spec.dtype.as_numpy_dtype), shape)


def _tf_specs(tf: Any, specs: list[InputSpec]) -> list[Any]:
    return [tf.TensorSpec([dim if isinstance(dim, int) else None for dim in spec.shape], tf.as_dtype(spec.dtype),
                          name=spec.name) for spec in specs]


@contextlib.contextmanager
def _quiet() -> Any:
    """tf2onnx and TensorFlow print progress to stdout/stderr; the library logs instead."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        yield
    for line in (out.getvalue() + err.getvalue()).splitlines():
        if line.strip():
            logger.debug("tf: %s", line)


def _convert_function(tf2onnx: Any, function: Any, specs: list[Any], opset: int, path: Path) -> onnx.ModelProto:
    try:
        with _quiet():
            proto, _ = tf2onnx.convert.from_function(function, input_signature=specs, opset=opset)
    except Exception as error:
        reason = f"{type(error).__name__}: {_first_line(error)}"
        raise BadInputError(f"{path}: tf2onnx cannot convert it ({reason})") from None
    return proto


def _rename_outputs(proto: onnx.ModelProto, names: list[str]) -> None:
    """Name graph outputs after the Keras model's outputs (tf2onnx names them ``Identity:0``…)."""
    if len(names) != len(proto.graph.output) or len(set(names)) != len(names):
        return
    existing = {value.name for value in proto.graph.value_info} | {value.name for value in proto.graph.input}
    existing |= {output for node in proto.graph.node for output in node.output}
    renames = {value.name: name for value, name in zip(proto.graph.output, names, strict=True)
               if value.name != name and name not in existing}
    for node in proto.graph.node:
        node.output[:] = [renames.get(output, output) for output in node.output]
        node.input[:] = [renames.get(value, value) for value in node.input]
    for value in proto.graph.output:
        value.name = renames.get(value.name, value.name)


def load_saved_model(path: Path, signature: str | None = None) -> LoadedSource:
    """Load a SavedModel folder and pick one serving signature."""
    tf = require("tensorflow", "converting a TensorFlow SavedModel")
    tf2onnx = require("tf2onnx", "converting a TensorFlow SavedModel")
    try:
        with _quiet():
            loaded = tf.saved_model.load(str(path))
    except Exception as error:
        raise BadInputError(f"{path}: TensorFlow cannot load the SavedModel ({_first_line(error)})") from None
    available = sorted(getattr(loaded, "signatures", {}) or {})
    wanted = signature or DEFAULT_SIGNATURE
    if wanted not in available:
        raise BadInputError(f"{path}: no signature {wanted!r} (has: {', '.join(available) or 'none'})")
    function = loaded.signatures[wanted]
    arguments = function.structured_input_signature[1]
    specs = [_spec_of(name, spec) for name, spec in arguments.items()]
    names = [spec.name for spec in specs]

    def reference(feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        _keep_alive(loaded)  # the signature's variables live as long as the loaded object
        result = function(**{name: tf.constant(feed[name]) for name in names})
        return {name: value.numpy() for name, value in result.items()}

    def to_onnx(given: list[InputSpec], opset: int) -> onnx.ModelProto:
        tf_specs = _tf_specs(tf, given)

        @tf.function(input_signature=tf_specs, autograph=False)
        def serve(*args: Any) -> Any:
            _keep_alive(loaded)  # the SavedModel's variables must outlive tf2onnx's tracing
            return function(**dict(zip(names, args, strict=True)))

        return _convert_function(tf2onnx, serve, tf_specs, opset, path)

    return LoadedSource(
        path=path,
        framework="tensorflow",
        converter=f"tf2onnx {tf2onnx.__version__} (TensorFlow {tf.__version__})",
        inputs=specs,
        reference=reference,
        to_onnx=to_onnx,
        notes=[f"signature {wanted}"],
    )


def load_keras(path: Path) -> LoadedSource:
    """Load a ``.keras``/``.h5`` file with Keras' safe mode and use its input layers as the signature."""
    tf = require("tensorflow", "converting a Keras model")
    tf2onnx = require("tf2onnx", "converting a Keras model")
    keras = require("keras", "converting a Keras model")
    try:
        with _quiet():
            model = keras.models.load_model(str(path), compile=False, safe_mode=True)
    except Exception as error:
        raise BadInputError(f"{path}: Keras cannot load it ({type(error).__name__}: {_first_line(error)})") from None
    inputs = list(getattr(model, "inputs", None) or [])
    if not inputs:
        raise BadInputError(f"{path}: the Keras model has no defined inputs (build it or save a functional model)")
    specs = [
        InputSpec(str(getattr(tensor, "name", f"input_{index}")).split(":")[0],
                  np.dtype(tf.as_dtype(tensor.dtype).as_numpy_dtype),
                  tuple(None if dim is None else int(dim) for dim in tensor.shape))
        for index, tensor in enumerate(inputs)
    ]

    def reference(feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        values = [feed[spec.name] for spec in specs]
        result = model(values if len(values) > 1 else values[0], training=False)
        flat = tf.nest.flatten(result)
        return [np.asarray(value) for value in flat]

    def to_onnx(given: list[InputSpec], opset: int) -> onnx.ModelProto:
        tf_specs = _tf_specs(tf, given)

        @tf.function(input_signature=tf_specs, autograph=False)
        def serve(*args: Any) -> Any:
            return model(list(args) if len(args) > 1 else args[0], training=False)

        proto = _convert_function(tf2onnx, serve, tf_specs, opset, path)
        _rename_outputs(proto, [str(name) for name in getattr(model, "output_names", None) or []])
        return proto

    return LoadedSource(
        path=path,
        framework="tensorflow",
        converter=f"tf2onnx {tf2onnx.__version__} (Keras {keras.__version__}, TensorFlow {tf.__version__})",
        inputs=specs,
        reference=reference,
        to_onnx=to_onnx,
    )
