"""scikit-learn pipelines fitted on real bundled data → ONNX → optimized → .ort, checked on held-out rows.

The must-show: a scaler + gradient boosting or logistic regression pipeline, saved with
skops (safe) or pickle (only with --trust-pickle), goes through the one edge command
``onnxopt optimize SRC --export ort``; the ``.ort`` file's labels equal scikit-learn's
on the held-out rows and its probabilities are within 1e-5.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from tests.cli.test_cli import assert_one_line_error, invoke
from tests.convert.conftest import files_in

pytest.importorskip("skl2onnx", reason="the sklearn extra (skl2onnx) is not installed")
sio = pytest.importorskip("skops.io", reason="the sklearn extra (skops) is not installed")

from sklearn.datasets import load_breast_cancer, load_digits, load_iris  # noqa: E402
from sklearn.ensemble import GradientBoostingClassifier  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

PROBABILITY_TOLERANCE = 1e-5
_FITTED: dict[str, tuple] = {}


def fitted(name: str) -> tuple:
    """(pipeline, held-out X, held-out y) on a bundled data set, fitted once per test process."""
    if name not in _FITTED:
        loader, estimator = {
            "iris-logreg": (load_iris, LogisticRegression(max_iter=2000)),
            "breast_cancer-gboost": (load_breast_cancer, GradientBoostingClassifier(n_estimators=40, random_state=0)),
            "digits-logreg": (load_digits, LogisticRegression(max_iter=2000)),
        }[name]
        features, labels = loader(return_X_y=True)
        x_train, x_test, y_train, y_test = train_test_split(
            features, labels, test_size=0.3, random_state=0, stratify=labels
        )
        _FITTED[name] = (make_pipeline(StandardScaler(), estimator).fit(x_train, y_train), x_test, y_test)
    return _FITTED[name]


def run_ort_file(path: Path, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    label, probabilities = session.run(["label", "probabilities"], {"X": features.astype(np.float32)})
    return label, probabilities


@pytest.mark.parametrize("name", ["iris-logreg", "breast_cancer-gboost", "digits-logreg"])
def test_pipeline_to_ort_matches_sklearn_on_held_out_rows(tmp_path: Path, name: str) -> None:
    pipeline, x_test, y_test = fitted(name)
    source = tmp_path / f"{name}.skops"
    sio.dump(pipeline, source)
    trust = [arg for kind in sio.get_untrusted_types(file=source) for arg in ("--trust-type", kind)]
    target = tmp_path / f"{name}.ort"
    result = invoke("optimize", source, *trust, "--export", "ort", "-o", target)
    assert result.exit_code == 0, result.output
    assert "scikit-learn vs ONNX" in result.stdout and "bit-identical" in result.stdout
    config = tmp_path / f"{name}.required_operators_and_types.config"
    assert config.is_file() and "ai.onnx.ml" in config.read_text()
    label, probabilities = run_ort_file(target, x_test)
    np.testing.assert_array_equal(label, pipeline.predict(x_test))
    np.testing.assert_allclose(probabilities, pipeline.predict_proba(x_test), rtol=0, atol=PROBABILITY_TOLERANCE)
    assert (label == y_test).mean() > 0.9, "a real model, not a degenerate one"


def test_trusted_pickle_converts_and_agrees(tmp_path: Path) -> None:
    pipeline, x_test, _ = fitted("breast_cancer-gboost")
    source = tmp_path / "model.pkl"
    source.write_bytes(pickle.dumps(pipeline))
    result = invoke("convert", source, "--trust-pickle", "-o", tmp_path / "model.onnx", "--json")
    assert result.exit_code == 0, result.output
    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    label, _ = session.run(None, {"X": x_test.astype(np.float32)})
    np.testing.assert_array_equal(label, pipeline.predict(x_test))
    metadata = {entry.key: entry.value for entry in onnx.load(str(tmp_path / "model.onnx")).metadata_props}
    assert metadata["onnxopt.converted_from"] == "scikit-learn: model.pkl"
    assert metadata["onnxopt.converter"].startswith("skl2onnx ")


def test_joblib_file_converts_with_trust(tmp_path: Path) -> None:
    import joblib

    pipeline, x_test, _ = fitted("iris-logreg")
    source = tmp_path / "model.joblib"
    joblib.dump(pipeline, source)
    assert invoke("convert", source, "--trust-pickle", "-o", tmp_path / "model.onnx").exit_code == 0
    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    label, _ = session.run(None, {"X": x_test.astype(np.float32)})
    np.testing.assert_array_equal(label, pipeline.predict(x_test))


def test_pickle_without_trust_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    pipeline, _, _ = fitted("iris-logreg")
    source = tmp_path / "model.pkl"
    source.write_bytes(pickle.dumps(pipeline))
    before = source.read_bytes()
    result = invoke("convert", source, "-o", tmp_path / "model.onnx")
    assert_one_line_error(result, 2, "refusing to unpickle")
    assert "--trust-pickle" in result.stderr
    assert files_in(tmp_path) == ["model.pkl"] and source.read_bytes() == before


def test_pickle_that_is_not_an_estimator_is_bad_input(tmp_path: Path) -> None:
    source = tmp_path / "weights.pkl"
    source.write_bytes(pickle.dumps({"coef": [1.0, 2.0]}))
    result = invoke("optimize", source, "--trust-pickle", "-o", tmp_path / "out.onnx")
    assert_one_line_error(result, 2, "builtins.dict, not a scikit-learn estimator")
    assert files_in(tmp_path) == ["weights.pkl"]


def test_corrupt_pickle_is_bad_input(tmp_path: Path) -> None:
    source = tmp_path / "broken.pkl"
    source.write_bytes(pickle.dumps(list(range(100)))[:40])
    assert_one_line_error(invoke("convert", source, "--trust-pickle", "-o", tmp_path / "m.onnx"), 2,
                          "cannot unpickle")
    assert files_in(tmp_path) == ["broken.pkl"]


def test_unfitted_estimator_is_bad_input(tmp_path: Path) -> None:
    source = tmp_path / "unfitted.skops"
    sio.dump(make_pipeline(StandardScaler(), LogisticRegression()), source)
    assert_one_line_error(invoke("convert", source, "-o", tmp_path / "m.onnx"), 2, "not fitted")


def test_skops_types_outside_the_defaults_need_explicit_trust(tmp_path: Path) -> None:
    pipeline, _, _ = fitted("breast_cancer-gboost")
    source = tmp_path / "gb.skops"
    sio.dump(pipeline, source)
    untrusted = sio.get_untrusted_types(file=source)
    assert untrusted, "gradient boosting stores tree objects skops does not trust by default"
    result = invoke("convert", source, "-o", tmp_path / "gb.onnx")
    assert_one_line_error(result, 2, untrusted[0])
    assert "--trust-type" in result.stderr and files_in(tmp_path) == ["gb.skops"]


def test_input_option_renames_and_retypes_the_feature_matrix(tmp_path: Path) -> None:
    pipeline, x_test, _ = fitted("iris-logreg")
    source = tmp_path / "iris.skops"
    sio.dump(pipeline, source)
    result = invoke("convert", source, "--input", "features:float64:batch,4", "-o", tmp_path / "iris.onnx")
    assert result.exit_code == 0, result.output
    model = onnx.load(str(tmp_path / "iris.onnx"))
    (graph_input,) = model.graph.input
    assert graph_input.name == "features"
    assert graph_input.type.tensor_type.elem_type == onnx.TensorProto.DOUBLE
    assert [d.dim_param or d.dim_value for d in graph_input.type.tensor_type.shape.dim] == ["batch", 4]
    session = ort.InferenceSession(str(tmp_path / "iris.onnx"), providers=["CPUExecutionProvider"])
    _, probabilities = session.run(None, {"features": x_test})
    np.testing.assert_allclose(probabilities, pipeline.predict_proba(x_test), rtol=0, atol=1e-9)


def test_disagreement_beyond_the_tolerance_exits_1_and_writes_nothing(tmp_path: Path) -> None:
    # float32 ONNX against float64 scikit-learn is ~1e-7 apart: a zero tolerance must fail the check.
    pipeline, _, _ = fitted("iris-logreg")
    source = tmp_path / "iris.skops"
    sio.dump(pipeline, source)
    result = invoke("convert", source, "--max-conversion-error", "0", "-o", tmp_path / "iris.onnx")
    assert_one_line_error(result, 1, "disagrees with scikit-learn")
    assert files_in(tmp_path) == ["iris.skops"]


def test_agreement_on_given_data(tmp_path: Path) -> None:
    pipeline, x_test, _ = fitted("digits-logreg")
    source = tmp_path / "digits.skops"
    sio.dump(pipeline, source)
    np.savez(tmp_path / "held_out.npz", X=x_test.astype(np.float32))
    result = invoke("convert", source, "--inputs", tmp_path / "held_out.npz", "-o", tmp_path / "d.onnx", "--json")
    assert result.exit_code == 0, result.output
    import json

    agreement = json.loads(result.stdout)["agreement"]
    assert agreement["inputs"].startswith("DATA") and agreement["mismatched_elements"] == {"label": 0}
    assert 0 < agreement["max_abs_error"] < PROBABILITY_TOLERANCE
