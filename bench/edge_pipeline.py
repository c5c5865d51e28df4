"""The edge path end to end on real framework models: convert → optimize int8 → .ort, judged against the framework.

Two models, each trained here on scikit-learn's bundled digits (no downloads; 70/30
stratified split, held-out rows never seen in training or calibration):

* ``resnet18``: torchvision's ResNet-18 (10 classes), images upsampled 8×8 → 32×32 × 3
  channels, saved with ``torch.export.save`` (dynamic batch);
* ``keras-cnn``: a Keras functional CNN saved as ``.keras``.

Each goes through one command, ``onnxopt optimize SRC --preset int8 --calib calib.npz
--verify --export ort -o model.ort``, and the ``.ort`` is run in onnxruntime against the
framework on the held-out rows: accuracy, top-1 agreement, max abs error and cosine, next
to the framework-vs-ONNX error and the int8 error the report states.

Run: ``python -m bench.edge_pipeline --model resnet18`` (needs torch + torchvision: see
README) and ``python -m bench.edge_pipeline --model keras-cnn`` (needs the tf extra).
Results merge into ``bench/results/edge_pipeline.{json,md}``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

import numpy as np

from onnxopt.cpu_features import cpu_model_name, host_cpu

RESULTS = Path(__file__).resolve().parent / "results"
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_int8", "fma")


def digits_split(size: int, channels_last: bool) -> dict[str, np.ndarray]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    images, labels = load_digits(return_X_y=True)
    images = (images.reshape(-1, 8, 8) / 16.0).astype(np.float32)
    if size != 8:
        images = np.repeat(np.repeat(images, size // 8, axis=1), size // 8, axis=2)
    images = images[:, None] if not channels_last else images[..., None]
    if not channels_last and size != 8:
        images = np.repeat(images, 3, axis=1)
    x_train, x_test, y_train, y_test = train_test_split(images, labels, test_size=0.3, random_state=0, stratify=labels)
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}


def train_resnet18(folder: Path, data: dict[str, np.ndarray]) -> tuple[Path, object]:
    import torch
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=10)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    x, y = torch.from_numpy(data["x_train"]), torch.from_numpy(data["y_train"]).long()
    model.train()
    for _epoch in range(4):
        order = torch.randperm(len(x))
        for start in range(0, len(x), 64):
            batch = order[start:start + 64]
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x[batch]), y[batch])
            loss.backward()
            optimizer.step()
    model.eval()
    batch_dim = torch.export.Dim("batch", min=1, max=256)
    program = torch.export.export(model, (x[:4],), dynamic_shapes={"x": {0: batch_dim}})
    path = folder / "resnet18.pt2"
    torch.export.save(program, str(path))

    def run(images: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(images)).numpy()

    return path, run


def train_keras_cnn(folder: Path, data: dict[str, np.ndarray]) -> tuple[Path, object]:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras

    keras.utils.set_random_seed(0)
    image = keras.Input((8, 8, 1), name="image")
    hidden = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(image)
    hidden = keras.layers.Conv2D(32, 3, padding="same", activation="relu")(hidden)
    hidden = keras.layers.MaxPooling2D()(hidden)
    hidden = keras.layers.Flatten()(hidden)
    hidden = keras.layers.Dense(64, activation="relu")(hidden)
    logits = keras.layers.Dense(10, name="logits")(hidden)
    model = keras.Model(image, logits)
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(data["x_train"], data["y_train"], epochs=15, batch_size=32, verbose=0)
    path = folder / "digits_cnn.keras"
    model.save(path)

    def run(images: np.ndarray) -> np.ndarray:
        return np.asarray(model(images, training=False))

    return path, run


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in ("onnx", "onnxruntime-gpu", "onnxruntime", "torch", "torchvision", "onnxscript", "tensorflow",
                 "tensorflow-cpu", "keras", "tf2onnx", "scikit-learn", "numpy"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def cpu_description() -> dict[str, object]:
    return {"model": cpu_model_name(), "cores": os.cpu_count(),
            "flags": [flag for flag in CPU_FLAGS if flag in host_cpu().flags]}


def evaluate(name: str) -> dict[str, object]:
    import onnxruntime as ort

    channels_last = name == "keras-cnn"
    data = digits_split(8 if channels_last else 32, channels_last)
    with tempfile.TemporaryDirectory(prefix="onnxopt-edge-") as work:
        folder = Path(work)
        started = time.perf_counter()
        source, run = (train_keras_cnn if channels_last else train_resnet18)(folder, data)
        train_seconds = time.perf_counter() - started
        input_name = "image" if channels_last else "x"
        np.savez(folder / "calib.npz", **{input_name: data["x_train"][:128]})
        target = folder / source.with_suffix(".ort").name
        command = [sys.executable, "-m", "onnxopt.cli", "optimize", str(source), "--preset", "int8", "--calib",
                   str(folder / "calib.npz"), "--export", "ort", "-o", str(target), "--json"]
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, timeout=1800)
        pipeline_seconds = time.perf_counter() - started
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(command)} failed ({done.returncode}): {done.stderr[-2000:]}")
        report = json.loads(done.stdout)
        # The fp32 ONNX the conversion gives, to state the int8 error on its own (ONNX fp32 vs int8 .ort).
        fp32 = folder / "fp32.onnx"
        subprocess.run([sys.executable, "-m", "onnxopt.cli", "convert", str(source), "-o", str(fp32)],
                       capture_output=True, text=True, timeout=1800, check=True)
        (from_fp32,) = ort.InferenceSession(str(fp32), providers=["CPUExecutionProvider"]).run(
            None, {input_name: data["x_test"]})
        session = ort.InferenceSession(str(target), providers=["CPUExecutionProvider"])
        x_test, y_test = data["x_test"], data["y_test"]
        (from_ort,) = session.run(None, {input_name: x_test})
        framework = run(x_test)
        calib = data["x_train"][:128]
        (ort_calib,) = session.run(None, {input_name: calib})
        diff = np.abs(from_ort.astype(np.float64) - framework.astype(np.float64))
        cosine = float(np.sum(from_ort * framework) / (np.linalg.norm(from_ort) * np.linalg.norm(framework)))
        sizes = {"source_bytes": sum(p.stat().st_size for p in [source] if p.is_file()),
                 "ort_bytes": target.stat().st_size}
        return {
            "model": name,
            "date": datetime.date.today().isoformat(),
            "command": "onnxopt optimize " + source.name + " --preset int8 --calib calib.npz --export ort "
                       f"-o {target.name}",
            "train_seconds": round(train_seconds, 1),
            "pipeline_seconds": round(pipeline_seconds, 1),
            "held_out_rows": len(y_test),
            "framework_accuracy": float((framework.argmax(1) == y_test).mean()),
            "ort_int8_accuracy": float((from_ort.argmax(1) == y_test).mean()),
            "top1_agreement_with_framework": float((from_ort.argmax(1) == framework.argmax(1)).mean()),
            "ort_vs_framework_max_abs": float(diff.max()),
            "ort_vs_framework_max_rel": float(diff.max() / np.abs(framework).max()),
            "ort_vs_framework_cosine": cosine,
            "ort_vs_framework_max_abs_on_calib": float(np.abs(ort_calib - run(calib)).max()),
            "conversion_max_abs": report["conversion"]["agreement"]["max_abs_error"],
            "int8_max_abs_vs_fp32_onnx": float(np.abs(from_ort - from_fp32).max()),
            "fp32_onnx_accuracy": float((from_fp32.argmax(1) == y_test).mean()),
            "ort_identical_to_onnx": report["export"]["check"]["identical"],
            "kernels": [f"{k['domain']}:{k['op']}" for k in report["export"]["ort"]["kernels"]],
            **sizes,
            "versions": versions(),
            "cpu": cpu_description(),
        }


def write(results: dict[str, dict[str, object]]) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "edge_pipeline.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = ["# Edge pipeline: framework model → convert → int8 → .ort", "",
             "Generated by `python -m bench.edge_pipeline --model NAME`; models trained on scikit-learn's digits, "
             "judged on the 540 held-out rows.", "",
             "| model | framework acc | .ort int8 acc | top-1 agreement | max abs vs framework | cosine | "
             "conversion max abs | int8 .ort vs fp32 ONNX max abs | .ort = ONNX | size .ort | pipeline time |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|"]
    for name, row in sorted(results.items()):
        lines.append(
            f"| {name} | {row['framework_accuracy']:.4f} | {row['ort_int8_accuracy']:.4f} | "
            f"{row['top1_agreement_with_framework']:.4f} | {row['ort_vs_framework_max_abs']:.3g} | "
            f"{row['ort_vs_framework_cosine']:.6f} | {row['conversion_max_abs']:.3g} | "
            f"{row['int8_max_abs_vs_fp32_onnx']:.3g} | {'bit-identical' if row['ort_identical_to_onnx'] else 'no'} | "
            f"{row['ort_bytes'] / 2**20:.2f} MiB | {row['pipeline_seconds']} s |")
    lines.append("")
    for name, row in sorted(results.items()):
        lines += [f"## {name}", "", f"- command: `{row['command']}`", f"- date: {row['date']}",
                  f"- CPU: {row['cpu']['model']}, {row['cpu']['cores']} cores, flags {', '.join(row['cpu']['flags'])}",
                  f"- versions: {', '.join(f'{k} {v}' for k, v in row['versions'].items())}",
                  f"- max abs .ort vs framework on the 128 calibration rows: "
                  f"{row['ort_vs_framework_max_abs_on_calib']:.3g}",
                  f"- kernels: {', '.join(row['kernels'])}", ""]
    (RESULTS / "edge_pipeline.md").write_text("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["resnet18", "keras-cnn"], required=True)
    args = parser.parse_args()
    path = RESULTS / "edge_pipeline.json"
    results = json.loads(path.read_text()) if path.is_file() else {}
    results[args.model] = evaluate(args.model)
    write(results)
    print(json.dumps(results[args.model], indent=2))


if __name__ == "__main__":
    main()
