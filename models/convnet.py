"""Convolutional building blocks with realistic random weights and calibrated BatchNorm.

Random convolution weights alone give BatchNorm nothing sensible to hold: with made-up
running statistics, activations explode or vanish over fifty layers and any fp16 or int8
experiment on the model means nothing. So a network is built twice from the same
seeded weights: first with every BatchNorm computing the statistics of a random input
batch itself (ReduceMean over N, H, W) and exposing them as extra outputs, run once in
onnxruntime; then as the real inference graph, with those measured statistics as the
BatchNormalization nodes' running mean and variance. The result behaves like a trained
network on its input distribution (activations of unit scale, BN layers that do real
work), and the BatchNormalization nodes stay separate from the convolutions so that
conv-bn fusion has something to do.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto

from models.builder import GraphBuilder

BN_EPSILON = 1e-5
CALIBRATION_SEED_OFFSET = 1_000_003
CALIBRATION_PIXELS = 2**16


def scope(name: str) -> str:
    """Node-name scope of a weight prefix, as exporters write it: ``layer1.0.conv1`` -> ``/layer1/0/conv1``."""
    return "/" + name.replace(".", "/")


@dataclass
class ParamStore:
    """Seeded weights by name: generated on first request, the same object afterwards."""

    seed: int
    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._rng = np.random.default_rng(self.seed)

    def get(self, name: str, make: Callable[[np.random.Generator], np.ndarray]) -> np.ndarray:
        if name not in self.arrays:
            self.arrays[name] = np.ascontiguousarray(make(self._rng), dtype=np.float32)
        return self.arrays[name]


class ConvNet:
    """Emits convolutions, BatchNorms and activations into a GraphBuilder.

    With ``statistics=None`` BatchNorms normalise with the batch's own statistics and
    publish them as outputs (the calibration graph); otherwise they are
    BatchNormalization nodes with the given running statistics.
    """

    def __init__(self, builder: GraphBuilder, params: ParamStore,
                 statistics: dict[str, tuple[np.ndarray, np.ndarray]] | None) -> None:
        self.b = builder
        self.params = params
        self.statistics = statistics
        self.statistic_outputs: list[str] = []

    def conv(self, x: str, in_channels: int, out_channels: int, kernel: int, name: str, stride: int = 1,
             groups: int = 1) -> str:
        """A bias-free convolution with He-normal weights (fan-in), 'same' padding for odd kernels."""
        fan_in = in_channels // groups * kernel * kernel
        std = math.sqrt(2.0 / fan_in)
        weight = self.params.get(
            f"{name}.weight",
            lambda rng: rng.standard_normal((out_channels, in_channels // groups, kernel, kernel)) * std,
        )
        pad = kernel // 2
        return self.b.node("Conv", [x, self.b.initializer(f"{name}.weight", weight)], f"{scope(name)}/Conv",
                           kernel_shape=[kernel, kernel], strides=[stride, stride], pads=[pad] * 4,
                           group=groups, dilations=[1, 1])

    def batch_norm(self, x: str, channels: int, name: str, gamma_scale: float = 1.0) -> str:
        """BatchNorm with trained-looking affine parameters (gamma around ``gamma_scale``)."""
        gamma = self.params.get(f"{name}.weight",
                                lambda rng: np.abs(rng.normal(1.0, 0.2, channels)) * gamma_scale + 0.05)
        beta = self.params.get(f"{name}.bias", lambda rng: rng.normal(0.0, 0.1, channels))
        if self.statistics is None:
            return self._batch_statistics_norm(x, gamma, beta, name)
        mean, var = self.statistics[name]
        inputs = [x] + [self.b.initializer(f"{name}.{kind}", value) for kind, value in
                        (("weight", gamma), ("bias", beta), ("running_mean", mean), ("running_var", var))]
        return self.b.node("BatchNormalization", inputs, f"{scope(name)}/BatchNormalization", epsilon=BN_EPSILON)

    def _batch_statistics_norm(self, x: str, gamma: np.ndarray, beta: np.ndarray, name: str) -> str:
        b, prefix = self.b, scope(name)
        mean = b.node("ReduceMean", [x], f"{prefix}/mean", outputs=[f"{name}.calibrated_mean"], axes=[0, 2, 3])
        centered = b.node("Sub", [x, mean], f"{prefix}/Sub")
        var = b.node("ReduceMean", [b.node("Mul", [centered, centered], f"{prefix}/Square")], f"{prefix}/var",
                     outputs=[f"{name}.calibrated_var"], axes=[0, 2, 3])
        self.statistic_outputs.extend([mean, var])
        scale = b.node("Sqrt", [b.node("Add", [var, b.const(BN_EPSILON)], f"{prefix}/AddEps")], f"{prefix}/Sqrt")
        normed = b.node("Div", [centered, scale], f"{prefix}/Div")
        shape = [1, len(gamma), 1, 1]
        scaled = b.node("Mul", [normed, b.const(gamma.reshape(shape))], f"{prefix}/Mul")
        return b.node("Add", [scaled, b.const(beta.reshape(shape))], f"{prefix}/Add")

    def relu(self, x: str, at: str) -> str:
        return self.b.node("Relu", [x], f"{at}/Relu")

    def relu6(self, x: str, at: str) -> str:
        """ReLU6 as exporters write it: ``Clip(x, 0, 6)``."""
        return self.b.node("Clip", [x, self.b.const(0.0), self.b.const(6.0)], f"{at}/Clip")

    def classifier(self, x: str, features: int, classes: int, name: str) -> str:
        """Global average pool, flatten and a Gemm head (weights N(0, 0.01) as torchvision)."""
        b = self.b
        pooled = b.node("GlobalAveragePool", [x], "/pool/GlobalAveragePool")
        flat = b.node("Flatten", [pooled], "/pool/Flatten", axis=1)
        weight = self.params.get(f"{name}.weight", lambda rng: rng.normal(0.0, 0.01, (classes, features)))
        bias = self.params.get(f"{name}.bias", lambda rng: rng.normal(0.0, 0.01, classes))
        return b.node("Gemm", [flat, b.initializer(f"{name}.weight", weight), b.initializer(f"{name}.bias", bias)],
                      f"/{name}/Gemm", outputs=["logits"], transB=1)


Architecture = Callable[[ConvNet, str], tuple[str, int]]


def _graph(name: str, architecture: Architecture, params: ParamStore, image_size: int,
           statistics: dict[str, tuple[np.ndarray, np.ndarray]] | None) -> tuple[onnx.ModelProto, list[str]]:
    b = GraphBuilder(name)
    image = b.input("input", TensorProto.FLOAT, ["batch", 3, image_size, image_size])
    net = ConvNet(b, params, statistics)
    _, classes = architecture(net, image)
    b.output("logits", TensorProto.FLOAT, ["batch", classes])
    for output in net.statistic_outputs:
        b.output(output, TensorProto.FLOAT, None)
    return b.model(f"{name}: seeded random weights, BatchNorm statistics calibrated on N(0,1) images"), \
        net.statistic_outputs


def build_calibrated(name: str, architecture: Architecture, image_size: int, seed: int,
                     calibration_batch: int | None = None) -> onnx.ModelProto:
    """The inference graph of ``architecture`` with BatchNorm statistics measured on random images.

    The default batch gives the deepest layers enough positions per channel for a
    steady estimate at small image sizes and stays cheap at 224×224.
    """
    if calibration_batch is None:
        calibration_batch = min(64, max(4, CALIBRATION_PIXELS // (image_size * image_size)))
    params = ParamStore(seed)
    calibration, statistic_outputs = _graph(name, architecture, params, image_size, None)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(calibration.SerializeToString(), options, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed + CALIBRATION_SEED_OFFSET)
    images = rng.standard_normal((calibration_batch, 3, image_size, image_size)).astype(np.float32)
    measured = dict(zip(statistic_outputs, session.run(statistic_outputs, {"input": images}), strict=True))
    statistics = {}
    for output in statistic_outputs[::2]:
        bn_name = output.removesuffix(".calibrated_mean")
        statistics[bn_name] = (measured[output].reshape(-1).astype(np.float32),
                               measured[f"{bn_name}.calibrated_var"].reshape(-1).astype(np.float32))
    inference, _ = _graph(name, architecture, params, image_size, statistics)
    return inference


def sample_images(image_size: int, batch_size: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs on the distribution the BatchNorms were calibrated on."""
    rng = np.random.default_rng(seed)
    return {"input": rng.standard_normal((batch_size, 3, image_size, image_size)).astype(np.float32)}
