"""End to end: ResNet-18, the 1-D long-kernel audio model and the 31x31 depthwise block, with and without fast-conv.

For each model: the baseline is the model after onnxopt's exact cleanup and Conv+BN fusion; the
candidate is the same plus ``fast-conv`` (measure mode, the thread count below). Both are timed side by
side in one run (interleaved rounds, onnxruntime CPU, graph optimizations on), their outputs compared on
sample inputs, and the optimized file is run once more in a plain onnxruntime session without onnxopt's
kernels (portability: the function bodies must give the baseline's outputs within 1e-5 relative).

Run ``python -m bench.fastconv_models [--threads 2] [--rounds 21] [--only resnet18]``; writes
``bench/results/fastconv_models.{md,json}`` and the optimized models to ``bench/out/``.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from bench.fastconv_common import header, markdown_table, write_results
from models import audio_conv, large_kernel, resnet
from models.cache import cached_model
from onnxopt.model_io import load, save
from onnxopt.pass_manager import PassManager
from onnxopt.passes import get_pass
from onnxopt.passes.fastconv.timing import TimingConfig, make_session, time_variants
from onnxopt.runtime import create_session, run_session

logger = logging.getLogger(__name__)
OUT = Path(__file__).resolve().parent / "out"
CLEANUP = ["eliminate-identity", "fold-constants", "fuse-conv-bn", "eliminate-dead"]
# model name, size, sample inputs (batch of 1 for timing, many for fidelity), target speed-up
MODELS = {
    "resnet18": ("base", lambda n, seed: resnet.sample_inputs("base", n, seed), 1.25),
    "audio_conv": ("base", lambda n, seed: audio_conv.sample_inputs("base", n, seed), 2.0),
    "large_kernel": ("base", lambda n, seed: large_kernel.sample_inputs("base", n, seed), 1.3),
}


def _passes(names: list[str], fast_conv: dict | None) -> list:
    instances = [get_pass(name)() for name in names]
    if fast_conv is not None:
        cls = get_pass("fast-conv")
        instances.append(cls(cls.make_options(fast_conv)))
    return instances


def source_path(name: str, size: str) -> Path:
    """ResNet-18 from the shared model cache; the fastconv sample models built into bench/out."""
    if name == "resnet18":
        return cached_model(name, size)
    module = {"audio_conv": audio_conv, "large_kernel": large_kernel}[name]
    OUT.mkdir(parents=True, exist_ok=True)
    return module.build(OUT / f"{name}-{size}.onnx", size=size)


def optimize(name: str, size: str, threads: int) -> tuple[Path, Path, dict]:
    source = load(source_path(name, size))
    baseline, _ = PassManager(_passes(CLEANUP, None)).run(source.copy())
    fast, report = PassManager(_passes(CLEANUP, {"threads": threads})).run(source.copy())
    OUT.mkdir(parents=True, exist_ok=True)
    base_path, fast_path = OUT / f"{name}-{size}-baseline.onnx", OUT / f"{name}-{size}-fastconv.onnx"
    save(baseline, base_path)
    save(fast, fast_path)
    record = [r for r in report.records if r.name == "fast-conv"][-1]
    return base_path, fast_path, record.stats


def fidelity(base_path: Path, fast_path: Path, inputs) -> dict:
    base = create_session(base_path, optimize=True)
    fast = create_session(fast_path, optimize=True)
    portable = create_session(fast_path, optimize=True, use_kernels=False)
    worst, portable_worst, agree, total = 0.0, 0.0, 0, 0
    for seed in range(4):
        feed = inputs(8, 100 + seed)
        expected = next(iter(run_session(base, feed).values())).astype(np.float64)
        actual = next(iter(run_session(fast, feed).values()))
        without = next(iter(run_session(portable, feed).values()))
        scale = float(np.max(np.abs(expected)))
        worst = max(worst, float(np.max(np.abs(actual - expected))) / scale)
        portable_worst = max(portable_worst, float(np.max(np.abs(without - expected))) / scale)
        if expected.ndim == 2:  # logits: top-1 agreement
            agree += int(np.sum(np.argmax(actual, axis=1) == np.argmax(expected, axis=1)))
            total += expected.shape[0]
    return {"rel_error": worst, "portable_rel_error": portable_worst,
            "top1_agreement": (agree / total) if total else None, "samples": 32}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--only", default="")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    results, rows, layer_rows = [], [], []
    for name, (size, inputs, target) in MODELS.items():
        if args.only and args.only != name:
            continue
        base_path, fast_path, stats = optimize(name, size, args.threads)
        config = TimingConfig(threads=args.threads, rounds=args.rounds, min_round_seconds=0.05)
        sessions = {"baseline": make_session_from(base_path, config),
                    "fast-conv": make_session_from(fast_path, config)}
        times = time_variants(sessions, inputs(1, 0), config)
        quality = fidelity(base_path, fast_path, inputs)
        base, fast = times["baseline"], times["fast-conv"]
        speedup_median, speedup_best = 1 / fast.median_ratio, 1 / fast.best_ratio
        results.append({"model": name, "size": size, "times": {k: v.as_dict() for k, v in times.items()},
                        "fidelity": quality, "fast_conv": stats})
        top1 = "" if quality["top1_agreement"] is None else f", top-1 agreement {quality['top1_agreement']:.0%}"
        rows.append([f"{name} ({size})", f"{base.median_ms:.2f} / {base.best_ms:.2f}",
                     f"{fast.median_ms:.2f} / {fast.best_ms:.2f}", f"**{speedup_median:.2f}x** / {speedup_best:.2f}x",
                     f">= {target}x: {'met' if min(speedup_median, speedup_best) >= target else 'NOT met'}",
                     f"{quality['rel_error']:.1e}{top1}", f"{quality['portable_rel_error']:.1e}",
                     ", ".join(f"{k} x{v}" for k, v in stats["by_algorithm"].items()) or "none"])
        for decision in stats["decisions"]:
            if "shape" not in decision:
                continue
            chosen = decision["decision"]
            measured = {k: v for k, v in decision["candidates"].items() if v.get("eligible") and "speedup" in v}
            layer_rows.append([name, decision["node"], decision["fused"], decision["shape"]["input"],
                               decision["shape"]["weight"], decision.get("baseline_ms", ""),
                               ", ".join(f"{k} {v['speedup']:.2f}x ({v['rel_error']:.0e})"
                                         for k, v in measured.items()), chosen])
        logger.info("%s: %.2fx (median) %.2fx (best)", name, speedup_median, speedup_best)
    text = "# fast-conv end to end\n\n" + header(
        "python -m bench.fastconv_models" + (f" --only {args.only}" if args.only else ""),
        f"onnxruntime CPU, {args.threads} threads, graph optimizations on, {args.rounds} interleaved rounds "
        "(>= 50 ms per variant per round), idle workers not spinning. Baseline = onnxopt cleanup + Conv/BN "
        "fusion; fast-conv = the same + `fast-conv` (measure mode, same threads). Speed-up = median of "
        "per-round ratios / ratio of best rounds. Errors are max |y - y_baseline| / max |y_baseline| over 32 "
        "samples; 'without kernels' runs the optimized file in onnxruntime without onnxopt's library "
        "(function bodies inlined).") + "\n"
    text += markdown_table(["model", "baseline ms (median / best)", "fast-conv ms (median / best)",
                            "speed-up (median / best)", "target", "output rel. error (with kernels)",
                            "rel. error without kernels", "replaced"], rows)
    text += "\nPer convolution (the pass's own measurements, `stats['decisions']`):\n\n" + markdown_table(
        ["model", "node", "fused", "input", "weight", "onnxruntime ms", "candidates: speed-up (rel. error)",
         "decision"], layer_rows)
    print(text)
    if not args.no_write:
        write_results("fastconv_models", text, {"threads": args.threads, "rounds": args.rounds, "models": results})


def make_session_from(path: Path, config: TimingConfig):
    import onnx

    return make_session(onnx.load(str(path)), config)


if __name__ == "__main__":
    main()
