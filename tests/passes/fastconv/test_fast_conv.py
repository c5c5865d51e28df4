"""fast-conv: structure after the rewrite, refusals, the kernels used (or not), portability, measure mode."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnx.numpy_helper
import onnx.parser
import pytest

from onnxopt import kernels
from onnxopt.errors import BadInputError
from onnxopt.model_io import Model, from_proto, save, to_proto
from onnxopt.pass_api import PassContext
from onnxopt.passes.fastconv.fast_conv import FastConv
from onnxopt.runtime import create_session, run_session
from tests.passes.fastconv.helpers import needs_kernels, relative_error, session

RESIDUAL_BLOCK = """
    <ir_version: 8, opset_import: ["" : {opset}]>
    g (float[1,32,{size},{size}] x) => (float[1,32,{size},{size}] y)
    {{
        c1 = Conv<pads = [1, 1, 1, 1]>(x, w1, b1)
        r1 = Relu(c1)
        c2 = Conv<pads = [1, 1, 1, 1]>(r1, w2, b2)
        s = Add(c2, x)
        y = Relu(s)
    }}
"""


def with_weights(text: str, shapes: dict[str, tuple], seed: int = 0) -> Model:
    rng = np.random.default_rng(seed)
    proto = onnx.parser.parse_model(text)
    for name, shape in shapes.items():
        scale = 1.0 / np.sqrt(np.prod(shape[1:])) if len(shape) > 1 else 0.1
        proto.graph.initializer.append(onnx.numpy_helper.from_array((rng.standard_normal(shape) * scale)
                                                                    .astype(np.float32), name))
    return from_proto(proto)


def residual_block(size: int = 8, opset: int = 17) -> Model:
    return with_weights(RESIDUAL_BLOCK.format(size=size, opset=opset),
                        {"w1": (32, 32, 3, 3), "b1": (32,), "w2": (32, 32, 3, 3), "b2": (32,)})


def run_fast_conv(model: Model, target: str = "ort-cpu", **options) -> tuple[Model, object]:
    work = model.copy()
    instance = FastConv(FastConv.make_options(options) if options else None)
    result = instance.run(work, PassContext(target=target))
    return work, result


def feed(model: Model, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {t.name: rng.standard_normal(t.shape).astype(np.float32) for t in model.graph.inputs}


def test_rules_mode_fuses_residual_blocks_into_winograd_ops() -> None:
    model = residual_block()
    new, result = run_fast_conv(model, mode="rules")
    assert result.modified
    assert [(node.op, node.domain) for node in new.graph.nodes] == [
        ("WinogradConvRelu", kernels.DOMAIN), ("WinogradConvAddRelu", kernels.DOMAIN)]
    assert sorted(f.name for f in new.graph.functions) == ["WinogradConvAddRelu", "WinogradConvRelu"]
    second = new.graph.nodes[1]
    assert second.attrs["tile"] == 4 and list(second.attrs["pads"]) == [1, 1, 1, 1]
    assert second.inputs[3].name == "x" and second.outputs[0].name == "y"
    proto = to_proto(new)
    onnx.checker.check_model(proto)
    assert any(opset.domain == kernels.DOMAIN for opset in proto.opset_import)
    assert result.stats["replaced"] == 2 and result.stats["by_algorithm"] == {"winograd4": 2}
    decisions = result.stats["decisions"]
    assert [d["fused"] for d in decisions] == ["Conv+Relu", "Conv+Add+Relu"]
    assert all(d["decision"] == "winograd4" and d["shape"]["weight"] == [32, 32, 3, 3] for d in decisions)
    assert not run_fast_conv(new, mode="rules")[1].modified  # nothing left to replace
    assumed = json.loads(new.metadata_props["onnxopt.fast-conv"])  # what the decisions assumed of the host
    assert assumed["mode"] == "rules" and assumed["target"] == "ort-cpu" and assumed["replaced"] == {"winograd4": 2}


@needs_kernels
def test_optimized_model_uses_the_kernels_and_matches_the_original() -> None:
    model = residual_block(size=12)
    new, _ = run_fast_conv(model, mode="rules")
    inputs = feed(model)
    expected = run_session(create_session(model), inputs)["y"]
    before = kernels.calls("WinogradConvAddRelu")
    with_kernels = run_session(create_session(new), inputs)["y"]
    assert kernels.calls("WinogradConvAddRelu") == before + 1  # the custom kernel ran, not the function body
    assert relative_error(with_kernels, expected) < 1e-4
    before = kernels.calls()
    inlined = run_session(create_session(new, use_kernels=False), inputs)["y"]
    assert kernels.calls() == before  # no kernel: onnxruntime inlined the standard function bodies
    assert relative_error(inlined, expected) < 1e-5


def test_saved_model_runs_in_plain_onnxruntime_without_the_library(tmp_path: Path) -> None:
    model = residual_block(size=10)
    new, _ = run_fast_conv(model, mode="rules")
    path = tmp_path / "fast.onnx"
    save(new, path)
    inputs = feed(model)
    expected = run_session(create_session(model), inputs)["y"]
    for optimize in (False, True):
        actual = session(str(path), with_kernels=False, optimize=optimize).run(None, inputs)[0]
        assert relative_error(actual, expected) < 1e-5


NEGATIVES = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[1,32,16,16] x, float[1,32,H,W] d, float[1,1,1,1] lo) => (float[1,32,8,8] s2, float[1,32,12,12] dil,
        float[1,32,16,16] one, float[1,32,16,16] grouped, float[1,32,H,W] dyn, float[1,32,16,16] clip,
        float[1,32,16,16] bcast, float[1,32,16,16] shared, float[1,32,16,16] shared_relu)
    {
        s2 = Conv<pads = [1, 1, 1, 1], strides = [2, 2]>(x, w)
        dil = Conv<dilations = [2, 2]>(x, w)
        one = Conv(x, w1x1)
        grouped = Conv<pads = [1, 1, 1, 1], group = 2>(x, wg)
        dyn = Conv<pads = [1, 1, 1, 1]>(d, w)
        cc = Conv<pads = [1, 1, 1, 1]>(x, w)
        clip = Clip(cc, lo_scalar, hi_dynamic)
        cb = Conv<pads = [1, 1, 1, 1]>(x, w)
        bcast = Add(cb, bias4d)
        shared = Conv<pads = [1, 1, 1, 1]>(x, w)
        shared_relu = Relu(shared)
    }
"""


def test_ineligible_convolutions_are_kept_with_reasons() -> None:
    text = NEGATIVES.replace("hi_dynamic", "lo_dyn")
    model = with_weights(text.replace("float[1,1,1,1] lo)", "float lo_dyn)"),
                         {"w": (32, 32, 3, 3), "w1x1": (32, 32, 1, 1), "wg": (32, 16, 3, 3), "lo_scalar": (),
                          "bias4d": (1, 32, 1, 1)})
    new, result = run_fast_conv(model, mode="rules")
    reasons = {d["node"] or "?": d["reason"] for d in result.stats["decisions"]}
    decisions = result.stats["decisions"]
    by_output = {}
    for node, decision in zip([n for n in model.graph.nodes if n.op == "Conv"], decisions, strict=True):
        by_output[node.outputs[0].name] = decision
    assert by_output["s2"]["reason"] == "stride is not 1"
    assert by_output["dil"]["reason"] == "dilated convolution"
    assert by_output["one"]["reason"] == "no fast algorithm fits this convolution"
    assert by_output["grouped"]["candidates"]["fft"]["reason"] == "grouped convolution that is not depthwise"
    assert by_output["dyn"]["reason"].startswith("input shape is not static")
    # Clip with a dynamic bound: the Conv alone is replaced, the Clip stays.
    assert by_output["cc"]["fused"] == "Conv" and "Clip not fused" in by_output["cc"]["notes"][0]
    # Broadcasting Add: not fused.
    assert by_output["cb"]["fused"] == "Conv" and "Add not fused" in by_output["cb"]["notes"][0]
    # A Conv output that is also a graph output keeps its Relu apart.
    assert by_output["shared"]["fused"] == "Conv"
    ops = [node.op for node in new.graph.nodes]
    assert ops.count("Conv") == 5 and ops.count("WinogradConv") == 3 and "Clip" in ops and "Relu" in ops
    assert reasons  # every Conv got a decision
    rng = np.random.default_rng(2)
    inputs = {"x": rng.standard_normal((1, 32, 16, 16)).astype(np.float32),
              "d": rng.standard_normal((1, 32, 7, 9)).astype(np.float32), "lo_dyn": np.array(-0.5, np.float32)}
    expected = run_session(create_session(model), inputs)
    actual = run_session(create_session(new), inputs)
    for name, value in expected.items():
        assert relative_error(actual[name], value) < 1e-4, name


def test_gpu_targets_leave_convolutions_alone() -> None:
    model = residual_block()
    for target in ("ort-cuda", "tensorrt"):
        new, result = run_fast_conv(model, target=target, mode="rules")
        assert not result.modified
        assert [node.op for node in new.graph.nodes] == ["Conv", "Relu", "Conv", "Add", "Relu"]
        assert all("choose Winograd/FFT themselves" in d["reason"] for d in result.stats["decisions"])


def test_old_opset_keeps_clip_outside_the_kernel() -> None:
    text = """
        <ir_version: 4, opset_import: ["" : 9]>
        g (float[1,32,8,8] x) => (float[1,32,8,8] y) {
            c = Conv<pads = [1, 1, 1, 1]>(x, w)
            y = Clip<min = 0.0, max = 6.0>(c)
        }
    """
    model = with_weights(text, {"w": (32, 32, 3, 3)})
    new, _result = run_fast_conv(model, mode="rules")
    assert [node.op for node in new.graph.nodes] == ["WinogradConv", "Clip"]
    onnx.checker.check_model(to_proto(new))
    inputs = feed(model)
    expected = run_session(create_session(model), inputs)["y"]
    assert relative_error(run_session(create_session(new, use_kernels=False), inputs)["y"], expected) < 1e-5


def test_relu6_clip_is_fused_at_opset_11_and_later() -> None:
    text = """
        <ir_version: 8, opset_import: ["" : 13]>
        g (float[1,32,8,8] x) => (float[1,32,8,8] y) {
            c = Conv<pads = [1, 1, 1, 1]>(x, w, b)
            y = Clip(c, zero, six)
        }
    """
    model = with_weights(text, {"w": (32, 32, 3, 3), "b": (32,)})
    proto = to_proto(model)
    proto.graph.initializer.extend([onnx.numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
                                    onnx.numpy_helper.from_array(np.array(6.0, np.float32), "six")])
    model = from_proto(proto)
    new, _ = run_fast_conv(model, mode="rules")
    node = new.graph.nodes[0]
    assert node.op == "WinogradConvClip" and (node.attrs["clip_min"], node.attrs["clip_max"]) == (0.0, 6.0)
    inputs = feed(model)
    expected = run_session(create_session(model), inputs)["y"]
    assert relative_error(run_session(create_session(new, use_kernels=False), inputs)["y"], expected) < 1e-5
    if kernels.available():
        assert relative_error(run_session(create_session(new), inputs)["y"], expected) < 1e-4


def test_fft_rules_on_long_1d_and_large_depthwise_kernels(tmp_path: Path) -> None:
    from models import audio_conv, large_kernel
    from onnxopt.model_io import load

    for module, size, expected_ops in ((audio_conv, "tiny", ["FFTConvRelu"] * 3),
                                       (large_kernel, "small", ["FFTConvRelu"])):  # small: 15x15 depthwise
        path = module.build(tmp_path / f"{module.__name__}.onnx", size=size)
        model = load(path)
        new, _result = run_fast_conv(model, mode="rules")
        assert [n.op for n in new.graph.nodes if n.domain == kernels.DOMAIN] == expected_ops
        inputs = module.sample_inputs(size)
        expected = run_session(create_session(model), inputs)
        for use in (True, False):
            actual = run_session(create_session(new, use_kernels=use), inputs)
            for name in expected:
                assert relative_error(actual[name], expected[name]) < (1e-4 if use else 1e-5), (module, use)


@needs_kernels
def test_measure_mode_records_times_errors_and_consistent_decisions() -> None:
    model = residual_block(size=16)
    new, result = run_fast_conv(model, rounds=3, threads=1)
    assert result.stats["mode"] == "measure" and result.stats["threads"] == 1
    for decision in result.stats["decisions"]:
        assert decision["baseline_ms"] > 0 and decision["baseline_rel_error"] < 1e-5
        measured = {name: c for name, c in decision["candidates"].items() if c["eligible"]}
        assert set(measured) == {"winograd2", "winograd4", "winograd6"}
        for candidate in measured.values():
            assert candidate["best_ms"] > 0 and candidate["speedup"] > 0
            assert 0 < candidate["rel_error"] < 2e-4
        assert decision["candidates"]["fft"] == {"eligible": False, "reason": "9 taps < fft_min_taps 25"}
        if decision["decision"] != "keep":
            chosen = measured[decision["decision"]]
            assert chosen["speedup"] >= 1.15 and chosen["rel_error"] <= 1e-4
            fastest = max(c["speedup"] for c in measured.values() if c["rel_error"] <= 1e-4)
            assert chosen["speedup"] >= fastest / 1.05 - 1e-3  # ties within 5% go to the most accurate
        else:
            assert all(c["speedup"] < 1.15 or c["rel_error"] > 1e-4 for c in measured.values())
    replaced = [d for d in result.stats["decisions"] if d["decision"] != "keep"]
    assert result.stats["replaced"] == len(replaced)
    assert len([n for n in new.graph.nodes if n.domain == kernels.DOMAIN]) == len(replaced)


def test_bad_options_are_bad_input() -> None:
    with pytest.raises(BadInputError, match="mode must be one of"):
        run_fast_conv(residual_block(), mode="fastest")
    with pytest.raises(BadInputError, match="unknown algorithms"):
        run_fast_conv(residual_block(), algorithms="winograd8")
