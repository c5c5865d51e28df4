"""Weight-only low-bit variants side by side: file size, fidelity and latency vs fp32.

For each sample model: the fp32 original, then the ``weight-only`` pass under several
settings (int4 RTN / GPTQ in the standard ``dq`` form and in onnxruntime's
``matmulnbits`` form, binary and ternary), each saved to disk and judged the way
``bench.compare`` judges models: MiniLM by sentence-embedding cosine to the PyTorch
reference (48 sentences never used for calibration), digits by held-out accuracy, the
random-weight models by output cosine to fp32 on seeded inputs. Latency is measured for
all variants of a model in one interleaved run (``onnxopt.benchmark``, onnxruntime CPU
with its graph optimizations on, as deployed).

Run from the project root:

    python -m bench.weight_only                                  # MiniLM, BERT/GPT-2 base, CNNs
    python -m bench.weight_only --models minilm --runs 20        # quick look

Writes ``bench/results/weight_only.md`` and ``.json`` (``--out`` to change); the variant
models go to a temporary folder (``--keep DIR`` keeps them).
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.compare import _digits_data, _digits_model, _minilm_data
from onnxopt.benchmark import BenchConfig, benchmark, machine_info, model_file_bytes
from onnxopt.data import make_feeds
from onnxopt.model_io import load, save, to_proto
from onnxopt.pass_api import PassContext
from onnxopt.passes.quantization.weight_only import WeightOnly

logger = logging.getLogger("bench.weight_only")

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODELS = ("minilm", "bert", "gpt2", "digits", "resnet18", "mobilenetv2")
CALIB_SAMPLES = 16
EVAL_SAMPLES = 8
CALIB_BATCH = 8

# label -> (pass options, needs calibration data)
VARIANTS: dict[str, tuple[dict[str, Any], bool]] = {
    "int4 rtn dq": ({"method": "rtn", "format": "dq"}, False),
    "int4 gptq dq": ({"method": "gptq", "format": "dq"}, True),
    "int4 rtn matmulnbits acc0": ({"method": "rtn", "format": "matmulnbits", "accuracy_level": 0}, False),
    "int4 gptq matmulnbits acc0": ({"method": "gptq", "format": "matmulnbits", "accuracy_level": 0}, True),
    "int4 gptq matmulnbits acc4": ({"method": "gptq", "format": "matmulnbits", "accuracy_level": 4}, True),
    "binary rtn": ({"scheme": "binary", "method": "rtn", "format": "matmulnbits", "accuracy_level": 0}, False),
    "binary gptq": ({"scheme": "binary", "method": "gptq", "format": "matmulnbits", "accuracy_level": 0}, True),
    "ternary rtn": ({"scheme": "ternary", "method": "rtn", "format": "matmulnbits", "accuracy_level": 0}, False),
    "ternary gptq": ({"scheme": "ternary", "method": "gptq", "format": "matmulnbits", "accuracy_level": 0}, True),
}
# Conv kernels take the dq form whatever the format; CNN rows use it throughout.
CNN_MODELS = {"digits", "resnet18", "resnet50", "mobilenetv2"}


@dataclass
class Row:
    model: str
    variant: str
    file_bytes: int
    file_ratio: float
    fidelity: dict[str, float]
    pass_seconds: float
    latency_ratio: float | None = None
    latency_p50_ms: float | None = None
    stats: dict[str, Any] = field(default_factory=dict)


@dataclass
class ModelSpec:
    source: Callable[[str], Path]
    data: Callable[[str, Path], tuple[Path, Path]]  # (evaluation DATA, calibration DATA)
    judge: Callable[[Path, Path, Path], dict[str, float]]  # (candidate, fp32, evaluation DATA)
    batch_size: int = 1


def _stacked(feeds: list[dict[str, np.ndarray]], target: Path) -> Path:
    np.savez(target, **{name: np.concatenate([feed[name] for feed in feeds]) for name in feeds[0]})
    return target


def _cached(name: str) -> Callable[[str], Path]:
    def source(size: str) -> Path:
        from models.cache import cached_model

        return cached_model(name, size)

    return source


def _sample_data(name: str) -> Callable[[str, Path], tuple[Path, Path]]:
    def make(size: str, workdir: Path) -> tuple[Path, Path]:
        from models.evaluate import sample_feeds

        evaluation = sample_feeds(name, size, count=EVAL_SAMPLES, seed=1)
        calibration = sample_feeds(name, size, count=CALIB_SAMPLES, seed=1000)
        return _stacked(evaluation, workdir / f"{name}-eval.npz"), _stacked(calibration, workdir / f"{name}-calib.npz")

    return make


def _judge_outputs(candidate: Path, fp32: Path, data: Path) -> dict[str, float]:
    from models.evaluate import output_error

    feeds = list(make_feeds(to_proto(load(fp32)), data, batch_size=1))
    return {"output_cosine": output_error(candidate, fp32, feeds).cosine}


def _judge_minilm(candidate: Path, fp32: Path, data: Path) -> dict[str, float]:
    from models.evaluate import minilm_cosine

    result = minilm_cosine(candidate)
    return {"mean_cosine": result["mean_cosine"], "min_cosine": result["min_cosine"]}


def _judge_digits(candidate: Path, fp32: Path, data: Path) -> dict[str, float]:
    from models.digits import top1_accuracy

    return {"accuracy": top1_accuracy(candidate)}




SPECS = {
    "minilm": ModelSpec(_cached("minilm_pooled"), _minilm_data, _judge_minilm),
    "bert": ModelSpec(_cached("bert"), _sample_data("bert"), _judge_outputs),
    "gpt2": ModelSpec(_cached("gpt2"), _sample_data("gpt2"), _judge_outputs),
    "digits": ModelSpec(_digits_model, _digits_data, _judge_digits),
    "resnet18": ModelSpec(_cached("resnet18"), _sample_data("resnet18"), _judge_outputs),
    "resnet50": ModelSpec(_cached("resnet50"), _sample_data("resnet50"), _judge_outputs),
    "mobilenetv2": ModelSpec(_cached("mobilenetv2"), _sample_data("mobilenetv2"), _judge_outputs),
}


def make_variant(source: Path, target: Path, options: dict[str, Any], calib: Path | None) -> tuple[float, dict]:
    """Run the pass through the Python API; returns (seconds, pass stats)."""
    model = load(source)
    data = make_feeds(to_proto(model), calib, batch_size=CALIB_BATCH) if calib is not None else None
    started = time.perf_counter()
    result = WeightOnly(WeightOnly.make_options(options)).run(model, PassContext(data=data))
    seconds = time.perf_counter() - started
    save(model, target)
    return seconds, result.stats


def measure_model(name: str, size: str, variants: list[str], workdir: Path, runs: int) -> list[Row]:
    spec = SPECS[name]
    fp32 = spec.source(size)
    evaluation, calibration = spec.data(size, workdir)
    fp32_bytes = model_file_bytes(fp32)
    rows = [Row(name, "fp32", fp32_bytes, 1.0, spec.judge(fp32, fp32, evaluation), 0.0)]
    paths = [fp32]
    for label in variants:
        options, calibrated = VARIANTS[label]
        if name in CNN_MODELS and options.get("format") == "matmulnbits" and options.get("scheme", "int4") == "int4":
            continue  # identical to the dq rows: Conv kernels always use DequantizeLinear
        target = workdir / f"{name}-{label.replace(' ', '_')}.onnx"
        logger.info("%s: %s", name, label)
        seconds, stats = make_variant(fp32, target, options, calibration if calibrated else None)
        size_bytes = model_file_bytes(target)
        rows.append(Row(name, label, size_bytes, size_bytes / fp32_bytes, spec.judge(target, fp32, evaluation),
                        seconds, stats={k: v for k, v in stats.items() if k != "skipped"}))
        paths.append(target)
    config = BenchConfig(data=str(evaluation), batch_size=spec.batch_size, warmup_runs=3, timed_runs=runs,
                         measure_memory=False)
    report = benchmark([str(path) for path in paths], config)
    for row, result in zip(rows, report.models, strict=True):
        row.latency_ratio = result.ratio_to_first["latency_p50"]
        row.latency_p50_ms = result.latency.p50_ms
    return rows


def markdown(rows: list[Row], header: dict[str, Any]) -> str:
    lines = [
        "# Weight-only low-bit variants",
        "",
        f"{header['date']} · {header['machine'].get('processor', '')} × {header['machine'].get('cpu_count', '')}"
        f" · onnxruntime {header['machine'].get('onnxruntime', '')}",
        f"latency: p50 of {header['runs']} interleaved runs, batch 1, graph optimizations on",
        "",
        "| model | variant | file MiB | file ratio | fidelity | latency ms | latency ratio | pass s |",
        "|---|---|---:|---:|---|---:|---:|---:|",
    ]
    for row in rows:
        fidelity = ", ".join(f"{key} {value:.4f}" for key, value in row.fidelity.items())
        latency = f"{row.latency_p50_ms:.2f}" if row.latency_p50_ms is not None else "–"
        ratio = f"{row.latency_ratio:.2f}" if row.latency_ratio is not None else "–"
        lines.append(f"| {row.model} | {row.variant} | {row.file_bytes / 2**20:.1f} | {row.file_ratio:.3f} | "
                     f"{fidelity} | {latency} | {ratio} | {row.pass_seconds:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS))
    parser.add_argument("--size", default="base", help="size of the random-weight models (tiny, small, base)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated labels of VARIANTS")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "bench" / "results")
    parser.add_argument("--keep", type=Path, help="folder to keep the variant models in")
    arguments = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    arguments.out.mkdir(parents=True, exist_ok=True)
    variants = [label.strip() for label in arguments.variants.split(",") if label.strip()]
    unknown = [label for label in variants if label not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {', '.join(unknown)} (known: {', '.join(VARIANTS)})")
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="onnxopt-weight-only-") as scratch:
        workdir = arguments.keep or Path(scratch)
        workdir.mkdir(parents=True, exist_ok=True)
        for name in [item.strip() for item in arguments.models.split(",") if item.strip()]:
            rows.extend(measure_model(name, arguments.size, variants, workdir, arguments.runs))
            header = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "machine": machine_info("cpu"),
                      "runs": arguments.runs, "size": arguments.size}
            (arguments.out / "weight_only.md").write_text(markdown(rows, header))
            (arguments.out / "weight_only.json").write_text(
                json.dumps({"header": header, "rows": [asdict(row) for row in rows]}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
