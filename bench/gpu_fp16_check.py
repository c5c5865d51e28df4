"""GPU check of fp16 outputs with onnxruntime's CUDA execution provider (real fp16 kernels).

Run on the GPU machine as ``python gpu_fp16_check.py`` from inside the folder written by
``bench/gpu_fp16_prepare.py``, placed in the repository root; writes ``$OUT/gpu_check.json``.
"""

import json
import os

import numpy as np
import onnxruntime as ort

OUT = os.environ.get("OUT", "/tmp")
here = os.path.dirname(os.path.abspath(__file__))
repo = os.path.dirname(here)
report = {"onnxruntime": ort.__version__, "providers": ort.get_available_providers()}


def session(name):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    s = ort.InferenceSession(os.path.join(here, name), so, providers=["CUDAExecutionProvider"])
    assert s.get_providers()[0] == "CUDAExecutionProvider", s.get_providers()
    return s


def errors(ref, out):
    ref = np.asarray(ref, np.float64)
    out = np.asarray(out, np.float64)
    finite = bool(np.all(np.isfinite(out)))
    d = {"finite": finite, "nonfinite": int(np.count_nonzero(~np.isfinite(out)))}
    if finite:
        d["max_rel"] = float(np.max(np.abs(out - ref)) / max(np.max(np.abs(ref)), 1e-30))
        d["cosine"] = float(np.dot(out.ravel(), ref.ravel()) / (np.linalg.norm(out) * np.linalg.norm(ref) + 1e-300))
    return d


def pair(model, feed_file, ref_file):
    feed = dict(np.load(os.path.join(here, feed_file)))
    ref = dict(np.load(os.path.join(here, ref_file)))
    s = session(model)
    outs = dict(zip([o.name for o in s.get_outputs()], s.run(None, feed), strict=True))
    return {k: errors(ref[k], outs[k]) for k in ref}


for model in ("overflow_ours.onnx", "overflow_theirs.onnx"):
    report[model] = pair(model, "overflow_feed.npz", "overflow_ref.npz")
for name in ("resnet18", "mobilenetv2", "bert"):
    if os.path.exists(os.path.join(here, f"{name}_fp16.onnx")):
        report[f"{name}_fp16.onnx"] = pair(f"{name}_fp16.onnx", f"{name}_feed.npz", f"{name}_ref.npz")

digits = np.load(os.path.join(repo, "tests", "data", "digits_test.npz"))
s = session("digits_fp16.onnx")
logits = s.run(None, {"input": digits["input"]})[0]
report["digits_fp16.onnx"] = {
    "accuracy": float(np.mean(logits.argmax(1) == digits["labels"])),
    "finite": bool(np.all(np.isfinite(logits))),
}

ref = np.load(os.path.join(repo, "tests", "data", "minilm_reference.npz"))
s = session("minilm_fp16.onnx")
names = [i.name for i in s.get_inputs()]
emb = np.concatenate(
    [
        s.run(["sentence_embedding"], {n: ref[n][i : i + 8] for n in names})[0]
        for i in range(0, len(ref["input_ids"]), 8)
    ]
)
cos = np.sum(emb * ref["sentence_embedding"], 1) / (
    np.linalg.norm(emb, axis=1) * np.linalg.norm(ref["sentence_embedding"], axis=1)
)
report["minilm_fp16.onnx"] = {
    "finite": bool(np.all(np.isfinite(emb))),
    "min_cosine": float(cos.min()),
    "mean_cosine": float(cos.mean()),
    "sentences": len(cos),
}
text = json.dumps(report, indent=1)
print(text)
with open(os.path.join(OUT, "gpu_check.json"), "w") as handle:
    handle.write(text)
