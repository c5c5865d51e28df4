"""scikit-learn estimators and pipelines → ONNX through skl2onnx.

Loading is where the danger is: unpickling runs whatever code the file names, so a
pickle or joblib file is opened only with ``--trust-pickle`` (refused otherwise, with the
reason). A ``.skops`` file goes through skops' safe loader: it lists the types the file
would instantiate that skops does not trust by default, and we refuse unless the user
names each one (``--trust-type``); nothing is trusted wholesale.

Classifiers are converted without ZipMap, so probabilities are a plain float tensor that
onnxruntime's minimal builds, TensorRT-free edge runtimes and our own comparisons can
read; the outputs are ``label`` and ``probabilities`` (classifiers) or ``variable``.
"""

from __future__ import annotations

import logging
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from onnxopt.convert.extras import require
from onnxopt.convert.source import LoadedSource
from onnxopt.data import InputSpec
from onnxopt.errors import BadInputError

logger = logging.getLogger(__name__)

PICKLE_REFUSAL = (
    "{path}: refusing to unpickle: loading a pickle/joblib file runs arbitrary code from the file; "
    "pass --trust-pickle if you trust its origin, or save the model with skops (skops.io.dump) as .skops"
)
DEFAULT_INPUT_NAME = "X"
ML_OPSET = 3


def _load_pickle(path: Path, trust_pickle: bool) -> Any:
    if not trust_pickle:
        raise BadInputError(PICKLE_REFUSAL.format(path=path))
    try:
        if path.suffix.lower() == ".joblib":
            joblib = require("joblib", "loading a joblib file")
            return joblib.load(path)
        with path.open("rb") as handle:
            return pickle.load(handle)
    except BadInputError:
        raise
    except Exception as error:  # a corrupt pickle raises anything from UnpicklingError to EOFError
        raise BadInputError(f"{path}: cannot unpickle ({type(error).__name__}: {_first_line(error)})") from None


def _load_skops(path: Path, trusted_types: list[str]) -> Any:
    sio = require("skops.io", "loading a .skops file")
    try:
        untrusted = sio.get_untrusted_types(file=path)
    except Exception as error:
        raise BadInputError(f"{path}: not a readable .skops file ({_first_line(error)})") from None
    refused = sorted(set(untrusted) - set(trusted_types))
    if refused:
        raise BadInputError(
            f"{path}: the file would instantiate types skops does not trust by default: {', '.join(refused)}; "
            "inspect them and pass --trust-type NAME for each one you trust"
        )
    try:
        return sio.load(path, trusted=sorted(set(untrusted)))
    except Exception as error:
        raise BadInputError(f"{path}: skops cannot load it ({type(error).__name__}: {_first_line(error)})") from None


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _check_estimator(model: Any, path: Path) -> None:
    base = require("sklearn.base", "converting a scikit-learn model")
    if not isinstance(model, base.BaseEstimator):
        raise BadInputError(f"{path}: holds a {type(model).__module__}.{type(model).__qualname__}, "
                            "not a scikit-learn estimator or pipeline")
    if not any(hasattr(model, name) for name in ("predict", "transform")):
        raise BadInputError(f"{path}: the estimator has neither predict nor transform")
    try:
        require("sklearn.utils.validation", "converting a scikit-learn model").check_is_fitted(model)
    except BadInputError:
        raise
    except Exception:
        raise BadInputError(f"{path}: the estimator is not fitted") from None


def _final_step(model: Any) -> Any:
    while hasattr(model, "steps"):
        model = model.steps[-1][1]
    return model


def _signature(model: Any, path: Path) -> list[InputSpec]:
    count = getattr(model, "n_features_in_", None)
    if count is None:
        raise BadInputError(f"{path}: the estimator does not record its feature count; give --input X:float32:N,F")
    return [InputSpec(DEFAULT_INPUT_NAME, np.dtype(np.float32), (None, int(count)))]


def _tensor_type(spec: InputSpec) -> Any:
    data_types = require("skl2onnx.common.data_types", "converting a scikit-learn model")
    types = {
        np.dtype(np.float32): data_types.FloatTensorType,
        np.dtype(np.float64): data_types.DoubleTensorType,
        np.dtype(np.int64): data_types.Int64TensorType,
        np.dtype(np.int32): data_types.Int32TensorType,
        np.dtype(np.bool_): data_types.BooleanTensorType,
    }
    kind = types.get(spec.dtype)
    if kind is None:
        raise BadInputError(f"input {spec.name!r}: skl2onnx takes float32, float64, int64, int32 or bool, "
                            f"not {spec.dtype.name}")
    return kind([dim if isinstance(dim, int) else None for dim in spec.shape])


def load_sklearn(path: Path, kind: str, trust_pickle: bool = False,
                 trusted_types: list[str] | None = None) -> LoadedSource:
    """Load a fitted estimator from ``.skops`` (safe) or pickle/joblib (only when trusted)."""
    require("sklearn", "converting a scikit-learn model")
    skl2onnx = require("skl2onnx", "converting a scikit-learn model")
    model = _load_skops(path, list(trusted_types or [])) if kind == "skops" else _load_pickle(path, trust_pickle)
    _check_estimator(model, path)
    final = _final_step(model)
    classifier = hasattr(final, "predict_proba") and hasattr(final, "classes_")

    def reference(feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        (features,) = feed.values()
        if classifier:
            return [np.asarray(model.predict(features)), np.asarray(model.predict_proba(features))]
        method = model.predict if hasattr(model, "predict") else model.transform
        return [np.asarray(method(features))]

    def to_onnx(specs: list[InputSpec], opset: int) -> onnx.ModelProto:
        if len(specs) != 1:
            raise BadInputError("a scikit-learn model takes one input (the feature matrix); give one --input")
        options = {id(final): {"zipmap": False}} if classifier else None
        try:
            proto = skl2onnx.convert_sklearn(
                model,
                initial_types=[(specs[0].name, _tensor_type(specs[0]))],
                target_opset={"": opset, "ai.onnx.ml": ML_OPSET},
                options=options,
            )
        except BadInputError:
            raise
        except Exception as error:  # skl2onnx raises RuntimeError/MissingShapeCalculator/... per estimator
            raise BadInputError(f"{path}: skl2onnx cannot convert {type(model).__name__} "
                                f"({type(error).__name__}: {_first_line(error)})") from None
        return proto  # outputs in skl2onnx's order: label, probabilities (classifiers) or variable

    note = f"estimator {type(model).__name__}" + (f", last step {type(final).__name__}" if final is not model else "")
    return LoadedSource(
        path=path,
        framework="scikit-learn",
        converter=f"skl2onnx {skl2onnx.__version__}",
        inputs=_signature(model, path),
        reference=reference,
        to_onnx=to_onnx,
        renamable_inputs=True,
        notes=[note],
    )
