"""Pruning side by side: each pruned variant against its unpruned original, fidelity and speed in one run.

For each model the variants are made with the real CLI (``onnxopt optimize --passes …
--calib DATA``, one measured subprocess each: wall time and peak RSS), judged as
``bench.compare`` judges (MiniLM: sentence-embedding cosine to the PyTorch reference on the
48 held-out sentences, calibration on the 64 shipped ones; digits: held-out accuracy;
others: output cosine vs the original on seeded inputs not used for calibration), and
timed round-robin with the original in the same rounds (``onnxopt.paired_timing``:
onnxruntime CPU, its graph optimizations on, one thread) at the batch the issue names.
Recovery and no recovery (``reconstruct=false``) are both made where the comparison
matters. For sparsified models the 2:4 report of ``onnxopt check --target tensorrt``
(``onnxopt.target_rules.structured_sparsity``) is counted.

    python -m bench.pruning                              # every model, the Must-show sizes
    python -m bench.pruning --models digits,minilm --rounds 9

Writes ``bench/results/pruning.md`` and ``pruning.json``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import datetime
import json
import logging
import os
import platform
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort

from bench.compare import SPECS, ModelSpec, judge_against_fp32
from bench.measure import run_measured
from onnxopt.cpu_features import host_cpu
from onnxopt.data import make_feeds
from onnxopt.model_io import load, read_proto
from onnxopt.paired_timing import relative_times
from onnxopt.runtime import create_session
from onnxopt.target_rules import structured_sparsity

logger = logging.getLogger("bench.pruning")
PROJECT_ROOT = Path(__file__).resolve().parents[1]
RESULTS = PROJECT_ROOT / "bench" / "results"
OPTIMIZE_TIMEOUT_S = 3 * 3600
NO_LATENCY = "measure_latency=false"
# Units chosen by optimal brain surgeon on the full least-squares refit (on MiniLM's FFNs its held-out layer
# error after the refit is 1-10 % lower than with the per-unit-scale OBS of importance=error).
OBS = "importance=obs"


@dataclass(frozen=True)
class Variant:
    """One pruned variant: a label and the pass list handed to ``onnxopt optimize``."""

    label: str
    passes: str
    overrides: tuple[str, ...] = ()


@dataclass(frozen=True)
class Plan:
    """What the benchmark does with one model."""

    model: str
    size: str
    variants: tuple[Variant, ...]
    latency_batch: int
    calib_batch: int = 8
    # Makes the calibration DATA in the given folder instead of the model's shared one (bench.compare).
    calibration: Callable[[Path], Path] | None = None


def _neurons(ratio: float, extra: str = "") -> str:
    return f"prune-neurons:ratio={ratio}:round_to=16:{NO_LATENCY}" + (f":{extra}" if extra else "")


def _heads(count: int, extra: str = "") -> str:
    return f"prune-heads:count={count}:{NO_LATENCY}" + (f":{extra}" if extra else "")


def _minilm_calibration(folder: Path) -> Path:
    """The 64 shipped calibration sentences and the 627 extra ones (about 8,700 tokens; none held out)."""
    from models.minilm_calibration import extended_calibration

    return extended_calibration(folder / "calib.npz")


PLANS: dict[str, Plan] = {
    "minilm": Plan("minilm", "base", (
        Variant("30% FFN neurons, recovery", _neurons(0.3, OBS)),
        Variant("30% FFN neurons, no recovery", _neurons(0.3, f"{OBS}:reconstruct=false")),
        Variant("30% FFN neurons (global allocation), recovery",
                _neurons(0.3, f"{OBS}:scope=global:error_metric=cosine")),
        Variant("50% FFN + 4/12 heads, recovery", f"{_heads(4, OBS)},{_neurons(0.5, OBS)}"),
        Variant("50% FFN + 4/12 heads, no recovery",
                f"{_heads(4, f'{OBS}:reconstruct=false')},{_neurons(0.5, f'{OBS}:reconstruct=false')}"),
        Variant("1 of 6 layers dropped", f"prune-layers:count=1:{NO_LATENCY}"),
    ), latency_batch=8, calib_batch=16, calibration=_minilm_calibration),
    "bert": Plan("bert", "base", (
        Variant("50% FFN + 4/12 heads, recovery",
                f"{_heads(4, 'refit_scope=consumers')},{_neurons(0.5, 'refit_scope=consumers')}"),
        Variant("50% FFN + 4/12 heads, no recovery",
                f"{_heads(4, 'reconstruct=false')},{_neurons(0.5, 'reconstruct=false')}"),
    ), latency_batch=8, calib_batch=4),
    "resnet50": Plan("resnet50", "base", (
        Variant("50% inner channels, recovery", _neurons(0.5, "refit_scope=consumers")),
        Variant("50% inner channels, no recovery", _neurons(0.5, "reconstruct=false")),
    ), latency_batch=8, calib_batch=4),
    "digits": Plan("digits", "base", (
        Variant("50% channels, recovery", f"prune-neurons:ratio=0.5:{NO_LATENCY}"),
        Variant("50% channels, no recovery", f"prune-neurons:ratio=0.5:reconstruct=false:{NO_LATENCY}"),
    ), latency_batch=16, calib_batch=16),
    "gpt2": Plan("gpt2", "base", (
        Variant("1 of 12 blocks dropped", f"prune-layers:count=1:{NO_LATENCY}"),
        Variant("2:4 sparsity, SparseGPT", "sparsify", ("sparsify.pattern=2:4", "sparsify.method=sparsegpt")),
        Variant("2:4 sparsity, magnitude", "sparsify", ("sparsify.pattern=2:4", "sparsify.method=magnitude")),
    ), latency_batch=1, calib_batch=1),
}


@dataclass
class Row:
    """One measured variant (or the original)."""

    model: str
    variant: str
    size: str = ""
    passes: str = ""
    status: str = "ok"
    note: str = ""
    file_bytes: int | None = None
    parameters: int | None = None
    optimize_wall_s: float | None = None
    optimize_peak_rss_bytes: int | None = None
    latency_ms: float | None = None
    speedup: float | None = None
    fidelity: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    pruning: dict = field(default_factory=dict)


def _parameters(path: Path) -> int:
    return int(sum(np.prod(init.dims) for init in read_proto(path).graph.initializer))


def _pass_summary(report: Path) -> dict:
    """The pruning passes' counters from the optimize report (decisions summarised, not copied)."""
    if not report.exists():
        return {}
    summary = {}
    for record in json.loads(report.read_text())["passes"]:
        if not record["name"].startswith(("prune", "sparsify")):
            continue
        stats = dict(record["stats"])
        decisions = stats.pop("decisions", [])
        stats.pop("allocation", None)
        chosen = [d for d in decisions if d.get("decision") in ("pruned", "removed", "sparsified")]
        errors = [(d.get("error_before_recovery"), d.get("error_after_recovery")) for d in chosen]
        errors = [pair for pair in errors if None not in pair]
        stats["status"] = record["status"]
        stats["chosen"] = len(chosen)
        stats["refitted_layers"] = sum(1 for d in decisions if d.get("decision") == "refitted")
        if errors:
            stats["mean_layer_error_before_recovery"] = float(np.mean([before for before, _ in errors]))
            stats["mean_layer_error_after_recovery"] = float(np.mean([after for _, after in errors]))
        summary[record["name"]] = stats
    return summary


def make_variant(source: Path, target: Path, variant: Variant, calib: Path, calib_batch: int) -> tuple[Row, Path]:
    report = target.with_suffix(".json")
    command = [sys.executable, "-m", "onnxopt.cli", "optimize", str(source), "-o", str(target), "--passes",
               variant.passes, "--calib", str(calib), "--batch-size", str(calib_batch), "--report", str(report)]
    for override in variant.overrides:
        command += ["-O", override]
    measured = run_measured(command, timeout_s=OPTIMIZE_TIMEOUT_S, cwd=PROJECT_ROOT)
    row = Row("", variant.label, passes=variant.passes + "".join(f" -O {o}" for o in variant.overrides),
              optimize_wall_s=round(measured.wall_s, 1), optimize_peak_rss_bytes=measured.peak_rss_bytes)
    if measured.returncode != 0 or not target.exists():
        row.status, row.note = "failed", measured.last_error_line()[:300]
        return row, target
    row.file_bytes = target.stat().st_size
    row.parameters = _parameters(target)
    row.pruning = _pass_summary(report)
    return row, target


def _judge(spec: ModelSpec, candidate: ort.InferenceSession, original: ort.InferenceSession,
           feeds: list[dict[str, np.ndarray]]):
    if spec.name in ("gpt2",):
        judged = judge_against_fp32(candidate, original, feeds)
        agreement = _next_token_agreement(candidate, original, feeds)
        judged.metrics["top1_agreement_vs_dense"] = agreement
        judged.headline += f", next-token top-1 agreement {agreement:.3f}"
        return judged
    return spec.judge(candidate, original, feeds)


def _next_token_agreement(candidate: ort.InferenceSession, original: ort.InferenceSession,
                          feeds: list[dict[str, np.ndarray]]) -> float:
    same = total = 0
    for feed in feeds:
        a = candidate.run(["logits"], feed)[0].argmax(-1)
        b = original.run(["logits"], feed)[0].argmax(-1)
        mask = feed["attention_mask"].astype(bool)
        same += int((a == b)[mask].sum())
        total += int(mask.sum())
    return same / max(total, 1)


def _latency_feed(spec: ModelSpec, plan: Plan, source: Path, eval_data: Path) -> dict[str, np.ndarray]:
    proto = read_proto(source)
    if plan.model in ("bert", "gpt2", "resnet50"):
        from models.evaluate import sample_feeds

        return sample_feeds(plan.model, plan.size, batch_size=plan.latency_batch, count=1, seed=7)[0]
    return next(iter(make_feeds(proto, eval_data, plan.latency_batch)))


def measure_model(plan: Plan, workdir: Path, rounds: int, jobs: int = 1) -> list[Row]:
    """The original and each variant of ``plan``; ``jobs`` variants are made at once (their times then overlap)."""
    spec = SPECS[plan.model]
    folder = workdir / plan.model
    folder.mkdir(parents=True, exist_ok=True)
    source = spec.source(plan.size)
    eval_data, calib = spec.data(plan.size, folder)
    if plan.calibration is not None:
        calib = plan.calibration(folder)
    eval_feeds = list(make_feeds(read_proto(source), eval_data, spec.eval_batch))
    original = create_session(source)
    rows = [Row(plan.model, "original (unpruned)", size=plan.size, file_bytes=source.stat().st_size,
                parameters=_parameters(source), speedup=1.0)]
    reference = _judge(spec, original, original, eval_feeds)
    rows[0].fidelity, rows[0].metrics = reference.headline, reference.metrics
    made: list[tuple[Row, Path]] = []

    def make(index: int) -> tuple[Row, Path]:
        logger.info("%s: %s", plan.model, plan.variants[index].label)
        return make_variant(source, folder / f"variant{index}.onnx", plan.variants[index], calib, plan.calib_batch)

    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        outcomes = list(pool.map(make, range(len(plan.variants))))
    for variant, (row, target) in zip(plan.variants, outcomes, strict=True):
        row.model = plan.model
        if row.status == "ok":
            judged = _judge(spec, create_session(target), original, eval_feeds)
            row.fidelity, row.metrics = judged.headline, judged.metrics
            if "sparsify" in variant.passes:
                entries = structured_sparsity(target)
                satisfied = sum(entry.satisfies for entry in entries)
                row.metrics["weights_satisfying_2_4"] = satisfied
                row.metrics["weights_checked_2_4"] = len(entries)
                row.note = f"check --target tensorrt: {satisfied} of {len(entries)} weights satisfy 2:4; " \
                           "onnxruntime runs them dense"
            made.append((row, target))
        rows.append(row)
    if made:
        feed = _latency_feed(spec, plan, source, eval_data)
        comparisons = relative_times(load(source), [load(path) for _, path in made], feed, threads=1, rounds=rounds)
        rows[0].latency_ms = round(comparisons[0].baseline_ms, 3)
        for (row, _), comparison in zip(made, comparisons, strict=True):
            row.latency_ms = round(comparison.candidate_ms, 3)
            row.speedup = round(1.0 / comparison.ratio, 3)
        batch = plan.latency_batch
        shape = "× seq 128" if plan.model in ("minilm", "bert", "gpt2") else ""
        rows[0].note = f"latency at batch {batch} {shape}".strip()
    return rows


def run_header(module: str, argv: list[str] | None) -> dict[str, str]:
    """What a results file says of its run: the command, when, the machine, its CPU flags, onnxruntime."""
    return {"command": f"python -m {module} " + " ".join(argv if argv is not None else sys.argv[1:]),
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
            "cpu_flags": cpu_flags(), "onnxruntime": ort.__version__}


def cpu_flags() -> str:
    flags = {"avx512_vnni", "avx512f", "avx2", "fma"} & host_cpu().flags
    return ", ".join(sorted(flags)) or "none of avx2/fma/avx512"


def _mib(count: int | None) -> str:
    return "—" if count is None else f"{count / 2**20:.1f} MiB"


def markdown(rows: list[Row], header: dict) -> str:
    lines = ["# Pruning: each variant side by side with its unpruned original", "",
             f"Command: `{header['command']}`  ", f"Date: {header['date']}  ",
             f"Machine: {header['machine']}; CPU flags: {header['cpu_flags']}; onnxruntime {header['onnxruntime']}.  ",
             "Latency: median of paired, interleaved rounds with the original (onnxruntime CPU, graph optimizations "
             "on, 1 thread); speed-up = original time / variant time. Optimize: the `onnxopt optimize` process "
             "(wall time, peak RSS" + (f"; {header['jobs']} made at once, so wall times include their contention"
                                        if header.get("jobs", 1) > 1 else "") + ").", ""]
    by_model: dict[str, list[Row]] = {}
    for row in rows:
        by_model.setdefault(row.model, []).append(row)
    for model, group in by_model.items():
        lines += [f"## {model}" + (f" ({group[0].size})" if group[0].size else ""), "", f"{group[0].note}", "",
                  "| variant | params | file | latency | speed-up | fidelity | layer error before → after recovery "
                  "| optimize | peak RSS | note |", "|---|---:|---:|---:|---:|---|---|---:|---:|---|"]
        for row in group:
            errors = []
            for name, stats in row.pruning.items():
                if "mean_layer_error_before_recovery" in stats:
                    errors.append(f"{name}: {stats['mean_layer_error_before_recovery']:.3f} → "
                                  f"{stats['mean_layer_error_after_recovery']:.3f}")
            lines.append(
                f"| {row.variant} | {row.parameters / 1e6:.2f} M | {_mib(row.file_bytes)} | "
                f"{'—' if row.latency_ms is None else f'{row.latency_ms:.1f} ms'} | "
                f"{'—' if row.speedup is None else f'{row.speedup:.2f}×'} | {row.fidelity} | "
                f"{'; '.join(errors) or '—'} | "
                f"{'—' if row.optimize_wall_s is None else f'{row.optimize_wall_s:.0f} s'} | "
                f"{_mib(row.optimize_peak_rss_bytes)} | {row.note if row is not group[0] else ''} |"
                if row.parameters is not None else f"| {row.variant} | — | — | — | — | — | — | — | — | {row.note} |")
        lines.append("")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(PLANS))
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/onnxopt-bench-pruning"))
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--size", action="append", default=[], metavar="MODEL=SIZE",
                        help="another size of a model than its plan's (e.g. resnet50=small: same topology, narrower)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="variants made at once (optimize wall times then include the contention)")
    parser.add_argument("--merge", action="store_true",
                        help="keep the rows of other models already in OUT/pruning.json (their own header line)")
    arguments = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    rows: list[Row] = []
    arguments.kept = _kept_rows(arguments) if arguments.merge else []
    sizes = dict(entry.split("=", 1) for entry in arguments.size)
    for name in arguments.models.split(","):
        plan = dataclasses.replace(PLANS[name], size=sizes.get(name, PLANS[name].size))
        rows += measure_model(plan, arguments.workdir, arguments.rounds, arguments.jobs)
        _write(rows, arguments, argv)
    return 0


def _kept_rows(arguments) -> list[Row]:
    """Rows of models this run does not measure, from an earlier run, each noting that run's command and date."""
    path = arguments.out / "pruning.json"
    if not path.exists():
        return []
    earlier = json.loads(path.read_text())
    measured = set(arguments.models.split(","))
    kept = []
    for entry in earlier["rows"]:
        if entry["model"] in measured:
            continue
        row = Row(**entry)
        if row.variant.startswith("original") and "measured " not in row.note:
            header = earlier["header"]
            row.note = (row.note + "; " if row.note else "") + f"measured {header['date']}: `{header['command']}`"
        kept.append(row)
    return kept


def _write(rows: list[Row], arguments, argv) -> None:
    rows = arguments.kept + rows
    header = {**run_header("bench.pruning", argv), "jobs": arguments.jobs}
    arguments.out.mkdir(parents=True, exist_ok=True)
    (arguments.out / "pruning.json").write_text(json.dumps({"header": header, "rows": [asdict(r) for r in rows]},
                                                           indent=2) + "\n")
    (arguments.out / "pruning.md").write_text(markdown(rows, header))


if __name__ == "__main__":
    sys.exit(main())
