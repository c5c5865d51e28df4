"""The native kernel library inside the installed onnxruntime: C ABI boundary, ISAs, numerics, errors."""

from __future__ import annotations

import ctypes
import glob
import os
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from onnxopt import kernels
from tests.passes.fastconv.helpers import (
    custom_conv_model,
    feeds_for,
    needs_kernels,
    relative_error,
    session,
)

pytestmark = needs_kernels

# Positions in onnxruntime's OrtApi table that this test reads itself (the library declares its own).
GET_ERROR_MESSAGE, RELEASE_STATUS = 2, 93
OUR_API_VERSION = 17


def _onnxruntime_library() -> ctypes.CDLL:
    folder = Path(ort.__file__).parent / "capi"
    candidates = sorted(glob.glob(str(folder / "libonnxruntime.so*")) + glob.glob(str(folder / "libonnxruntime*.dylib"))
                        + glob.glob(str(folder / "onnxruntime.dll")))
    if not candidates:
        pytest.skip("onnxruntime's shared library is not a separate file in this wheel")
    return ctypes.CDLL(candidates[0])


GET_API = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_uint32)
GET_VERSION = ctypes.CFUNCTYPE(ctypes.c_char_p)


class ApiBase(ctypes.Structure):
    _fields_ = [("GetApi", GET_API), ("GetVersionString", GET_VERSION)]


def _real_base() -> ApiBase:
    library = _onnxruntime_library()
    library.OrtGetApiBase.restype = ctypes.POINTER(ApiBase)
    return library.OrtGetApiBase().contents


def _register(base: ApiBase) -> int | None:
    handle = ctypes.CDLL(kernels.library_path())
    handle.RegisterCustomOps.restype = ctypes.c_void_p
    handle.RegisterCustomOps.argtypes = [ctypes.c_void_p, ctypes.POINTER(ApiBase)]
    return handle.RegisterCustomOps(None, ctypes.byref(base))


def test_library_is_found_and_reports_its_instruction_sets() -> None:
    path = kernels.library_path()
    assert path is not None and Path(path).is_file()
    supported = kernels.supported_isas()
    assert supported[-2:] == ["generic", "scalar"]
    assert kernels.isa() == supported[0]


def test_installed_onnxruntime_serves_the_api_version_we_declare() -> None:
    base = _real_base()
    assert base.GetVersionString().decode() == ort.__version__
    assert base.GetApi(OUR_API_VERSION)


def test_register_checks_get_api_for_null_and_fails_with_a_status() -> None:
    real = _real_base()
    real_api = real.GetApi(OUR_API_VERSION)

    # A runtime that serves nothing: no status can be made, so the library returns null and touches nothing.
    @GET_API
    def serves_nothing(version: int) -> int | None:
        return None

    assert _register(ApiBase(serves_nothing, real.GetVersionString)) is None

    # A runtime older than 1.17: the library reports an error through the newest table it does serve.
    @GET_API
    def too_old(version: int) -> int | None:
        return None if version >= OUR_API_VERSION else real.GetApi(version)

    status = _register(ApiBase(too_old, real.GetVersionString))
    assert status
    table = ctypes.cast(real_api, ctypes.POINTER(ctypes.c_void_p))
    message = ctypes.CFUNCTYPE(ctypes.c_char_p, ctypes.c_void_p)(table[GET_ERROR_MESSAGE])(status)
    assert b"onnxruntime >= 1.17" in message
    ctypes.CFUNCTYPE(None, ctypes.c_void_p)(table[RELEASE_STATUS])(status)


@pytest.mark.parametrize("isa", ["avx512", "avx2", "generic", "scalar"])
def test_fft_of_any_length_matches_numpy(isa: str) -> None:
    if isa not in kernels.supported_isas():
        pytest.skip(f"{isa} not supported here")
    rng = np.random.default_rng(7)
    for n in (1, 2, 3, 5, 7, 12, 13, 49, 96, 97, 100, 243, 1000):
        signals = rng.standard_normal((n, 5)) + 1j * rng.standard_normal((n, 5))
        expected = np.fft.fft(signals, axis=0)
        error = np.max(np.abs(kernels.fft(signals, isa) - expected)) / np.max(np.abs(expected))
        assert error < 2e-6, (isa, n, error)


def test_unknown_isa_is_a_bad_input() -> None:
    from onnxopt.errors import BadInputError

    with pytest.raises(BadInputError):
        kernels.fft(np.ones((4, 1)), "sse9")


CASES = [
    # algorithm, input shape, weight shape, pads, extras
    ("winograd", [1, 24, 13, 17], [20, 24, 3, 3], [1, 1, 1, 1], {"attrs": {"tile": 2}}),
    ("winograd", [2, 16, 9, 11], [16, 16, 3, 3], [0, 1, 2, 0], {"attrs": {"tile": 4}, "residual": True,
                                                               "activation": "Relu"}),
    ("winograd", [1, 32, 14, 14], [48, 32, 3, 3], [1, 1, 1, 1], {"attrs": {"tile": 6, "clip_min": 0.0,
                                                                          "clip_max": 0.5}, "activation": "Clip"}),
    ("fft", [1, 3, 300], [5, 3, 63], [31, 31], {}),
    ("fft", [2, 8, 40, 37], [8, 1, 31, 31], [15, 15, 15, 15], {"group": 8, "activation": "Relu", "residual": True}),
    ("fft", [1, 6, 20, 20], [4, 6, 7, 5], [3, 2, 3, 2], {}),
]


# Relative max error allowed against the standard body, per algorithm (float32; F(6,3) is the least exact).
TOLERANCE = {2: 5e-6, 4: 3e-5, 6: 1.5e-4, "fft": 1e-5}


def _tolerance(case) -> float:
    return TOLERANCE["fft"] if case[0] == "fft" else TOLERANCE[case[4]["attrs"]["tile"]]


def _case_model(case, seed=0, weight_input=False):
    algorithm, x_shape, w_shape, pads, extras = case
    rng = np.random.default_rng(seed)
    weight = (rng.standard_normal(w_shape) / np.sqrt(np.prod(w_shape[1:]))).astype(np.float32)
    bias = rng.standard_normal(w_shape[0]).astype(np.float32)
    return custom_conv_model(algorithm, x_shape, weight, pads, bias=bias, weight_input=weight_input, **extras)


@pytest.mark.parametrize("isa", ["avx512", "avx2", "generic", "scalar"])
@pytest.mark.parametrize("case", CASES, ids=lambda case: f"{case[0]}-{case[2]}")
def test_kernel_matches_the_function_body_on_every_isa(case, isa: str, monkeypatch) -> None:
    if isa not in kernels.supported_isas():
        pytest.skip(f"{isa} not supported here")
    monkeypatch.setenv("ONNXOPT_KERNELS_ISA", isa)  # read by the library when a kernel is created
    model = _case_model(case)
    feed = feeds_for(model, seed=3)
    expected = session(model, with_kernels=False).run(None, feed)[0]
    before = kernels.calls(isa=isa)
    actual = session(model, with_kernels=True).run(None, feed)[0]
    assert kernels.calls(isa=isa) == before + 1  # the kernel of the forced instruction set ran
    assert actual.shape == expected.shape
    assert relative_error(actual, expected) < _tolerance(case)


def test_weights_computed_at_run_time_still_work() -> None:
    model = _case_model(CASES[0], weight_input=True)
    feed = feeds_for(model, seed=1)
    expected = session(model, with_kernels=False).run(None, feed)[0]
    for seed in (1, 2):  # different weights on each call: nothing stale may be cached
        feed = feeds_for(model, seed=seed)
        expected = session(model, with_kernels=False).run(None, feed)[0]
        assert relative_error(session(model, with_kernels=True).run(None, feed)[0], expected) < 2e-5
    model = _case_model(CASES[3], weight_input=True)
    sess = session(model, with_kernels=True)
    for seed in (4, 5):
        feed = feeds_for(model, seed=seed)
        expected = session(model, with_kernels=False).run(None, feed)[0]
        assert relative_error(sess.run(None, feed)[0], expected) < 2e-5


def test_large_conv_runs_on_onnxruntimes_thread_pool() -> None:
    # Above the serial threshold, the kernel parallelises through KernelContext_ParallelFor.
    case = ("winograd", [1, 64, 56, 56], [64, 64, 3, 3], [1, 1, 1, 1], {"attrs": {"tile": 4}})
    model = _case_model(case)
    feed = feeds_for(model)
    expected = session(model, with_kernels=False, threads=2).run(None, feed)[0]
    for threads in (1, 2):
        assert relative_error(session(model, with_kernels=True, threads=threads).run(None, feed)[0], expected) < 2e-5


def test_bad_residual_shape_is_reported_by_onnxruntime() -> None:
    model = _case_model(CASES[1])
    feed = feeds_for(model)
    for dim in model.graph.input[1].type.tensor_type.shape.dim:  # let onnxruntime pass any residual shape
        dim.dim_param = "any"
    feed["r"] = feed["r"][:, :, :-1]
    with pytest.raises(ort.capi.onnxruntime_pybind11_state.InvalidArgument, match="residual shape"):
        session(model, with_kernels=True).run(None, feed)


def test_invalid_tile_fails_at_session_creation() -> None:
    model = _case_model(("winograd", [1, 4, 8, 8], [4, 4, 3, 3], [1, 1, 1, 1], {"attrs": {"tile": 3}}))
    with pytest.raises(Exception, match="tile must be 2, 4 or 6"):
        session(model, with_kernels=True).run(None, feeds_for(model))


def test_strassen_op_matches_numpy_with_padding() -> None:
    import onnx
    import onnx.helper as oh

    from onnxopt.passes.fastconv.ops import STRASSEN_OP, strassen_function

    rng = np.random.default_rng(5)
    for levels, (m, k, n) in [(0, (37, 29, 23)), (1, (64, 48, 80)), (1, (33, 65, 17)), (2, (70, 90, 45))]:
        b = rng.standard_normal((k, n)).astype(np.float32)
        node = oh.make_node(STRASSEN_OP, ["a", "b"], ["y"], domain=kernels.DOMAIN, levels=levels)
        graph = oh.make_graph([node], "g", [oh.make_tensor_value_info("a", 1, [2, m, k])],
                              [oh.make_tensor_value_info("y", 1, [2, m, n])], [onnx.numpy_helper.from_array(b, "b")])
        model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17), oh.make_opsetid(kernels.DOMAIN, 1)],
                              functions=[strassen_function(17)])
        model.ir_version = 8
        a = rng.standard_normal((2, m, k)).astype(np.float32)
        before = kernels.calls("StrassenMatMul")
        actual = session(model, with_kernels=True).run(None, {"a": a})[0]
        assert kernels.calls("StrassenMatMul") == before + 1
        assert relative_error(actual, a.astype(np.float64) @ b) < 1e-5
        inlined = session(model, with_kernels=False).run(None, {"a": a})[0]
        assert relative_error(inlined, a.astype(np.float64) @ b) < 1e-6


def test_isa_override_caps_and_never_raises(monkeypatch) -> None:
    monkeypatch.setenv("ONNXOPT_KERNELS_ISA", "generic")
    assert kernels.isa() == "generic"
    monkeypatch.setenv("ONNXOPT_KERNELS_ISA", "nonsense")
    assert kernels.isa() == kernels.supported_isas()[0]
    monkeypatch.delenv("ONNXOPT_KERNELS_ISA")
    assert os.environ.get("ONNXOPT_KERNELS_ISA") is None
