"""The model cache reuses what it built; the output-error metric measures what it claims."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from models import cache
from models.evaluate import output_error, sample_feeds
from onnxopt.errors import BadInputError
from tests.util import model_from_text

SCALE_TEXT = """
<ir_version: 8, opset_import: ["" : 17]>
scale (float[N, 4] x) => (float[N, 4] y, float[N, 4] z) {{
    y = Mul(x, k)
    z = Add(x, c)
    k = Constant <value = float {{{k}}}> ()
    c = Constant <value = float {{{c}}}> ()
}}
"""


@pytest.fixture()
def cache_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("ONNXOPT_CACHE", str(tmp_path))
    return tmp_path


def test_cached_model_builds_once_and_reuses(cache_folder):
    stale = cache_folder / "bert-tiny-000000000000.onnx"
    stale.write_bytes(b"old")
    day_old = time.time() - cache.STALE_AFTER_SECONDS - 60
    os.utime(stale, (day_old, day_old))
    in_use = cache_folder / "bert-tiny-111111111111.onnx"  # another checkout's version, touched just now
    in_use.write_bytes(b"other")
    first = cache.cached_model("bert", "tiny")
    assert first.parent == cache_folder and first.name.startswith("bert-tiny-")
    assert not stale.exists(), "a stale version of the same model is removed"
    assert in_use.exists(), "a version another checkout used recently stays"
    stamp = first.stat().st_mtime_ns
    assert cache.cached_model("bert", "tiny") == first
    assert first.stat().st_mtime_ns == stamp, "second call must not rebuild"
    assert cache.cached_model("gpt2", "tiny") != first


def test_cached_external_data_model_keeps_its_data_file(cache_folder):
    path = cache.cached_model("large_mlp", "tiny")
    assert path.with_name(path.name + ".data").is_file()


def test_unknown_model_is_refused(cache_folder):
    with pytest.raises(BadInputError, match="unknown sample model"):
        cache.cached_model("alexnet")
    with pytest.raises(BadInputError, match="no sample inputs"):
        sample_feeds("alexnet")


def test_output_error_of_identical_models_is_zero():
    model = model_from_text(SCALE_TEXT.format(k=2.0, c=1.0))
    error = output_error(model, model, {"x": np.arange(12, dtype=np.float32).reshape(3, 4)})
    assert error.as_dict() == {"max_abs": 0.0, "max_rel": 0.0, "cosine": 1.0}


def test_output_error_values():
    """y = 2.5x against 2x and z = x + 1.5 against x + 1, on known inputs: exact expected figures."""
    reference = model_from_text(SCALE_TEXT.format(k=2.0, c=1.0))
    candidate = model_from_text(SCALE_TEXT.format(k=2.5, c=1.5))
    x = np.array([[1, -2, 3, -4], [0.5, 0, 1, 2]], dtype=np.float32)
    error = output_error(candidate, reference, [{"x": x}, {"x": -x}])
    y = error.per_output["y"]
    assert y["max_abs"] == pytest.approx(0.5 * 4)
    assert y["max_rel"] == pytest.approx(2.0 / 8.0)
    assert y["cosine"] == pytest.approx(1.0)  # a pure rescaling keeps the direction
    z = error.per_output["z"]
    assert z["max_abs"] == pytest.approx(0.5)
    assert z["max_rel"] == pytest.approx(0.5 / 5.0)
    reference_z = np.concatenate([x + 1, -x + 1]).ravel()
    candidate_z = reference_z + 0.5
    expected = reference_z @ candidate_z / np.linalg.norm(reference_z) / np.linalg.norm(candidate_z)
    assert z["cosine"] == pytest.approx(expected, rel=1e-9)
    assert error.max_abs == pytest.approx(2.0) and error.cosine == pytest.approx(expected, rel=1e-9)


def test_output_error_sees_different_weights(tmp_path):
    from models import bert

    one = bert.build(tmp_path / "one.onnx", size="tiny", seed=1)
    two = bert.build(tmp_path / "two.onnx", size="tiny", seed=2)
    error = output_error(two, one, sample_feeds("bert", "tiny", batch_size=2))
    assert error.max_abs > 0.5 and error.cosine < 0.5
