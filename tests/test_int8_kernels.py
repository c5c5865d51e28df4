"""The numpy model of onnxruntime's integer kernels, checked against onnxruntime on this CPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from onnxopt.cpu_features import cpu_from_flags, host_cpu
from onnxopt.int8_kernels import (
    INT16_MAX,
    SAFE_WEIGHT_LIMIT,
    VNNI_REQUIREMENT,
    exact_int_matmul,
    find_int8_kernels,
    int16_pair_matmul,
    int16_pair_matmul_reference,
    meets_requirement,
    saturates_u8s8,
    saturation_risks,
    worst_pair_sum,
)
from onnxopt.model_io import from_proto
from onnxopt.runtime import create_session

RNG = np.random.default_rng(5)


def matmul_integer_model(weights: np.ndarray, rows: int) -> onnx.ModelProto:
    k, n = weights.shape
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "b"], ["y"])], "g",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, [rows, k])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [rows, n])],
        [onnx.numpy_helper.from_array(weights, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def onnxruntime_matmul_integer(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    session = create_session(matmul_integer_model(b, a.shape[0]), optimize=True)
    return session.run(None, {"a": a})[0].astype(np.int64)


def test_the_pair_model_saturates_exactly_where_int16_overflows():
    a = np.full((2, 64), 255, np.uint8)
    full = np.full((64, 3), 127, np.int8)
    # 32 pairs of 255·127 + 255·127 = 64770, each clipped to 32767 (what an AVX2 CPU returns: 1048544,
    # observed with onnxruntime 1.31 under an emulated Haswell CPU, see bench/int8_cpu_kinds.py).
    assert int16_pair_matmul(a, full)[0, 0] == 32 * INT16_MAX == 1048544
    assert exact_int_matmul(a, full)[0, 0] == 255 * 127 * 64
    safe = np.full((64, 3), SAFE_WEIGHT_LIMIT, np.int8)
    np.testing.assert_array_equal(int16_pair_matmul(a, safe), exact_int_matmul(a, safe))
    # ARM's smlal wraps instead of saturating: -128·-128 twice is the one overflowing pair.
    s8 = np.full((1, 2), -128, np.int64)
    assert int16_pair_matmul(s8, np.full((2, 1), -128), overflow="wrap")[0, 0] == -32768
    assert int16_pair_matmul(s8, np.full((2, 1), -127), overflow="wrap")[0, 0] == 2 * 128 * 127


@pytest.mark.parametrize("overflow", ["saturate", "wrap"])
def test_the_fast_pair_model_equals_the_literal_one(overflow):
    a = RNG.integers(0, 256, (7, 33))
    b = RNG.integers(-128, 128, (33, 9))
    np.testing.assert_array_equal(int16_pair_matmul(a, b, overflow), int16_pair_matmul_reference(a, b, overflow))
    assert not np.array_equal(int16_pair_matmul_reference(a, b, overflow), exact_int_matmul(a, b))


def test_onnxruntime_on_this_cpu_matches_the_model_of_its_kernel():
    # Full-range weights and activations: on a CPU without VNNI onnxruntime returns the saturated sums,
    # on one with VNNI the exact ones. Either way the model must predict every value.
    a = RNG.integers(200, 256, (8, 96), dtype=np.uint8)
    b = RNG.integers(90, 128, (96, 16)).astype(np.int8) * np.where(RNG.random((96, 16)) < 0.1, -1, 1).astype(np.int8)
    got = onnxruntime_matmul_integer(a, b)
    cpu = host_cpu()
    expected = int16_pair_matmul(a, b) if saturates_u8s8(cpu) else exact_int_matmul(a, b)
    assert not np.array_equal(int16_pair_matmul(a, b), exact_int_matmul(a, b))  # the case does saturate
    np.testing.assert_array_equal(got, expected, err_msg=f"on {cpu.describe()}")


def test_weights_within_the_safe_limit_give_exact_results_on_this_cpu():
    a = RNG.integers(0, 256, (8, 130), dtype=np.uint8)
    b = RNG.integers(-SAFE_WEIGHT_LIMIT, SAFE_WEIGHT_LIMIT + 1, (130, 24)).astype(np.int8)
    np.testing.assert_array_equal(onnxruntime_matmul_integer(a, b), exact_int_matmul(a, b))
    np.testing.assert_array_equal(int16_pair_matmul(a, b), exact_int_matmul(a, b))


def test_worst_pair_bound_separates_64_from_65():
    assert worst_pair_sum(np.array([64, -64, 3], np.int8)) == 2 * 255 * 64 <= INT16_MAX
    assert worst_pair_sum(np.array([65, 0], np.int8)) > INT16_MAX
    assert SAFE_WEIGHT_LIMIT == 64


def test_requirements_by_cpu():
    avx2 = cpu_from_flags("avx2 fma")
    assert saturates_u8s8(avx2)
    assert saturates_u8s8(cpu_from_flags("avx2,fma,avx512f,avx512bw"))  # Skylake-SP: AVX-512 without VNNI
    for flags in ("avx2 avx512f avx512bw avx512_vnni", "avx2 avx_vnni", "avx2 avx512_vnni amx_int8"):
        assert meets_requirement(VNNI_REQUIREMENT, cpu_from_flags(flags)), flags
    assert not meets_requirement(VNNI_REQUIREMENT, avx2)
    arm = cpu_from_flags("asimd", arch="aarch64")
    assert meets_requirement(VNNI_REQUIREMENT, arm) and not saturates_u8s8(arm)
    assert "avx2" in avx2.describe()


def test_host_flags_are_ones_the_kernel_lists():
    # CPUID (what onnxruntime dispatches on) may hide features /proc/cpuinfo lists (an emulated CPU
    # under qemu-user shows the host's file), never show ones it lacks.
    cpu = host_cpu()
    assert cpu.arch
    try:
        listed = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        pytest.skip("no /proc/cpuinfo")
    if cpu.is_x86_64:
        assert {"avx2", "fma", "avx512_vnni", "avx512f"} & cpu.flags <= listed


QDQ_TEXT = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[2, 4] x) => (float[2, 3] y, float[2, 3] z)
<int8[4, 3] w = {WEIGHTS}, float w_scale = {{0.01}}, int8 w_zero = {{0}},
 uint8[4, 3] wu = {WEIGHTS_U}, uint8 wu_zero = {{128}},
 float x_scale = {{0.02}}, uint8 x_zero = {{128}}>
{{
    xq = QuantizeLinear(x, x_scale, x_zero)
    xd = DequantizeLinear(xq, x_scale, x_zero)
    wd = DequantizeLinear(w, w_scale, w_zero)
    y = MatMul(xd, wd)
    wud = DequantizeLinear(wu, w_scale, wu_zero)
    z = MatMul(xd, wud)
}}
"""


def test_finds_qdq_and_operator_form_kernels_and_their_risks():
    weights = [100, -3, 5, 7, 1, 2, -90, 4, 0, 8, 9, 10]
    text = QDQ_TEXT.format(WEIGHTS="{" + ", ".join(map(str, weights)) + "}",
                           WEIGHTS_U="{" + ", ".join(str(w + 128) for w in weights) + "}")
    model = from_proto(onnx.parser.parse_model(text))
    kernels = list(find_int8_kernels(model))
    assert len(kernels) == 2
    signed = [k for k in kernels if k.weight_signed]
    assert len(signed) == 1 and signed[0].max_abs_weight == 100 and signed[0].activation_signed is False
    risks = saturation_risks(model)
    assert len(risks) == 1 and risks[0].max_abs_weight == 100  # u8 weights (U8U8 kernels) never saturate
    assert "±100" in str(risks[0])
    assert saturation_risks(model, limit=127) == []
    operator = from_proto(matmul_integer_model(np.full((4, 2), 64, np.int8), 2))
    assert [k.op for k in find_int8_kernels(operator)] == ["MatMulInteger"]
    assert saturation_risks(operator) == []


def test_flags_only_proc_cpuinfo_names_are_dropped_when_the_file_is_another_cpus():
    from onnxopt.cpu_features import _combine_flags

    host_file = {"avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8"}
    # Native: CPUID and the file agree, so the file's avx_vnni / amx_int8 count.
    assert {"avx_vnni", "amx_int8"} <= _combine_flags(host_file - {"avx_vnni", "amx_int8"}, host_file)
    # Emulated Haswell (qemu-user shows the host's file): CPUID has no AVX-512, so the file is not this CPU's
    # and its VNNI flags must not make a saturating CPU look safe.
    haswell = _combine_flags({"avx2", "fma"}, host_file)
    assert haswell == {"avx2", "fma"}
    assert saturates_u8s8(cpu_from_flags(" ".join(haswell)))
    assert _combine_flags(set(), {"asimd", "asimddp"}) == {"asimd", "asimddp"}


def test_cpu_model_name_reads_the_file_and_falls_back_to_platform(tmp_path):
    import platform

    from onnxopt.cpu_features import cpu_model_name

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 9R14\nflags\t: avx2 fma\n")
    assert cpu_model_name(cpuinfo) == "AMD EPYC 9R14"
    # ARM kernels list no "model name": the platform's answer stands in, never an empty string.
    cpuinfo.write_text("processor\t: 0\nFeatures\t: fp asimd asimddp\nCPU implementer\t: 0x41\n")
    assert cpu_model_name(cpuinfo) == (platform.processor() or platform.machine()) != ""
    assert cpu_model_name(tmp_path / "missing") == (platform.processor() or platform.machine())
