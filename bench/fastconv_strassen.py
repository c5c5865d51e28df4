"""Strassen MatMul against onnxruntime's MatMul (MLAS SGEMM), side by side, to say where it wins and where not.

Variants: onnxruntime's MatMul; onnxopt's packed GEMM alone (``levels=0``: what the recursion runs on);
Strassen with one and two levels. Same interleaved timing as fast-conv (``passes/fastconv/timing.py``),
onnxruntime CPU with 2 threads; errors against float64.

Run ``python -m bench.fastconv_strassen``; writes ``bench/results/fastconv_strassen.{md,json}``.
"""

from __future__ import annotations

import argparse
import logging

import numpy as np

from bench.fastconv_common import header, markdown_table, write_results
from onnxopt.passes.fastconv.accuracy import relative_error
from onnxopt.passes.fastconv.strassen import _island
from onnxopt.passes.fastconv.timing import TimingConfig, make_sessions, time_variants
from onnxopt.runtime import run_session

logger = logging.getLogger(__name__)

SHAPES = [(512, 512, 512), (1024, 1024, 1024), (2048, 2048, 2048), (256, 4096, 4096), (4096, 1024, 1024)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    config = TimingConfig(threads=args.threads, rounds=args.rounds, min_round_seconds=0.05)
    rows, results = [], []
    rng = np.random.default_rng(0)
    for m, k, n in SHAPES:
        b = rng.standard_normal((k, n)).astype(np.float32)
        a = rng.standard_normal((1, m, k)).astype(np.float32)
        models = {"onnxruntime": _island(a.shape, b, 0), "levels0": _gemm_only_island(a.shape, b)}
        models.update({f"levels{level}": _island(a.shape, b, level) for level in (1, 2)})
        sessions = make_sessions(models, config)
        reference = a.astype(np.float64) @ b.astype(np.float64)
        errors = {name: relative_error(run_session(s, {"a": a})["y"], reference) for name, s in sessions.items()}
        times = time_variants(sessions, {"a": a}, config)
        base = times["onnxruntime"]
        results.append({"m": m, "k": k, "n": n, "times": {x: t.as_dict() for x, t in times.items()},
                        "errors": errors})
        gflops = 2.0 * m * k * n / (base.best_ms * 1e6)
        for name in ("levels0", "levels1", "levels2"):
            t = times[name]
            rows.append([f"{m}x{k} @ {k}x{n}", f"{base.median_ms:.2f} / {base.best_ms:.2f} ({gflops:.0f} GFLOP/s)",
                         {"levels0": "onnxopt GEMM (no Strassen)", "levels1": "Strassen, 1 level",
                          "levels2": "Strassen, 2 levels"}[name],
                         f"{t.median_ms:.2f} / {t.best_ms:.2f}", f"{1 / t.median_ratio:.2f}x / {1 / t.best_ratio:.2f}x",
                         f"{errors[name]:.1e}", f"{errors['onnxruntime']:.1e}"])
        logger.info("%s: %s", (m, k, n), {x: round(1 / times[x].median_ratio, 2) for x in times})
    text = "# Strassen MatMul against onnxruntime\n\n" + header(
        "python -m bench.fastconv_strassen",
        f"onnxruntime CPU, {args.threads} threads, graph optimizations on, {args.rounds} interleaved rounds. "
        "Speed-up = onnxruntime time / variant time (median of per-round ratios / best rounds); below 1: slower. "
        "Error: max |y - y64| / max |y64|.") + "\n"
    text += markdown_table(["A @ B", "onnxruntime ms (median / best)", "variant", "variant ms (median / best)",
                            "speed-up (median / best)", "rel. error", "onnxruntime rel. error"], rows)
    print(text)
    if not args.no_write:
        write_results("fastconv_strassen", text, {"threads": args.threads, "results": results})


def _gemm_only_island(a_shape: tuple, b: np.ndarray):
    """StrassenMatMul with levels=0: onnxopt's packed GEMM without recursion."""
    import onnx.helper as oh

    model = _island(a_shape, b, 1)
    for attribute in model.graph.node[0].attribute:
        if attribute.name == "levels":
            attribute.CopyFrom(oh.make_attribute("levels", 0))
    return model


if __name__ == "__main__":
    main()
