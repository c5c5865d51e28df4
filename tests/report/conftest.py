"""Real optimize runs whose reports the report tests render (run once per test worker).

Small real models: the digits CNN (trained, shipped) through the int8 preset with its
calibration data (static QDQ, per-node time ratios), the same CNN through fp16 with its
Gemms pinned to fp32 (fp32 decisions with a reason), and a MatMul model whose node and
tensor names are hostile HTML/Markdown, to prove every rendering escapes them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnx.helper as oh
import pytest

from onnxopt import optimize
from onnxopt.examples import EXAMPLE_INPUTS
from tests.util import DATA_DIR

EVIL = "<script>alert('x')</script> & \"q\" | `md` <img src=x onerror=alert(1)>"


def _evil_model(path: Path) -> Path:
    rng = np.random.default_rng(0)
    weight = onnx.numpy_helper.from_array(rng.standard_normal((16, 16)).astype(np.float32), f"w {EVIL}")
    node = oh.make_node("MatMul", ["x", weight.name], ["y"], name=EVIL)
    graph = oh.make_graph([node], "evil", [oh.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [4, 16])],
                          [oh.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [4, 16])], [weight])
    onnx.save(oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)], ir_version=8), path)
    return path


@pytest.fixture(scope="session")
def int8_doc(tmp_path_factory) -> dict:
    """The int8 preset on the digits CNN with calibration data, verified: a qdq decision table with time ratios."""
    folder = tmp_path_factory.mktemp("int8")
    result = optimize(DATA_DIR / "digits_cnn.onnx", folder / "out.onnx", preset="int8",
                      calib=DATA_DIR / "digits_calib.npz", verify=True)
    return result.as_dict()


@pytest.fixture(scope="session")
def fp16_doc(tmp_path_factory) -> dict:
    """fp16 on the digits CNN with the Gemms pinned to fp32: fp32 decisions with their reason."""
    folder = tmp_path_factory.mktemp("fp16")
    result = optimize(DATA_DIR / "digits_cnn.onnx", folder / "out.onnx", preset="fp16",
                      overrides=["fp16.keep_fp32=op:Gemm"], verify=True, inputs=EXAMPLE_INPUTS)
    return result.as_dict()


@pytest.fixture(scope="session")
def evil_doc(tmp_path_factory) -> dict:
    """fp16 on a model whose node and weight names are hostile markup; the node is pinned to fp32."""
    folder = tmp_path_factory.mktemp("evil")
    source = _evil_model(folder / "evil.onnx")
    result = optimize(source, folder / "out.onnx", preset="fp16", overrides=["fp16.keep_fp32=op:MatMul"], verify=True)
    return result.as_dict()
