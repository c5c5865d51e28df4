"""Every int8 node the qdq pass emits is safe on CPUs without VNNI — proven here on any CPU.

onnxruntime's u8×s8 kernels on AVX2 (and AVX-512 without VNNI) add pairs of products in
saturating int16. This machine may well have VNNI and never show the problem, so the proof
does not rely on it: for every integer matmul of the output (1) the static bound — no two
stored weights times 255 can exceed int16 — holds, and (2) the numpy model of the
saturating kernel, fed the integer activations the node really receives, gives exactly the
exact product. The negative control quantizes the same models for VNNI CPUs (full-range
weights) and shows the model does catch saturation there: the check can fail.
"""

from __future__ import annotations

import numpy as np
import pytest

from models.cache import cached_model
from models.digits import CALIBRATION_PATH, model_path
from onnxopt.cpu_features import host_cpu
from onnxopt.data import make_feeds
from onnxopt.int8_kernels import (
    INT16_MAX,
    REQUIRES_KEY,
    SAFE_WEIGHT_LIMIT,
    VNNI_REQUIREMENT,
    find_int8_kernels,
    worst_pair_sum,
)
from onnxopt.model_io import Model, load, read_proto
from onnxopt.pass_api import PassContext
from onnxopt.passes.quantization.qdq import QdqPass
from tests.int8_simulation import check_integer_nodes
from tests.passes.quantization.test_qdq import CNN_TEXT, cnn_feeds
from tests.passes.quantization.test_qdq_dynamic import LINEAR_TEXT, linear_feeds
from tests.util import DATA_DIR, model_from_text

MINILM_CALIBRATION = DATA_DIR / "minilm_calib.npz"
CPU = host_cpu().describe()


def quantized(model: Model, data, **options) -> Model:
    work = model.copy()
    options.setdefault("only_if_faster", False)
    result = QdqPass(QdqPass.make_options(options)).run(work, PassContext(data=data))
    assert result.modified, result.notes
    return work


def assert_safe_everywhere(model: Model, feeds: list[dict[str, np.ndarray]]) -> int:
    kernels = list(find_int8_kernels(model))
    assert kernels, "no integer node emitted"
    for kernel in kernels:
        if kernel.weights is None:  # two activations: both uint8, run by U8U8 kernels that widen to 16 bits
            assert kernel.weight_signed is False and kernel.activation_signed is False, kernel.node
            continue
        assert kernel.weight_signed and kernel.max_abs_weight <= SAFE_WEIGHT_LIMIT, kernel.node
        assert worst_pair_sum(kernel.weights) <= INT16_MAX, kernel.node
    checks = check_integer_nodes(model, feeds)
    assert len(checks) == len([kernel for kernel in kernels if kernel.weights is not None])
    wrong = {check.kernel.node: check.saturated_values for check in checks if check.saturated_values}
    assert not wrong, f"saturating kernels would differ at {wrong} (measured on {CPU})"
    assert REQUIRES_KEY not in model.metadata_props
    return sum(check.rows for check in checks)


def minilm_feeds(count: int = 1) -> list[dict[str, np.ndarray]]:
    proto = read_proto(cached_model("minilm"))
    return list(make_feeds(proto, MINILM_CALIBRATION, 2, max_batches=count))


def test_dynamic_linear_nodes_are_safe_on_every_cpu():
    model = model_from_text(LINEAR_TEXT)
    assert assert_safe_everywhere(quantized(model, None), linear_feeds(2, seed=3, outlier_channel=7)) > 0


def test_static_cnn_nodes_including_convolutions_are_safe_on_every_cpu():
    model = model_from_text(CNN_TEXT)
    work = quantized(model, cnn_feeds(), method="minmax")
    assert {kernel.op for kernel in find_int8_kernels(work)} >= {"Conv", "Gemm"}
    assert_safe_everywhere(work, cnn_feeds(2, seed=9))


def test_digits_static_nodes_are_safe_on_every_cpu():
    model = load(model_path())
    data = make_feeds(read_proto(model_path()), CALIBRATION_PATH, 16)
    work = quantized(model, data)
    assert_safe_everywhere(work, list(make_feeds(read_proto(model_path()), CALIBRATION_PATH, 16, max_batches=2)))


@pytest.fixture(scope="module")
def minilm_dynamic() -> dict[str, Model]:
    source = load(cached_model("minilm"))
    return {cpu: quantized(source, None, mode="dynamic", cpu=cpu) for cpu in ("any", "vnni")}


def test_minilm_dynamic_nodes_are_safe_on_every_cpu(minilm_dynamic):
    assert assert_safe_everywhere(minilm_dynamic["any"], minilm_feeds()) > 200


def test_minilm_static_nodes_are_safe_on_every_cpu():
    source = load(cached_model("minilm"))
    data = make_feeds(read_proto(cached_model("minilm")), MINILM_CALIBRATION, 1)
    work = quantized(source, data, mode="static", calibration_batches=8)
    assert_safe_everywhere(work, minilm_feeds())


def test_the_check_catches_saturation_in_full_range_weights(minilm_dynamic):
    # Negative control: weights for VNNI CPUs use ±127, and on real sentences the saturating kernel
    # model gets outputs wrong — what a CPU without VNNI computes from such a model.
    vnni = minilm_dynamic["vnni"]
    assert vnni.metadata_props[REQUIRES_KEY] == VNNI_REQUIREMENT
    assert max(kernel.max_abs_weight for kernel in find_int8_kernels(vnni)) == 127
    checks = check_integer_nodes(vnni, minilm_feeds())
    assert sum(check.saturated_values for check in checks) > 0


ATTENTION_TEXT = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[1, 16, 64] x) => (float[1, 16, 16] scores)
<{weight}>
{{
    [project] q = MatMul(x, w)
    t = Transpose <perm = [0, 2, 1]> (q)
    [scores] scores_raw = MatMul(q, t)
    scores = Relu(scores_raw)
}}
"""


def test_int8_activations_on_both_sides_stay_float_for_any_cpu():
    from tests.passes.quantization.test_qdq import tensor_text

    rng = np.random.default_rng(3)
    model = model_from_text(ATTENTION_TEXT.format(
        weight=tensor_text("w", (rng.standard_normal((64, 64)) * 0.2).astype(np.float32))))
    feeds = [{"x": rng.standard_normal((1, 16, 64)).astype(np.float32)} for _ in range(4)]
    work = model.copy()
    options = {"mode": "static", "only_if_faster": False, "activation_type": "int8"}
    result = QdqPass(QdqPass.make_options(options)).run(work, PassContext(data=feeds))
    assert result.stats["quantized_by_op"] == {"MatMul": 1}  # the projection only
    assert any("activation×activation" in note for note in result.notes)
    assert_safe_everywhere(work, feeds[:2])
    # uint8 activations: the product of two activations runs in U8U8 kernels, safe everywhere.
    unsigned = model.copy()
    result = QdqPass(QdqPass.make_options({**options, "activation_type": "uint8"})).run(unsigned,
                                                                                         PassContext(data=feeds))
    assert result.stats["quantized_by_op"] == {"MatMul": 2}
    assert_safe_everywhere(unsigned, feeds[:2])
