"""Per-layer speed of onnxopt's Winograd/FFT kernels against onnxruntime's own Conv, side by side.

For each shape (ResNet stages 56/28/14/7, long 1-D kernels on one second of 16 kHz audio, large 2-D
depthwise kernels) this times onnxruntime's Conv (+ReLU, fused by onnxruntime's optimizer) and every
applicable onnxopt candidate in the same rounds, interleaved (``passes/fastconv/timing.py``), with 2
threads, and measures every variant's error against a float64 reference.

Run ``python -m bench.fastconv_layers [--rounds 15] [--threads 2] [--only 56x56]``; writes
``bench/results/fastconv_layers.{md,json}``.
"""

from __future__ import annotations

import argparse
import logging

import numpy as np

from bench.fastconv_common import header, markdown_table, write_results
from onnxopt.passes.fastconv.accuracy import reference_output, relative_error
from onnxopt.passes.fastconv.islands import candidate_island, island_feed, original_island
from onnxopt.passes.fastconv.match import ConvPattern
from onnxopt.passes.fastconv.timing import TimingConfig, make_sessions, time_variants
from onnxopt.runtime import run_session

logger = logging.getLogger(__name__)

# name, input shape, weight shape, group, candidates
SHAPES = [
    ("ResNet 3x3, 64ch 56x56", (1, 64, 56, 56), (64, 64, 3, 3), 1, ["winograd2", "winograd4", "winograd6"]),
    ("ResNet 3x3, 128ch 28x28", (1, 128, 28, 28), (128, 128, 3, 3), 1, ["winograd2", "winograd4", "winograd6"]),
    ("ResNet 3x3, 256ch 14x14", (1, 256, 14, 14), (256, 256, 3, 3), 1, ["winograd2", "winograd4", "winograd6"]),
    ("ResNet 3x3, 512ch 7x7", (1, 512, 7, 7), (512, 512, 3, 3), 1, ["winograd2", "winograd4", "winograd6"]),
    ("3x3, 32ch 56x56", (1, 32, 56, 56), (32, 32, 3, 3), 1, ["winograd2", "winograd4", "winograd6"]),
    ("1-D 255 taps, 1->16ch, 16000", (1, 1, 16000), (16, 1, 255), 1, ["fft"]),
    ("1-D 255 taps, 16ch, 16000", (1, 16, 16000), (16, 16, 255), 1, ["fft"]),
    ("1-D 127 taps, 16ch, 16000", (1, 16, 16000), (16, 16, 127), 1, ["fft"]),
    ("1-D 63 taps, 16ch, 16000", (1, 16, 16000), (16, 16, 63), 1, ["fft"]),
    ("1-D 31 taps, 16ch, 16000", (1, 16, 16000), (16, 16, 31), 1, ["fft"]),
    ("2-D dw 31x31, 64ch 56x56", (1, 64, 56, 56), (64, 1, 31, 31), 64, ["fft"]),
    ("2-D dw 13x13, 64ch 56x56", (1, 64, 56, 56), (64, 1, 13, 13), 64, ["fft"]),
    ("2-D dw 7x7, 64ch 56x56", (1, 64, 56, 56), (64, 1, 7, 7), 64, ["fft"]),
    ("2-D 9x9, 32ch 56x56", (1, 32, 56, 56), (32, 32, 9, 9), 1, ["fft"]),
]


def synthetic_pattern(x_shape: tuple, w_shape: tuple, group: int, seed: int = 0) -> ConvPattern:
    """A Conv+ReLU pattern with "same" padding and He-normal weights."""
    rng = np.random.default_rng(seed)
    weight = (rng.standard_normal(w_shape) * np.sqrt(2.0 / np.prod(w_shape[1:]))).astype(np.float32)
    bias = (rng.standard_normal(w_shape[0]) * 0.1).astype(np.float32)
    kernel = w_shape[2:]
    pads = [k // 2 for k in kernel] * 2
    return ConvPattern(conv=None, add=None, residual=None, activation_node=None, activation="Relu", clip=None,
                       output=None, x_shape=tuple(x_shape), out_shape=(x_shape[0], w_shape[0], *x_shape[2:]),
                       weight=weight, bias=bias, pads=pads, group=group)


def measure(name: str, pattern: ConvPattern, candidates: list[str], config: TimingConfig) -> dict:
    models = {"onnxruntime": original_island(pattern)}
    models.update({c: candidate_island(pattern, c) for c in candidates})
    sessions = make_sessions(models, config)
    feed = island_feed(pattern)
    reference = reference_output(pattern, feed)
    errors = {n: relative_error(run_session(s, feed)["y"], reference) for n, s in sessions.items()}
    times = time_variants(sessions, feed, config)
    return {"name": name, "input": list(pattern.x_shape), "weight": list(pattern.weight.shape),
            "times": {n: t.as_dict() for n, t in times.items()}, "errors": errors}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", default="", help="substring of the shape names to run")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    config = TimingConfig(threads=args.threads, rounds=args.rounds, min_round_seconds=0.03)
    results = []
    rows = []
    for name, x_shape, w_shape, group, candidates in SHAPES:
        if args.only and args.only not in name:
            continue
        result = measure(name, synthetic_pattern(x_shape, w_shape, group), candidates, config)
        results.append(result)
        base = result["times"]["onnxruntime"]
        for candidate in candidates:
            t = result["times"][candidate]
            rows.append([name, f"{base['median_ms']:.3f} / {base['best_ms']:.3f}", candidate,
                         f"{t['median_ms']:.3f} / {t['best_ms']:.3f}",
                         f"**{1 / t['median_ratio']:.2f}x** / {1 / t['best_ratio']:.2f}x",
                         f"{result['errors'][candidate]:.1e}", f"{result['errors']['onnxruntime']:.1e}"])
        logger.info("%s: %s", name, {c: round(1 / result["times"][c]["median_ratio"], 2) for c in candidates})
    text = "# fast-conv kernels per layer\n\n" + header(
        "python -m bench.fastconv_layers" + (f" --only '{args.only}'" if args.only else ""),
        f"onnxruntime CPU, {args.threads} threads, graph optimizations on (its Conv+ReLU fused, NCHWc), "
        f"{args.rounds} interleaved rounds of >= 30 ms per variant, idle workers not spinning (see timing.py). "
        "Conv + ReLU, 'same' padding, batch 1. Speed-up = onnxruntime time / kernel time: median of the "
        "per-round ratios / ratio of the best rounds. Error: max |y - y64| / max |y64| against float64.") + "\n"
    text += markdown_table(["shape", "onnxruntime ms (median / best)", "kernel", "kernel ms (median / best)",
                            "speed-up (median / best)", "kernel rel. error", "onnxruntime rel. error"], rows)
    print(text)
    if not args.no_write:
        write_results("fastconv_layers", text, {"threads": args.threads, "rounds": args.rounds, "layers": results})


if __name__ == "__main__":
    main()
