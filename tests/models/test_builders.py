"""The random-weight architectures build at tiny size into valid, runnable, sane models."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from models import bert, gpt2, large_mlp, mobilenet, resnet
from models.evaluate import sample_feeds
from onnxopt.model_io import load
from onnxopt.versioning import minimum_ir_version
from tests.util import outputs

ROOT = Path(__file__).resolve().parents[2]

# name -> (build function, extra arguments, output name, output shape for batch 2 at tiny size)
BUILDERS = {
    "resnet18": (resnet.build, {"arch": "resnet18"}, "logits", (2, 10)),
    "resnet50": (resnet.build, {"arch": "resnet50"}, "logits", (2, 10)),
    "mobilenetv2": (mobilenet.build, {}, "logits", (2, 10)),
    "bert": (bert.build, {}, "last_hidden_state", (2, 32, 64)),
    "gpt2": (gpt2.build, {}, "logits", (2, 32, 1000)),
    "large_mlp": (large_mlp.build, {}, "output", (2, 10)),
}


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("models")
    return {name: build(folder / f"{name}.onnx", size="tiny", **arguments)
            for name, (build, arguments, _, _) in BUILDERS.items()}


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_tiny_model_is_valid_and_runs(name, built):
    path = built[name]
    onnx.checker.check_model(str(path), full_check=True)
    proto = onnx.load(str(path), load_external_data=False)
    assert proto.ir_version == minimum_ir_version(proto)
    _, _, output, shape = BUILDERS[name]
    assert [o.name for o in proto.graph.output] == [output]
    first, second = sample_feeds(name, "tiny", batch_size=2, count=2)
    result = outputs(path, first)[output]
    assert result.shape == shape
    assert result.dtype == np.float32
    assert np.isfinite(result).all()
    assert result.std() > 1e-3, "outputs collapsed to a constant"
    assert not np.allclose(result, outputs(path, second)[output]), "output ignores the input"


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_build_is_deterministic(name, built, tmp_path):
    build, arguments, _, _ = BUILDERS[name]
    again = build(tmp_path / f"{name}.onnx", size="tiny", **arguments)
    assert again.read_bytes() == built[name].read_bytes()
    data = again.with_name(again.name + ".data")
    if data.exists():
        assert data.read_bytes() == built[name].with_name(built[name].name + ".data").read_bytes()


def _batchnorm_inputs_and_stats(proto: onnx.ModelProto) -> list[tuple[str, np.ndarray, np.ndarray]]:
    initializers = {init.name: onnx.numpy_helper.to_array(init) for init in proto.graph.initializer}
    return [(node.input[0], initializers[node.input[3]], initializers[node.input[4]])
            for node in proto.graph.node if node.op_type == "BatchNormalization"]


@pytest.mark.parametrize("name", ["resnet50", "mobilenetv2"])
def test_conv_nets_keep_unfused_calibrated_batchnorms(name, built):
    """Each Conv has its own BatchNormalization whose running stats fit fresh random images."""
    proto = onnx.load(str(built[name]))
    ops = [node.op_type for node in proto.graph.node]
    assert ops.count("BatchNormalization") == ops.count("Conv") > 20
    stats = _batchnorm_inputs_and_stats(proto)
    probe = onnx.ModelProto()
    probe.CopyFrom(proto)
    for tensor_name, _, _ in stats:
        probe.graph.output.append(onnx.ValueInfoProto(name=tensor_name))
    images = sample_feeds(name, "tiny", batch_size=32, seed=99)[0]
    values = outputs(probe, images)
    ratios = []
    for tensor_name, mean, var in stats:
        activation = values[tensor_name]
        if activation.shape[0] * activation.shape[2] * activation.shape[3] < 512:
            continue  # too few positions for a per-channel estimate
        measured_var = activation.var(axis=(0, 2, 3))
        measured_mean = activation.mean(axis=(0, 2, 3))
        assert np.abs(measured_mean - mean).max() <= 0.5 * np.sqrt(var).max() + 1e-6, tensor_name
        ratios.append(np.median(measured_var / var))
    assert len(ratios) > 10
    assert min(ratios) > 0.8 and max(ratios) < 1.25
    assert not np.allclose(np.concatenate([s[2] for s in stats]), 1.0), "running_var left at its default"


def test_mobilenet_channel_rounding():
    assert mobilenet.make_divisible(32 * 0.25) == 8
    assert mobilenet.make_divisible(24 * 0.5) == 16
    assert mobilenet.make_divisible(1280 * 1.0) == 1280


def test_op_structure(built):
    def op_set(name: str) -> dict[str, int]:
        proto = onnx.load(str(built[name]), load_external_data=False)
        counts: dict[str, int] = {}
        for node in proto.graph.node:
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
        return counts

    mobile = onnx.load(str(built["mobilenetv2"]))
    depthwise = [n for n in mobile.graph.node if n.op_type == "Conv"
                 and next(a.i for a in n.attribute if a.name == "group") > 1]
    assert len(depthwise) == 17
    # Ten residual blocks in MobileNetV2, plus the first at width 0.25 (8 channels in and out).
    assert op_set("mobilenetv2")["Clip"] == 35 and op_set("mobilenetv2")["Add"] == 11
    assert op_set("resnet18")["Add"] == 8 and op_set("resnet50")["Add"] == 16
    assert op_set("resnet50")["Gemm"] == 1 and op_set("resnet50")["GlobalAveragePool"] == 1
    assert op_set("bert")["LayerNormalization"] == 5 and op_set("bert")["Erf"] == 2
    gpt = op_set("gpt2")
    assert gpt["Trilu"] == 1 and gpt["Tanh"] == 2 and gpt["Split"] == 2 and gpt["LayerNormalization"] == 5


def test_gpt2_is_causal(built):
    """Changing a later token leaves the logits of earlier positions unchanged."""
    feed = sample_feeds("gpt2", "tiny", batch_size=1)[0]
    feed["attention_mask"][:] = 1
    changed = {name: value.copy() for name, value in feed.items()}
    changed["input_ids"][0, 20] = (changed["input_ids"][0, 20] + 1) % 1000
    before, after = outputs(built["gpt2"], feed)["logits"], outputs(built["gpt2"], changed)["logits"]
    np.testing.assert_array_equal(before[0, :20], after[0, :20])
    assert not np.allclose(before[0, 20:], after[0, 20:])


def test_bert_ignores_padded_tokens(built):
    feed = sample_feeds("bert", "tiny", batch_size=1)[0]
    feed["attention_mask"][0, 24:] = 0
    changed = {name: value.copy() for name, value in feed.items()}
    changed["input_ids"][0, 24:] = 7
    before, after = outputs(built["bert"], feed), outputs(built["bert"], changed)
    np.testing.assert_allclose(before["last_hidden_state"][0, :24], after["last_hidden_state"][0, :24], atol=1e-6)


def test_large_mlp_weights_are_external_and_lazy(built):
    path = built["large_mlp"]
    proto = onnx.load(str(path), load_external_data=False)
    assert all(init.data_location == onnx.TensorProto.EXTERNAL for init in proto.graph.initializer)
    data = path.with_name(path.name + ".data")
    assert data.stat().st_size == pytest.approx(large_mlp.SIZES["tiny"].weight_bytes, rel=0.01)
    for init in proto.graph.initializer:
        offset = int(next(e.value for e in init.external_data if e.key == "offset"))
        assert offset % large_mlp.ALIGNMENT_BYTES == 0
    model = load(path)
    assert model.had_external_data
    assert large_mlp.SIZES["base"].weight_bytes > 2**31 + 2**28, "full size must exceed protobuf's 2 GiB"


def test_full_sizes_are_the_published_architectures():
    base = bert.SIZES["base"]
    assert (base.num_layers, base.hidden_size, base.num_heads, base.intermediate_size) == (12, 768, 12, 3072)
    decoder = gpt2.SIZES["base"]
    assert (decoder.num_layers, decoder.hidden_size, decoder.num_heads, decoder.vocab_size) == (12, 768, 12, 50257)
    assert resnet.SIZES["base"].width == 64 and resnet.SIZES["base"].image_size == 224


@pytest.mark.parametrize("module, arguments", [("models.resnet", ["--arch", "resnet18"]), ("models.large_mlp", [])])
def test_builder_runs_as_module(module, arguments, tmp_path):
    target = tmp_path / "out.onnx"
    done = subprocess.run([sys.executable, "-m", module, str(target), "--size", "tiny", "--quiet", *arguments],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    onnx.checker.check_model(str(target))
    refused = subprocess.run([sys.executable, "-m", module, str(target), "--size", "huge"], cwd=ROOT,
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "size must be one of" in refused.stderr
