"""Streaming calibration: running statistics, growing histograms, methods, mask sentinels."""

from __future__ import annotations

import numpy as np
import pytest

from onnxopt.calibration import Calibrator, TensorStatistics, calibrate
from onnxopt.data import Feeds, InputSpec
from onnxopt.errors import BadInputError
from onnxopt.passes.quantization.common import dequantize_array, params_from_range, quantize_array
from tests.util import model_from_text

FLOAT_MAX = float(np.finfo(np.float32).max)


def test_histogram_grows_by_exact_rebinning():
    rng = np.random.default_rng(0)
    batches = [rng.standard_normal(1000).astype(np.float32) * scale for scale in (0.1, 1.0, 7.0, 50.0)]
    stats = TensorStatistics(histogram=True, bins_per_side=64)
    for batch in batches:
        stats.update(batch)
    everything = np.concatenate(batches)
    assert stats.histogram.sum() == everything.size == stats.count
    assert stats.edge > np.abs(everything).max()
    # Re-binning merged counts, it never moved a value across zero or across a bin edge.
    width = stats.edge / stats.bins_per_side
    expected, _ = np.histogram(everything, bins=2 * stats.bins_per_side, range=(-stats.edge, stats.edge))
    assert np.array_equal(stats.histogram, expected)
    assert np.sum(stats.histogram[: stats.bins_per_side]) == np.sum(everything < 0)
    assert width > 0
    assert stats.minimum == everything.min() and stats.maximum == everything.max()


def test_statistics_memory_does_not_grow_with_batches():
    rng = np.random.default_rng(1)
    one = Calibrator(method="percentile")
    many = Calibrator(method="percentile")
    one.observe({"t": rng.standard_normal((4, 64)).astype(np.float32)})
    for _ in range(50):
        many.observe({"t": rng.standard_normal((4, 64)).astype(np.float32) * 3})
    assert one.nbytes == many.nbytes
    assert many.batches == 50


def test_mask_sentinels_are_excluded_and_counted():
    scores = np.array([[0.5, -1.25, 2.0, -FLOAT_MAX], [-np.inf, 1.0, -1e30, np.nan]], dtype=np.float32)
    for method in ("minmax", "percentile", "entropy", "mse"):
        calibrator = Calibrator(method=method)
        calibrator.observe({"scores": scores})
        found = calibrator.ranges(symmetric=False)["scores"]
        assert found.sentinels == 4, method
        assert found.seen_min == -1.25 and found.seen_max == 2.0, method
        assert -1.25 <= found.rmin <= 0 <= found.rmax <= 2.0, method
        assert np.isfinite(found.rmin) and np.isfinite(found.rmax)


def test_percentile_matches_numpy_within_a_bin():
    rng = np.random.default_rng(2)
    values = rng.standard_normal(200_000).astype(np.float32)
    calibrator = Calibrator(method="percentile")
    for chunk in np.split(values, 20):
        calibrator.observe({"x": chunk})
    symmetric = calibrator.ranges(symmetric=True, percentile=99.0)["x"]
    expected = np.percentile(np.abs(values), 99.0)
    width = calibrator.stats["x"].edge / calibrator.stats["x"].bins_per_side
    assert abs(symmetric.rmax - expected) <= 1.5 * width
    assert symmetric.rmin == -symmetric.rmax
    asymmetric = calibrator.ranges(symmetric=False, percentile=99.0)["x"]
    assert abs(asymmetric.rmin - np.percentile(values, 0.5)) <= 1.5 * width
    assert abs(asymmetric.rmax - np.percentile(values, 99.5)) <= 1.5 * width


@pytest.mark.parametrize("method", ["percentile", "entropy"])
def test_histogram_methods_clip_a_lone_outlier(method):
    rng = np.random.default_rng(3)
    values = rng.standard_normal(100_000).astype(np.float32)
    values[17] = 80.0
    calibrator = Calibrator(method=method)
    calibrator.observe({"x": values})
    found = calibrator.ranges(symmetric=True)["x"]
    minmax = Calibrator(method="minmax")
    minmax.observe({"x": values})
    assert minmax.ranges()["x"].rmax == 80.0
    # A standard normal's useful int8 range is a few sigma; the outlier must not set it.
    assert 2.0 < found.rmax < 12.0, found


def _quantization_mse(values: np.ndarray, low: float, high: float) -> float:
    params = params_from_range(low, high, np.int8, symmetric=True)
    return float(np.mean((dequantize_array(quantize_array(values, params), params) - values) ** 2))


def test_mse_method_beats_minmax_on_heavy_tails():
    rng = np.random.default_rng(6)
    values = rng.laplace(size=200_000).astype(np.float32)
    mse = Calibrator(method="mse")
    minmax = Calibrator(method="minmax")
    for chunk in np.split(values, 4):
        mse.observe({"x": chunk})
        minmax.observe({"x": chunk})
    chosen = mse.ranges(symmetric=True)["x"]
    widest = minmax.ranges(symmetric=True)["x"]
    # The MSE-optimal 8-bit clip of a unit Laplace is 9.89 (Banner et al., ACIQ); max|x| is 12.2 here.
    assert 9.3 < chosen.rmax < 10.5 < widest.rmax
    clipped = _quantization_mse(values, chosen.rmin, chosen.rmax)
    assert clipped < 0.8 * _quantization_mse(values, widest.rmin, widest.rmax)


def test_one_sided_tensor_keeps_zero_as_its_minimum():
    rng = np.random.default_rng(4)
    relu = np.maximum(rng.standard_normal(50_000), 0).astype(np.float32)
    for method in ("minmax", "percentile", "mse", "entropy"):
        calibrator = Calibrator(method=method)
        calibrator.observe({"r": relu})
        found = calibrator.ranges(symmetric=False)["r"]
        assert found.rmin == 0.0, method
        assert 1.5 < found.rmax <= relu.max(), method


STREAM_MODEL = """
<ir_version: 8, opset_import: ["" : 17]>
stream (float[N, 4] x) => (float[N, 4] y)
<float[4] shift = {0.5, -1.0, 2.0, 0.0}>
{
    h = Add(x, shift)
    y = Relu(h)
}
"""


def test_calibrate_streams_feeds_and_matches_numpy():
    model = model_from_text(STREAM_MODEL)
    rng = np.random.default_rng(5)
    feeds = [{"x": rng.standard_normal((2, 4)).astype(np.float32)} for _ in range(6)]

    def generator():
        yield from feeds  # a one-shot iterator: calibration must not need to re-read it

    calibrator = calibrate(model, ["h", "y"], generator(), method="minmax")
    shift = np.array([0.5, -1.0, 2.0, 0.0], dtype=np.float32)
    hidden = np.concatenate([feed["x"] + shift for feed in feeds])
    ranges = calibrator.ranges()
    assert calibrator.batches == 6
    assert ranges["h"].rmin == pytest.approx(hidden.min()) and ranges["h"].rmax == pytest.approx(hidden.max())
    assert ranges["y"].rmin == 0.0 and ranges["y"].rmax == pytest.approx(max(hidden.max(), 0.0))
    assert calibrator.shapes()["h"] == (2, 4)


def test_calibrate_limits_batches_and_reports_bad_data():
    model = model_from_text(STREAM_MODEL)
    feeds = [{"x": np.full((1, 4), float(i), np.float32)} for i in range(10)]
    assert calibrate(model, ["h"], feeds, max_batches=3).batches == 3
    with pytest.raises(BadInputError, match="does not fit the model"):
        calibrate(model, ["h"], [{"x": np.zeros((1, 5), np.float32)}])
    with pytest.raises(BadInputError, match="no batches"):
        calibrate(model, ["h"], [])


def test_calibrate_surfaces_bad_data_folders(tmp_path):
    specs = [InputSpec("x", np.dtype(np.float32), ("N", 4))]
    model = model_from_text(STREAM_MODEL)
    with pytest.raises(BadInputError, match="holds no .npz"):
        calibrate(model, ["h"], Feeds(specs=specs, path=tmp_path))
    np.savez(tmp_path / "a.npz", x=np.zeros((1, 4), np.int64))
    with pytest.raises(BadInputError, match="int64"):
        calibrate(model, ["h"], Feeds(specs=specs, path=tmp_path))


def test_unknown_method_is_bad_input():
    with pytest.raises(BadInputError, match="unknown calibration method"):
        Calibrator(method="kl")
