"""TensorRT export: refusal without TensorRT, profiles, precision from the model, and the builder calls.

No GPU or TensorRT here: the refusal is tested for real; the engine-building code is
exercised against a recording stand-in of the ``tensorrt`` module, which checks the
flags, profile shapes and parse/build sequence we hand TensorRT's documented API.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import numpy as np
import onnx
import pytest

from onnxopt.api import optimize
from onnxopt.data import InputSpec
from onnxopt.errors import BadInputError
from onnxopt.examples import EXAMPLE_INPUTS, EXAMPLE_MODEL
from onnxopt.export.tensorrt import build_engine, build_profiles, detect_precision, parse_shape_ranges
from tests.cli.test_cli import assert_one_line_error, invoke

HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None


@pytest.mark.skipif(HAS_TENSORRT, reason="TensorRT is installed: the refusal cannot be observed")
def test_without_tensorrt_the_export_is_one_line_exit_2_and_writes_nothing(tmp_path: Path) -> None:
    for command in (["export", EXAMPLE_MODEL, "--format", "tensorrt"],
                    ["optimize", EXAMPLE_MODEL, "--export", "tensorrt"]):
        result = invoke(*command, "-o", tmp_path / "model.engine")
        assert_one_line_error(result, 2, "TensorRT export needs NVIDIA TensorRT")
    assert list(tmp_path.iterdir()) == []


def test_shape_ranges_parse_min_opt_max_and_single_shapes() -> None:
    ranges = parse_shape_ranges(["input=1,1,8,8/16,1,8,8/64,1,8,8", "ids=1x128"])
    assert ranges["input"] == ((1, 1, 8, 8), (16, 1, 8, 8), (64, 1, 8, 8))
    assert ranges["ids"] == ((1, 128),) * 3
    for bad, fragment in (("input", "name=MIN/OPT/MAX"), ("x=1,2/3,4", "one shape or three"),
                          ("x=1,a", "integers"), ("x=0,4", "positive")):
        with pytest.raises(BadInputError, match=fragment):
            parse_shape_ranges([bad])


def test_profiles_need_a_range_for_every_dynamic_input() -> None:
    specs = [InputSpec("input", np.dtype(np.float32), ("batch", 1, 8, 8)),
             InputSpec("scale", np.dtype(np.float32), (1,))]
    with pytest.raises(BadInputError, match=r"--shape input=MIN/OPT/MAX"):
        build_profiles(specs, {})
    profiles = build_profiles(specs, parse_shape_ranges(["input=1,1,8,8/8,1,8,8/32,1,8,8"]))
    assert [(p.name, p.min, p.opt, p.max) for p in profiles] == [
        ("input", (1, 1, 8, 8), (8, 1, 8, 8), (32, 1, 8, 8)), ("scale", (1,), (1,), (1,))]
    for bad, fragment in (("input=1,3,8,8", "MIN dim 1 is 3"), ("input=8,1,8,8/1,1,8,8/32,1,8,8", "MIN <= OPT"),
                          ("input=1,8,8", "rank 3"), ("other=1", "unknown input")):
        with pytest.raises(BadInputError, match=fragment):
            build_profiles(specs, parse_shape_ranges([bad]))


@pytest.fixture(scope="module")
def precision_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("precision")
    paths = {"fp32": EXAMPLE_MODEL}
    optimize(EXAMPLE_MODEL, folder / "fp16.onnx", preset="fp16")
    paths["fp16"] = folder / "fp16.onnx"
    optimize(EXAMPLE_MODEL, folder / "int8.onnx", preset="int8-tensorrt", target="tensorrt", calib=EXAMPLE_INPUTS)
    paths["int8"] = folder / "int8.onnx"
    return paths


def test_precision_flags_come_from_the_models_own_types(precision_models: dict[str, Path]) -> None:
    plain = detect_precision(onnx.load(str(precision_models["fp32"])))
    half = detect_precision(onnx.load(str(precision_models["fp16"])))
    quantized = detect_precision(onnx.load(str(precision_models["int8"])))
    assert (plain.fp16, plain.int8, plain.name) == (False, False, "fp32")
    assert (half.fp16, half.int8, half.name) == (True, False, "fp16")
    assert (quantized.fp16, quantized.int8) == (False, True) and "explicit quantization" in quantized.reasons[0]


class RecordingTensorRT(types.ModuleType):
    """A stand-in for ``tensorrt`` that records what the builder is asked to do."""

    def __init__(self, parse_ok: bool = True) -> None:
        super().__init__("tensorrt")
        self.__version__ = "10.9.0"
        self.calls: list[tuple] = []
        recorder = self.calls
        self.NetworkDefinitionCreationFlag = types.SimpleNamespace(EXPLICIT_BATCH=0)
        self.BuilderFlag = types.SimpleNamespace(FP16="FP16", INT8="INT8")
        self.MemoryPoolType = types.SimpleNamespace(WORKSPACE="WORKSPACE")

        class Logger:
            WARNING = 2

            def __init__(self, level: int) -> None:
                recorder.append(("logger", level))

        class Profile:
            def set_shape(self, name: str, low: tuple, opt: tuple, high: tuple) -> None:
                recorder.append(("profile", name, low, opt, high))

        class Config:
            def set_memory_pool_limit(self, pool: str, size: int) -> None:
                recorder.append(("workspace", pool, size))

            def set_flag(self, flag: str) -> None:
                recorder.append(("flag", flag))

            def add_optimization_profile(self, profile: Profile) -> None:
                recorder.append(("add_profile",))

        class Builder:
            def __init__(self, logger: Logger) -> None:
                pass

            def create_network(self, flags: int) -> object:
                recorder.append(("network", flags))
                return object()

            def create_builder_config(self) -> Config:
                return Config()

            def create_optimization_profile(self) -> Profile:
                return Profile()

            def build_serialized_network(self, network: object, config: Config) -> bytes:
                recorder.append(("build",))
                return b"serialized-engine"

        class OnnxParser:
            num_errors = 0 if parse_ok else 1

            def __init__(self, network: object, logger: Logger) -> None:
                pass

            def parse_from_file(self, path: str) -> bool:
                recorder.append(("parse", Path(path).name))
                return parse_ok

            def get_error(self, index: int) -> str:
                return "In node 3 (Conv): unsupported"

        self.Logger, self.Builder, self.OnnxParser = Logger, Builder, OnnxParser


def test_engine_build_sets_flags_and_profiles_and_writes_atomically(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, precision_models: dict[str, Path]
) -> None:
    fake = RecordingTensorRT()
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    target = tmp_path / "int8.engine"
    build = build_engine(precision_models["int8"], target, parse_shape_ranges(["input=1,1,8,8/8,1,8,8/64,1,8,8"]),
                         workspace_bytes=1 << 30)
    assert target.read_bytes() == b"serialized-engine" and build.precision.name == "int8"
    assert ("network", 0) in fake.calls, "TensorRT 10: no explicit-batch flag (implicit batch is gone)"
    assert ("flag", "INT8") in fake.calls and ("flag", "FP16") not in fake.calls
    assert ("profile", "input", (1, 1, 8, 8), (8, 1, 8, 8), (64, 1, 8, 8)) in fake.calls
    assert ("workspace", "WORKSPACE", 1 << 30) in fake.calls
    assert fake.calls.index(("parse", "int8.onnx")) < fake.calls.index(("build",))
    assert [p.name for p in tmp_path.iterdir()] == ["int8.engine"]


def test_parser_errors_are_one_line_and_nothing_is_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", RecordingTensorRT(parse_ok=False))
    result = invoke("export", EXAMPLE_MODEL, "--format", "tensorrt", "--shape", "input=1,1,8,8",
                    "-o", tmp_path / "m.engine")
    assert_one_line_error(result, 2, "TensorRT's ONNX parser refuses digits_cnn.onnx: In node 3 (Conv)")
    assert list(tmp_path.iterdir()) == []
