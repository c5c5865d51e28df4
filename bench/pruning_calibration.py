"""How MiniLM's pruned fidelity grows with calibration data: is the refit short of data or of method?

``prune-neurons`` (30 % of FFN neurons, ``importance=obs``, recovery on) is run through the
real CLI on nested shares of the extended MiniLM calibration sentences
(``models.minilm_calibration``, about 8,700 tokens in all, shuffled once with a fixed
seed). Each variant is judged three ways, with the same sentence-embedding cosine:

* held out: the 48 reference sentences, against the PyTorch reference (the must-show metric);
* fitted: the calibration sentences the variant was refitted on, against the original model;
* unused: the calibration sentences left out of that share, against the original model.

A large gap between "fitted" and "unused" means the least-squares refits overfit their
data; "held out" following "unused" means the held-out sentences are not special. The
trend over the shares, fitted as ``1 − cos ≈ e∞ + c / tokens``, is a rough estimate of
what unlimited data of the same kind would give the same method.

    python -m bench.pruning_calibration --jobs 2

Writes ``bench/results/pruning_calibration.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import logging
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from bench.compare import SPECS
from bench.pruning import OBS, RESULTS, Variant, _neurons, make_variant, run_header
from models.evaluate import minilm_cosine, minilm_embeddings
from models.minilm_calibration import extended_calibration
from models.sessions import session_for
from onnxopt.runtime import create_session

logger = logging.getLogger(__name__)

SHARES = (0.25, 0.5, 1.0)
VARIANT = Variant("30% FFN neurons, recovery", _neurons(0.3, OBS))
CALIB_BATCH = 16
SEED = 0


@dataclass
class ShareRow:
    """One calibration share and the fidelity of the variant refitted on it."""

    share: float
    sentences: int
    tokens: int
    status: str = "ok"
    note: str = ""
    optimize_wall_s: float | None = None
    held_out_mean: float | None = None
    held_out_min: float | None = None
    fitted_mean: float | None = None
    unused_mean: float | None = None


def _subset(arrays: dict[str, np.ndarray], rows: np.ndarray) -> dict[str, np.ndarray]:
    return {name: values[rows] for name, values in arrays.items()}


def _with_original_embeddings(arrays: dict[str, np.ndarray], original: ort.InferenceSession) -> dict[str, np.ndarray]:
    """``arrays`` plus the original model's sentence embeddings as the reference to compare with."""
    return {**arrays, "sentence_embedding": minilm_embeddings(original, arrays, batch_size=64)}


def shuffled_calibration(folder: Path) -> dict[str, np.ndarray]:
    """All extended calibration sentences in one fixed random order (shares are prefixes of it)."""
    with np.load(extended_calibration(folder / "calib_all.npz")) as archive:
        arrays = {name: archive[name] for name in archive.files}
    order = np.random.default_rng(SEED).permutation(len(arrays["input_ids"]))
    return _subset(arrays, order)


def measure(workdir: Path, jobs: int) -> list[ShareRow]:
    workdir.mkdir(parents=True, exist_ok=True)
    source = SPECS["minilm"].source("base")
    original = create_session(source)
    arrays = shuffled_calibration(workdir)
    total = len(arrays["input_ids"])

    counts = [round(total * share) for share in SHARES]

    def make(index: int) -> tuple[ShareRow, Path]:
        share, count = SHARES[index], counts[index]
        fitted = _subset(arrays, np.arange(count))
        path = workdir / f"calib_{share:.2f}.npz"
        np.savez(path, **fitted)
        row = ShareRow(share, count, int(fitted["attention_mask"].sum()))
        logger.info("share %.2f: %d sentences, %d tokens", share, count, row.tokens)
        made, target = make_variant(source, workdir / f"pruned_{share:.2f}.onnx", VARIANT, path, CALIB_BATCH)
        row.status, row.note, row.optimize_wall_s = made.status, made.note, made.optimize_wall_s
        return row, target

    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        made = list(pool.map(make, range(len(SHARES))))
    for (row, target), count in zip(made, counts, strict=True):
        if row.status == "ok":
            judge(row, target, arrays, count, original)
    return [row for row, _ in made]


def judge(row: ShareRow, target: Path, arrays: dict[str, np.ndarray], count: int,
          original: ort.InferenceSession) -> None:
    """The three cosines of one variant (variants one at a time, one session each)."""
    pruned = session_for(target)
    held_out = minilm_cosine(pruned)
    row.held_out_mean, row.held_out_min = held_out["mean_cosine"], held_out["min_cosine"]
    fitted = _subset(arrays, np.arange(count))
    row.fitted_mean = minilm_cosine(pruned, _with_original_embeddings(fitted, original))["mean_cosine"]
    if count < len(arrays["input_ids"]):
        unused = _subset(arrays, np.arange(count, len(arrays["input_ids"])))
        row.unused_mean = minilm_cosine(pruned, _with_original_embeddings(unused, original))["mean_cosine"]


def unlimited_data_estimate(rows: list[ShareRow]) -> float | None:
    """``1 − e∞`` of the least-squares fit ``1 − cos = e∞ + c / tokens`` over the held-out means."""
    points = [(row.tokens, 1.0 - row.held_out_mean) for row in rows
              if row.status == "ok" and row.held_out_mean is not None]
    if len(points) < 2:
        return None
    design = np.array([[1.0, 1.0 / tokens] for tokens, _ in points])
    errors = np.array([error for _, error in points])
    (floor, _), *_ = np.linalg.lstsq(design, errors, rcond=None)
    return float(1.0 - floor)


def _cell(value: float | None) -> str:
    return "—" if value is None else f"{value:.4f}"


def markdown(rows: list[ShareRow], header: dict, estimate: float | None) -> str:
    lines = [
        "# MiniLM pruning: fidelity against the amount of calibration data",
        "",
        f"Command: `{header['command']}`  ",
        f"Date: {header['date']}  ",
        f"Machine: {header['machine']}; CPU flags: {header['cpu_flags']}; onnxruntime {header['onnxruntime']}.  ",
        f"Variant: {VARIANT.label} (`{VARIANT.passes}`), the same for every share; shares are prefixes of "
        "one shuffled order of the extended calibration sentences. Mean sentence-embedding cosine: held out = "
        "the 48 reference sentences vs the PyTorch reference; fitted / unused = calibration sentences in / "
        "out of the share, vs the original model.",
        "",
        "| share | sentences | tokens | held out (mean) | held out (min) | fitted | unused | optimize |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        if row.status != "ok":
            lines.append(f"| {row.share:.2f} | {row.sentences} | {row.tokens} | failed: {row.note} | | | | |")
            continue
        lines.append(f"| {row.share:.2f} | {row.sentences} | {row.tokens} | {_cell(row.held_out_mean)} | "
                     f"{_cell(row.held_out_min)} | {_cell(row.fitted_mean)} | {_cell(row.unused_mean)} | "
                     f"{row.optimize_wall_s:.0f} s |")
    if estimate is not None:
        lines += ["", f"Fit `1 − cos = e∞ + c / tokens` over the held-out means: unlimited data of this kind → "
                      f"mean cosine ≈ {estimate:.4f} (a rough extrapolation from {len(rows)} points)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/onnxopt-bench-pruning-calibration"))
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--jobs", type=int, default=1, help="shares pruned at once")
    arguments = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    rows = measure(arguments.workdir, arguments.jobs)
    estimate = unlimited_data_estimate(rows)
    header = run_header("bench.pruning_calibration", argv)
    arguments.out.mkdir(parents=True, exist_ok=True)
    (arguments.out / "pruning_calibration.json").write_text(json.dumps(
        {"header": header, "rows": [asdict(row) for row in rows], "unlimited_data_estimate": estimate},
        indent=2) + "\n")
    (arguments.out / "pruning_calibration.md").write_text(markdown(rows, header, estimate))
    return 0


if __name__ == "__main__":
    sys.exit(main())
