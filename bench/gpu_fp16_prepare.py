"""Prepare the GPU fp16 check: fp16 models and their fp32 CPU references, in one folder.

Run on any machine (``python -m bench.gpu_fp16_prepare bench/out/gpu``), copy the folder to
a machine with an NVIDIA GPU and onnxruntime-gpu, and run ``bench/gpu_fp16_check.py`` there
(from the repository root, so it finds ``tests/data``). It judges fp16 with real fp16
CUDA kernels: the overflow model converted by onnxopt and by onnxconverter-common, the
digits CNN's accuracy, MiniLM's sentence embeddings, ResNet-18 and MobileNetV2 outputs.
Results of the last run: ``bench/results/gpu_fp16_check.json``.
"""

import shutil
import sys
from pathlib import Path

import numpy as np
import onnx
from onnxconverter_common.float16 import convert_float_to_float16

from models.cache import cached_model
from models.evaluate import sample_feeds
from onnxopt.api import optimize
from onnxopt.model_io import from_proto, save
from onnxopt.runtime import create_session, run_session
from tests.passes.precision.test_fp16_overflow import OVERFLOW_MODEL

out = Path(sys.argv[1] if len(sys.argv) > 1 else "bench/out/gpu")
out.mkdir(parents=True, exist_ok=True)


def ref(path, feeds):
    s = create_session(path)
    return [run_session(s, f) for f in feeds]


# 1. overflow model: ours vs onnxconverter-common
proto = onnx.parser.parse_model(OVERFLOW_MODEL)
for n in proto.graph.node:
    n.name = n.output[0]
save(from_proto(proto), out / "overflow_fp32.onnx")
optimize(out / "overflow_fp32.onnx", out / "overflow_ours.onnx", passes="fp16")
theirs = convert_float_to_float16(onnx.load(str(out / "overflow_fp32.onnx")), keep_io_types=True)
theirs.ir_version = 8
onnx.save(theirs, str(out / "overflow_theirs.onnx"))
feed = {"x": np.random.default_rng(2024).standard_normal((4, 64)).astype(np.float32)}
np.savez(out / "overflow_feed.npz", **feed)
np.savez(out / "overflow_ref.npz", **ref(out / "overflow_fp32.onnx", [feed])[0])

# 2. digits
digits = Path(__file__).resolve().parent.parent / "tests" / "data" / "digits_cnn.onnx"
shutil.copy(digits, out / "digits_fp32.onnx")
optimize(digits, out / "digits_fp16.onnx", preset="fp16")

# 3. bert / gpt2 / resnet18 / mobilenetv2 small
for name in ("bert", "gpt2", "resnet18", "mobilenetv2"):
    src = cached_model(name, "small")
    shutil.copy(src, out / f"{name}_fp32.onnx")
    optimize(src, out / f"{name}_fp16.onnx", preset="fp16")
    feeds = sample_feeds(name, "small", batch_size=2, count=1)
    feeds = feeds if isinstance(feeds, list) else [feeds]
    np.savez(out / f"{name}_feed.npz", **feeds[0])
    np.savez(out / f"{name}_ref.npz", **ref(out / f"{name}_fp32.onnx", feeds[:1])[0])

# 4. MiniLM pooled, real weights
src = cached_model("minilm_pooled")
optimize(src, out / "minilm_fp16.onnx", preset="fp16")
