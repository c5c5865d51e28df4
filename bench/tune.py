"""``onnxopt tune`` against every single preset, on the real MiniLM and the trained digits CNN.

For each model: ``onnxopt.tune`` with the issue's budget (MiniLM: ``--metric cosine
--max-error 0.005 --objective latency``, DATA = the 48 held-out sentences of
``tests/data/minilm_reference.npz``, calibration ``tests/data/minilm_calib.npz``; digits:
``--metric accuracy --max-error 0.005 --objective size`` on the 540 held-out images), then
every preset run on its own (``onnxopt.optimize --preset P --calib …``), all judged with the
same fidelity measurement on the same held-out DATA, and finally the original, tune's best
and every preset that met the budget timed side by side, round-robin in one process
(``onnxopt.benchmark``, onnxruntime CPU, its graph optimizations on, 1 thread), as ratios
to the original. The search's own cost (wall time, per-trial time and peak RSS) and the
trial count against the full grid come from tune's report.

    python -m bench.tune                         # both models, 24 trials each
    python -m bench.tune --models digits --trials 12

Writes ``bench/results/tune.md`` and ``tune.json``, and per model the tune report as HTML
(``tune_<model>.html``, the report package's page) and its error-vs-objective scatter with
the Pareto front ringed as a standalone SVG (``tune_<model>_scatter.svg``, for the README).
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

import onnxopt
from onnxopt.api import optimize
from onnxopt.benchmark import BenchConfig, benchmark
from onnxopt.data import make_feeds
from onnxopt.model_io import model_file_bytes, read_proto
from onnxopt.report import write_report
from onnxopt.runtime import create_session, run_session
from onnxopt.tune.hosts import hardware_label, host_tags
from onnxopt.tune.objective import labels_for, measure_fidelity
from onnxopt.tune.results import front_rows, to_markdown

logger = logging.getLogger("bench.tune")
ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
RESULTS = ROOT / "bench" / "results"
# TensorRT's preset targets another runtime; it is not a CPU contender.
PRESETS_COMPARED = ("default", "fp16", "bf16", "int8", "int4")


def _specs() -> dict[str, dict[str, Any]]:
    from models.cache import cached_model

    return {
        "minilm": {"model": lambda: cached_model("minilm_pooled"), "data": DATA / "minilm_reference.npz",
                   "calib": DATA / "minilm_calib.npz", "metric": "cosine", "max_error": 0.005,
                   "objective": "latency"},
        "digits": {"model": lambda: DATA / "digits_cnn.onnx", "data": DATA / "digits_test.npz",
                   "calib": DATA / "digits_calib.npz", "metric": "accuracy", "max_error": 0.005,
                   "objective": "size"},
    }


def _outputs(path: Path, feeds: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    session = create_session(path, optimize=True, threads=1)
    names = {item.name for item in session.get_inputs()}
    return [run_session(session, {k: v for k, v in feed.items() if k in names}) for feed in feeds]


def _fidelity(original: Path, candidate: Path, spec: dict[str, Any]) -> dict[str, float]:
    """The same measurement tune's trials make: candidate vs original on the held-out DATA, batch 1."""
    feeds = list(make_feeds(read_proto(original), spec["data"], 1))
    with np.load(spec["data"]) as archive:
        labels = labels_for({name: archive[name] for name in archive.files})
    return measure_fidelity(spec["metric"], _outputs(original, feeds), _outputs(candidate, feeds), labels)


def _presets(model: Path, spec: dict[str, Any], folder: Path) -> dict[str, dict[str, Any]]:
    results = {}
    for name in PRESETS_COMPARED:
        target = folder / f"{name}.onnx"
        entry: dict[str, Any] = {"preset": name}
        started = time.perf_counter()
        try:
            done = optimize(model, target, preset=name, calib=spec["calib"])
            entry["optimize_s"] = round(time.perf_counter() - started, 1)
            entry["failures"] = [f"{r.name}: {r.reason}" for r in done.report.failures]
            entry.update(_fidelity(model, target, spec))
            entry["size_bytes"] = model_file_bytes(target)
            entry["path"] = str(target)
            entry["meets_budget"] = entry["error"] <= spec["max_error"] + 1e-12 and not entry["failures"]
        except Exception as error:  # a preset that cannot run here (bf16 kernels on this CPU) is a row
            entry.update(status="failed", reason=f"{type(error).__name__}: {str(error).splitlines()[0]}",
                         meets_budget=False)
        results[name] = entry
        logger.info("preset %s: %s", name, {k: v for k, v in entry.items() if k != "path"})
    return results


def _side_by_side(model: Path, best: Path, presets: dict[str, dict[str, Any]], spec: dict[str, Any],
                  runs: int) -> dict[str, dict[str, float]]:
    contenders = {"original": model, "tune best": best}
    contenders.update({f"preset {name}": Path(entry["path"]) for name, entry in presets.items()
                       if entry.get("meets_budget")})
    report = benchmark(list(contenders.values()),
                       BenchConfig(threads=1, batch_size=1, data=str(spec["data"]), warmup_runs=10, timed_runs=runs,
                                   measure_memory=False))
    return {name: {"p50_ms": result.latency.p50_ms, "ratio_to_original": result.ratio_to_first["latency_p50"],
                   "file_bytes": result.file_bytes}
            for name, result in zip(contenders, report.models, strict=True)}


def run_model(name: str, spec: dict[str, Any], args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    model = Path(spec["model"]())
    best_path = folder / f"{name}-tuned.onnx"
    started = time.perf_counter()
    found = onnxopt.tune(model, best_path, data=spec["data"], calib=spec["calib"], metric=spec["metric"],
                         max_error=spec["max_error"], objective=spec["objective"], trials=args.trials,
                         executor=args.executor, seed=args.seed, use_cache=not args.no_cache,
                         command=f"python -m bench.tune --models {name} --trials {args.trials}",
                         progress=lambda event, payload: logger.info(
                             "trial %s %s", payload["record"]["key"], payload["record"]["status"])
                         if event == "trial" else None)
    tune_s = time.perf_counter() - started
    presets = _presets(model, spec, folder / name)
    best_fidelity = _fidelity(model, best_path, spec) if found.best else None
    timing = _side_by_side(model, best_path, presets, spec, args.runs) if found.best else {}
    return {"model": str(model), "spec": {k: str(v) for k, v in spec.items() if k != "model"},
            "tune": found.document, "tune_wall_s": round(tune_s, 1), "presets": presets,
            "best_fidelity": best_fidelity, "best_size_bytes": model_file_bytes(best_path) if found.best else None,
            "side_by_side": timing, "original_bytes": model_file_bytes(model)}


def _checks(name: str, result: dict[str, Any]) -> list[str]:
    document, presets = result["tune"], result["presets"]
    best = document["best"]
    lines = []
    trials, grid = len(document["trials"]), document["space"]["grid_size"]
    lines.append(f"- trials: {trials} of a {grid}-configuration grid ({trials / grid:.1%}).")
    if best is None:
        return [*lines, "- **no configuration met the budget**"]
    fidelity = result["best_fidelity"]
    if name == "minilm":
        feasible = {k: v for k, v in presets.items() if v.get("meets_budget")}
        timing = result["side_by_side"]
        fastest = min(feasible, key=lambda k: timing[f"preset {k}"]["ratio_to_original"]) if feasible else None
        ours = timing["tune best"]["ratio_to_original"]
        lines.append(f"- budget on held-out sentences: error {fidelity['error']:.5f} (mean cosine "
                     f"{fidelity['metric_value']:.5f}, worst sentence {fidelity.get('min_cosine', float('nan')):.5f})"
                     f" {'≤' if fidelity['error'] <= 0.005 else '>'} 0.005.")
        if fastest:
            theirs = timing[f"preset {fastest}"]["ratio_to_original"]
            verdict = "at least as fast" if ours <= theirs * 1.0 else (
                "within 3% (timing noise)" if ours <= theirs * 1.03 else "slower")
            lines.append(f"- latency side by side: tune best {ours:.3f}× the original, fastest preset within budget "
                         f"({fastest}) {theirs:.3f}×: {verdict}.")
    else:
        int8 = presets.get("int8", {})
        accuracy = fidelity["metric_value"]
        reference = fidelity.get("reference_metric")
        lines.append(f"- accuracy {accuracy:.4f} vs fp32 {reference:.4f} ({(accuracy - reference) * 100:+.2f} points; "
                     "budget 0.5).")
        if int8.get("size_bytes"):
            lines.append(f"- size {result['best_size_bytes']} bytes vs int8 preset {int8['size_bytes']} bytes "
                         f"({'smaller or equal' if result['best_size_bytes'] <= int8['size_bytes'] else 'larger'}).")
    return lines


def _markdown(results: dict[str, Any], args: argparse.Namespace, tags: dict[str, Any], load: tuple) -> str:
    lines = ["## onnxopt tune vs the presets", "",
             f"Command: `python -m bench.tune --models {','.join(results)} --trials {args.trials} "
             f"--executor {args.executor} --runs {args.runs}`  ",
             f"Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC  ",
             f"Machine: {hardware_label(tags)}; CPU flags: {', '.join(tags['cpu_flags'])}; "
             f"{platform.platform()}; onnxruntime {tags['onnxruntime']}; onnxopt {onnxopt.__version__}  ",
             f"Load average at start / end: {load[0]:.1f} / {load[1]:.1f} (a shared 2-core machine: latency is "
             "compared only as ratios of models timed round-robin in the same process).", ""]
    for name, result in results.items():
        document = result["tune"]
        lines += [to_markdown(document).replace("### tune:", f"### {name}: tune"), "Checks:", *_checks(name, result),
                  ""]
        lines += ["| preset | error | metric | size | latency vs original (side by side) | within budget |",
                  "|---|---:|---:|---:|---:|---|"]
        timing = result["side_by_side"]
        for preset, entry in result["presets"].items():
            ratio = timing.get(f"preset {preset}", {}).get("ratio_to_original")
            if entry.get("status") == "failed":
                lines.append(f"| {preset} | — | — | — | — | failed: {entry['reason'][:80]} |")
                continue
            lines.append(f"| {preset} | {entry['error']:.5f} | {entry['metric_value']:.5f} | "
                         f"{entry['size_bytes'] / 1e6:.2f} MB | {f'{ratio:.3f}×' if ratio else '—'} | "
                         f"{'yes' if entry['meets_budget'] else 'no'} |")
        if "tune best" in timing:
            fidelity = result["best_fidelity"]
            lines.append(f"| **tune best** `{document['best']['key']}` | {fidelity['error']:.5f} | "
                         f"{fidelity['metric_value']:.5f} | {result['best_size_bytes'] / 1e6:.2f} MB | "
                         f"{timing['tune best']['ratio_to_original']:.3f}× | yes |")
        cost = document["cost"]
        per_trial = [t for t in document["trials"] if not t.get("cached") and t.get("trial_s")]
        if per_trial:
            seconds = sorted(t["trial_s"] for t in per_trial)
            peaks = sorted(t["peak_rss_bytes"] for t in per_trial if t.get("peak_rss_bytes"))
            lines += ["", f"Search cost: {cost['wall_s']:.0f} s wall for {cost['trials_run']} trials "
                      f"(median {seconds[len(seconds) // 2]:.1f} s, max {seconds[-1]:.1f} s per trial); peak RSS "
                      f"per trial median {peaks[len(peaks) // 2] / 2**20:.0f} MiB, max {peaks[-1] / 2**20:.0f} MiB."]
        lines.append("")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="minilm,digits")
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--executor", default="local")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs", type=int, default=200, help="timed runs per model in the side-by-side timing")
    parser.add_argument("--no-cache", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("onnxopt").setLevel(logging.WARNING)
    specs = _specs()
    load_start = os.getloadavg()[0]
    results = {}
    with tempfile.TemporaryDirectory(prefix="onnxopt-bench-tune-") as folder:
        for name in [item.strip() for item in args.models.split(",") if item.strip()]:
            (Path(folder) / name).mkdir()
            results[name] = run_model(name, specs[name], args, Path(folder))
    tags = host_tags()
    load = (load_start, os.getloadavg()[0])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "tune.json").write_text(json.dumps({"host": tags, "load_average": load, "results": results},
                                                   indent=1, default=str) + "\n")
    (args.out / "tune.md").write_text(_markdown(results, args, tags, load))
    for name, result in results.items():
        write_report(result["tune"], args.out / f"tune_{name}.html")
        page = (args.out / f"tune_{name}.html").read_text()
        start = page.find("<svg")
        if start >= 0:
            svg = page[start:page.index("</svg>", start) + len("</svg>")]
            if "xmlns=" not in svg[:200]:
                svg = svg.replace("<svg", "<svg xmlns='http://www.w3.org/2000/svg'", 1)
            (args.out / f"tune_{name}_scatter.svg").write_text(svg + "\n")
    for name, result in results.items():
        print(f"{name}:", *(" | ".join(row) for row in front_rows(result["tune"])), sep="\n  ")
        print(*_checks(name, result), sep="\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
