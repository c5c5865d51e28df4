"""Error bounds of the fast algorithms against float64, per Winograd tile size and for FFT.

Every algorithm runs the same layers (random He-normal weights, standard-normal inputs, 'same' padding)
in onnxruntime with onnxopt's kernels, under each instruction set this CPU supports (FMA changes the
rounding), and is compared with the convolution computed in float64. Reported: relative max error
max |y - y64| / max |y64| and relative RMS error, worst over shapes and seeds, next to onnxruntime's own
float32 Conv on the same layers.

Run ``python -m bench.fastconv_errors``; writes ``bench/results/fastconv_errors.{md,json}``.
"""

from __future__ import annotations

import argparse
import logging
import os

import numpy as np

from bench.fastconv_common import header, markdown_table, write_results
from bench.fastconv_layers import synthetic_pattern
from onnxopt import kernels
from onnxopt.passes.fastconv.accuracy import reference_output, relative_error
from onnxopt.passes.fastconv.islands import candidate_island, island_feed, original_island
from onnxopt.passes.fastconv.timing import TimingConfig, make_session
from onnxopt.runtime import run_session

logger = logging.getLogger(__name__)

WINOGRAD_SHAPES = [(64, 56), (128, 28), (256, 14), (512, 7), (32, 20), (16, 9)]  # channels, image size
FFT_SHAPES = [((1, 16, 16000), (16, 16, 255), 1), ((1, 1, 16000), (16, 1, 255), 1), ((1, 16, 16000), (16, 16, 63), 1),
              ((1, 64, 56, 56), (64, 1, 31, 31), 64), ((1, 32, 28, 28), (32, 32, 9, 9), 1)]
SEEDS = (0, 1)


def rms_error(output: np.ndarray, reference: np.ndarray) -> float:
    return float(np.sqrt(np.mean((output.astype(np.float64) - reference) ** 2)) / np.sqrt(np.mean(reference**2)))


def cases() -> list[tuple[str, tuple, tuple, int]]:
    found = []
    for algorithm in ("winograd2", "winograd4", "winograd6"):
        for channels, size in WINOGRAD_SHAPES:
            found.append((algorithm, (1, channels, size, size), (channels, channels, 3, 3), 1))
    found += [("fft", x, w, g) for x, w, g in FFT_SHAPES]
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    config = TimingConfig(threads=2)
    measurements = []
    for isa in kernels.supported_isas():
        os.environ["ONNXOPT_KERNELS_ISA"] = isa  # read by the library when the sessions create their kernels
        for algorithm, x_shape, w_shape, group in cases():
            for seed in SEEDS:
                pattern = synthetic_pattern(x_shape, w_shape, group, seed=seed)
                feed = island_feed(pattern, seed=seed)
                reference = reference_output(pattern, feed)
                fast = run_session(make_session(candidate_island(pattern, algorithm), config), feed)["y"]
                entry = {"isa": isa, "algorithm": algorithm, "input": list(x_shape), "weight": list(w_shape),
                         "seed": seed, "rel_max": relative_error(fast, reference),
                         "rel_rms": rms_error(fast, reference)}
                if isa == kernels.supported_isas()[0]:
                    base = run_session(make_session(original_island(pattern), config), feed)["y"]
                    entry.update(ort_rel_max=relative_error(base, reference), ort_rel_rms=rms_error(base, reference))
                measurements.append(entry)
        logger.info("%s done", isa)
    os.environ.pop("ONNXOPT_KERNELS_ISA", None)
    rows = []
    for algorithm in ("winograd2", "winograd4", "winograd6", "fft"):
        mine = [m for m in measurements if m["algorithm"] == algorithm]
        ort_side = [m for m in mine if "ort_rel_max" in m]
        per_isa = ", ".join(f"{isa} {max(m['rel_max'] for m in mine if m['isa'] == isa):.1e}"
                            for isa in kernels.supported_isas())
        rows.append([algorithm, f"{max(m['rel_max'] for m in mine):.2e}",
                     f"{np.median([m['rel_max'] for m in mine]):.2e}", f"{max(m['rel_rms'] for m in mine):.2e}",
                     per_isa, f"{max(m['ort_rel_max'] for m in ort_side):.2e}",
                     f"{max(m['ort_rel_rms'] for m in ort_side):.2e}"])
    detail = []
    for m in measurements:
        if m["isa"] == kernels.supported_isas()[0]:
            detail.append([m["algorithm"], m["input"], m["weight"], m["seed"], f"{m['rel_max']:.2e}",
                           f"{m['ort_rel_max']:.2e}"])
    text = "# fast-conv error bounds against float64\n\n" + header(
        "python -m bench.fastconv_errors",
        "Layers: Winograd on 3x3 convolutions with C = K in {16..512} at ResNet image sizes; FFT on 1-D "
        "255/63-tap and 2-D 31x31 depthwise / 9x9 dense layers; two seeds each; Conv + ReLU. Relative max "
        "error = max |y - y64| / max |y64|; relative RMS = ||y - y64|| / ||y64||.") + "\n"
    text += markdown_table(["algorithm", "worst rel. max error", "median rel. max error", "worst rel. RMS error",
                            "worst rel. max per ISA", "onnxruntime Conv worst rel. max", "onnxruntime worst rel. RMS"],
                           rows)
    text += "\nPer layer (best ISA):\n\n" + markdown_table(
        ["algorithm", "input", "weight", "seed", "rel. max error", "onnxruntime rel. max error"], detail)
    print(text)
    if not args.no_write:
        write_results("fastconv_errors", text, {"measurements": measurements})


if __name__ == "__main__":
    main()
