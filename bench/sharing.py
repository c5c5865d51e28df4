"""Parameter sharing, measured: transposed twins (GPT-2's tied head) and weight clustering.

Sections (``--sections``, default all), each through the real CLI in a process of its own
(wall time and peak RSS from ``bench.measure``), judged with onnxruntime on the CPU:

* ``gpt2`` — the GPT-2 builder writes the language-model head as the token-embedding
  table transposed, a separate tensor (as PyTorch's exporter does). ``onnxopt optimize``
  (default preset) must shrink the file by that table, keep outputs bit-identical
  (onnxruntime with graph optimizations off *and* on) and not be slower (interleaved
  ``onnxopt.benchmark`` runs, two rounds).
* ``minilm`` — all-MiniLM-L6-v2 (real weights): ``palettize`` (4-bit) with and without
  DATA (``tests/data/minilm_calib.npz``), 6-bit with DATA, and weight-only int4 GPTQ for
  reference; sentence-embedding cosine to the PyTorch reference on the 48 held-out
  sentences, file ratio, latency side by side with fp32.
* ``digits`` — the trained digits CNN at 4 bits: held-out accuracy, file ratio, latency.
* ``large`` — the 2.48 GB external-data MLP (``models.large_mlp --size base``) clustered at
  4 bits: peak RSS of the optimizer against the largest tensor and the model size; the
  same command on the 100 MB ``small`` size is checked with onnxruntime.

    python -m bench.sharing                               # everything (about an hour on 2 shared cores)
    python -m bench.sharing --sections gpt2 --gpt2-size small

Writes ``bench/results/sharing.md`` and ``.json``, keeping sections measured earlier.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import logging
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from bench.large_model import external_files_complete
from bench.measure import Measured, run_measured
from onnxopt.benchmark import BenchConfig, benchmark, machine_info
from onnxopt.cpu_features import host_cpu
from onnxopt.model_io import model_file_bytes
from onnxopt.passes import PRESETS

logger = logging.getLogger("bench.sharing")

PROJECT_ROOT = Path(__file__).resolve().parents[1]
RESULTS = PROJECT_ROOT / "bench" / "results"
MINILM_CALIB = PROJECT_ROOT / "tests" / "data" / "minilm_calib.npz"
DIGITS_CALIB = PROJECT_ROOT / "tests" / "data" / "digits_calib.npz"
CPU_FLAGS = ("avx512_vnni", "avx512f", "avx2", "fma")
ROUNDS = 2


def cpu_flags() -> list[str]:
    return [flag for flag in CPU_FLAGS if flag in host_cpu().flags]


def _optimize(source: Path, target: Path, *options: str) -> Measured:
    command = [sys.executable, "-m", "onnxopt.cli", "optimize", str(source), "-o", str(target), *options]
    logger.info("%s", " ".join(command[2:]))
    measured = run_measured(command, cwd=PROJECT_ROOT)
    if measured.returncode != 0:
        raise SystemExit(f"optimize failed: {measured.last_error_line()}")
    return measured


def _report_stats(report: Path, name: str) -> dict[str, Any]:
    records = [r for r in json.loads(report.read_text())["passes"] if r["name"] == name and r["status"] == "ok"]
    return records[-1]["stats"] if records else {}


def _latency(paths: list[Path], data: Path | None, runs: int, batch_size: int = 1) -> list[dict[str, float]]:
    """p50 and its ratio to the first model, per round (interleaved runs, onnxruntime optimizations on)."""
    rounds = []
    for _ in range(ROUNDS):
        config = BenchConfig(data=str(data) if data else None, batch_size=batch_size, warmup_runs=5, timed_runs=runs,
                             measure_memory=False)
        report = benchmark([str(p) for p in paths], config)
        rounds.append([{"p50_ms": m.latency.p50_ms, "ratio": m.ratio_to_first["latency_p50"]} for m in report.models])
        gc.collect()
    return [{"p50_ms": [r[i]["p50_ms"] for r in rounds], "ratio": [r[i]["ratio"] for r in rounds]}
            for i in range(len(paths))]


def _npz(feeds: list[dict[str, np.ndarray]], target: Path) -> Path:
    np.savez(target, **{name: np.concatenate([feed[name] for feed in feeds]) for name in feeds[0]})
    return target


# --- sections -----------------------------------------------------------------------------


def gpt2_section(size: str, workdir: Path, runs: int) -> dict[str, Any]:
    import onnx.numpy_helper

    from models.cache import cached_model
    from models.gpt2 import sample_inputs
    from onnxopt.model_io import read_proto
    from onnxopt.runtime import create_session, run_session

    source = cached_model("gpt2", size)
    tables = {t.name: t for t in read_proto(source).graph.initializer if t.name in ("wte.weight", "lm_head.weight")}
    wte, head = (onnx.numpy_helper.to_array(tables[name]) for name in ("wte.weight", "lm_head.weight"))
    duplicate = bool(np.array_equal(head, wte.T))
    target, report = workdir / f"gpt2-{size}-optimized.onnx", workdir / "gpt2-report.json"
    measured = _optimize(source, target, "--report", str(report))
    identical = {}
    feeds = [sample_inputs(size, batch_size=1, seed=seed) for seed in range(3)]
    for optimize in (False, True):
        before, after = (create_session(p, optimize=optimize) for p in (source, target))
        identical["ort_optimizations_on" if optimize else "ort_optimizations_off"] = all(
            np.array_equal(run_session(before, f)["logits"], run_session(after, f)["logits"]) for f in feeds)
        del before, after
        gc.collect()
    latency = _latency([source, target], _npz(feeds, workdir / "gpt2-inputs.npz"), runs)
    source_bytes, target_bytes = model_file_bytes(source), model_file_bytes(target)
    return {"size": size, "head_is_embedding_transposed": duplicate, "duplicate_table_bytes": int(wte.nbytes),
            "source_bytes": source_bytes, "optimized_bytes": target_bytes, "bytes_dropped": source_bytes - target_bytes,
            "bit_identical": identical, "latency": latency, "optimize_wall_s": measured.wall_s,
            "optimize_peak_rss_bytes": measured.peak_rss_bytes,
            "share_twins": {k: v for k, v in _report_stats(report, "share-twins").items()}}


def _passes_with(step: str) -> str:
    return ",".join([*PRESETS["default"], step])


MINILM_VARIANTS = {  # label -> (optimize options, calibrated)
    "palettize 4-bit, DATA": (["--preset", "palettize"], True),
    "palettize 4-bit, no DATA": (["--preset", "palettize"], False),
    "cluster 6-bit, DATA": (["--passes", _passes_with("cluster-weights:bits=6")], True),
    "weight-only int4 GPTQ (reference)": (["--preset", "int4"], True),
}


def minilm_section(workdir: Path, runs: int) -> dict[str, Any]:
    from models.cache import cached_model
    from models.evaluate import minilm_cosine

    source = cached_model("minilm_pooled")
    source_bytes = model_file_bytes(source)
    rows = [{"variant": "fp32", "file_bytes": source_bytes, "file_ratio": 1.0, **minilm_cosine(source)}]
    paths = [source]
    for index, (label, (options, calibrated)) in enumerate(MINILM_VARIANTS.items()):
        target, report = workdir / f"minilm-{index}.onnx", workdir / f"minilm-{index}.json"
        extra = ["--calib", str(MINILM_CALIB)] if calibrated else []
        measured = _optimize(source, target, *options, *extra, "--report", str(report))
        stats = _report_stats(report, "cluster-weights")
        rows.append({"variant": label, "command": " ".join(["onnxopt optimize MINILM -o OUT", *options, *(
                         ["--calib tests/data/minilm_calib.npz"] if calibrated else [])]),
                     "file_bytes": model_file_bytes(target), "file_ratio": model_file_bytes(target) / source_bytes,
                     **minilm_cosine(target), "optimize_wall_s": measured.wall_s,
                     "optimize_peak_rss_bytes": measured.peak_rss_bytes,
                     "clustered": {k: v for k, v in stats.items() if k != "decisions"},
                     "decisions": stats.get("decisions", [])})
        paths.append(target)
    for row, latency in zip(rows, _latency(paths, MINILM_CALIB, runs), strict=True):
        row["latency"] = latency
    return {"rows": rows}


def digits_section(workdir: Path, runs: int) -> dict[str, Any]:
    from models.digits import model_path, top1_accuracy

    source = model_path()
    rows = [{"variant": "fp32", "file_ratio": 1.0, "accuracy": top1_accuracy(source)}]
    paths = [source]
    for index, (label, calibrated) in enumerate((("palettize 4-bit, DATA", True), ("palettize 4-bit, no DATA", False))):
        target = workdir / f"digits-{index}.onnx"
        _optimize(source, target, "--preset", "palettize", *(["--calib", str(DIGITS_CALIB)] if calibrated else []))
        rows.append({"variant": label, "file_ratio": model_file_bytes(target) / model_file_bytes(source),
                     "accuracy": top1_accuracy(target)})
        paths.append(target)
    for row, latency in zip(rows, _latency(paths, None, runs), strict=True):
        row["latency"] = latency
    return {"rows": rows}


def large_section(workdir: Path) -> dict[str, Any]:
    from models import large_mlp
    from onnxopt.runtime import create_session, run_session

    passes = "cluster-weights:bits=4"
    result: dict[str, Any] = {"passes": passes}
    spec = large_mlp.SIZES["base"]
    largest = max(rows * cols for rows, cols in spec.layer_shapes()) * 4
    if shutil.disk_usage(workdir).free < 2.5 * spec.weight_bytes:
        raise SystemExit(f"{workdir}: not enough free disk for the {spec.weight_bytes / 2**30:.1f} GiB model")
    try:
        for size in ("tiny", "small", "base"):
            source, target = workdir / f"mlp-{size}.onnx", workdir / f"mlp-{size}-4bit.onnx"
            large_mlp.build(source, size=size)
            measured = _optimize(source, target, "--passes", passes)
            entry: dict[str, Any] = {"model_bytes": model_file_bytes(source), "output_bytes": model_file_bytes(target),
                                     "wall_s": measured.wall_s, "peak_rss_bytes": measured.peak_rss_bytes,
                                     "external_data_complete": external_files_complete(target)[0]}
            # onnxruntime folds the rebuilt weights at load: the base model needs several GiB to check.
            if size != "base" or psutil.virtual_memory().available > 4 * spec.weight_bytes:
                feed = large_mlp.sample_inputs(size, batch_size=2)
                want = run_session(create_session(source, optimize=True), feed)["output"]
                got = run_session(create_session(target, optimize=True), feed)["output"]
                entry["relative_output_error"] = float(np.linalg.norm(got - want) / np.linalg.norm(want))
                gc.collect()
            result[size] = entry
            for path in (source, target):
                for file in (path, path.with_name(path.name + ".data")):
                    file.unlink(missing_ok=True)
    finally:
        for file in workdir.glob("mlp-*"):
            file.unlink(missing_ok=True)
    result["largest_tensor_bytes"] = largest
    base, tiny = result["base"], result["tiny"]
    if base["peak_rss_bytes"] and tiny["peak_rss_bytes"]:
        result["peak_above_interpreter_bytes"] = base["peak_rss_bytes"] - tiny["peak_rss_bytes"]
        result["peak_above_interpreter_over_largest_tensor"] = result["peak_above_interpreter_bytes"] / largest
        result["peak_over_model_size"] = base["peak_rss_bytes"] / base["model_bytes"]
    return result


# --- report -------------------------------------------------------------------------------


def _mib(count: float | None) -> str:
    return "—" if count is None else f"{count / 2**20:.1f} MiB"


def _ratios(latency: dict[str, list[float]]) -> str:
    return " / ".join(f"{r:.2f}" for r in latency["ratio"])


def _stamp(section: dict[str, Any]) -> str:
    measured = section.get("measured") or {}
    return f"Measured {measured.get('date', '?')} with `{measured.get('command', '?')}`."


def _gpt2_by_size(results: dict[str, Any]) -> dict[str, Any]:
    """GPT-2 results keyed by size (files written before sizes were kept apart hold one, flat)."""
    stored = results.get("gpt2") or {}
    return {stored["size"]: stored} if "size" in stored else dict(stored)


def markdown(results: dict[str, Any]) -> str:
    header = results["header"]
    lines = ["# Parameter sharing: twins and clustering", "",
             "Each section names the command and date it was measured with.  ",
             f"Machine: {header['machine'].get('processor', '')} × {header['machine'].get('cpu_count', '')} "
             f"(CPU flags: {', '.join(header['cpu_flags'])}); onnxruntime {header['machine'].get('onnxruntime', '')} "
             "on the CPU.  ",
             "Latency: p50 of interleaved runs (batch 1, onnxruntime graph optimizations on, as deployed), as a "
             f"ratio to the first row, {ROUNDS} rounds (shared cores: ±5–10 % is noise).", ""]
    for gpt2 in _gpt2_by_size(results).values():
        identical = gpt2["bit_identical"]
        lines += [f"## GPT-2 ({gpt2['size']}): the tied head stored transposed", "", _stamp(gpt2), "",
                  "| measure | value |", "|---|---|",
                  f"| head equals the embedding table transposed | {gpt2['head_is_embedding_transposed']} |",
                  f"| duplicate table | {_mib(gpt2['duplicate_table_bytes'])} |",
                  f"| file before → after `onnxopt optimize` | {_mib(gpt2['source_bytes'])} → "
                  f"{_mib(gpt2['optimized_bytes'])} (dropped {_mib(gpt2['bytes_dropped'])}, "
                  f"{gpt2['optimized_bytes'] / gpt2['source_bytes']:.3f}×) |",
                  f"| outputs bit-identical (3 inputs) | optimizations off: {identical['ort_optimizations_off']}, "
                  f"on: {identical['ort_optimizations_on']} |",
                  f"| latency p50 vs original (rounds) | {_ratios(gpt2['latency'][1])} "
                  f"({' / '.join(f'{v:.1f}' for v in gpt2['latency'][1]['p50_ms'])} ms vs "
                  f"{' / '.join(f'{v:.1f}' for v in gpt2['latency'][0]['p50_ms'])} ms) |",
                  f"| optimize wall time, peak RSS | {gpt2['optimize_wall_s']:.1f} s, "
                  f"{_mib(gpt2['optimize_peak_rss_bytes'])} |", ""]
    minilm = results.get("minilm")
    if minilm:
        lines += ["## MiniLM (all-MiniLM-L6-v2, real weights): clustering", "", _stamp(minilm), "",
                  "| variant | file | vs fp32 | cosine mean | cosine min | latency vs fp32 (rounds) | optimize |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for row in minilm["rows"]:
            wall = f"{row['optimize_wall_s']:.0f} s, {_mib(row['optimize_peak_rss_bytes'])}" if "optimize_wall_s" \
                in row else "—"
            lines.append(f"| {row['variant']} | {_mib(row['file_bytes'])} | {row['file_ratio']:.3f} | "
                         f"{row['mean_cosine']:.5f} | {row['min_cosine']:.5f} | {_ratios(row['latency'])} | {wall} |")
        lines += ["", "Cosine: per sentence, the model's sentence embedding against the PyTorch reference, 48 "
                  "held-out sentences (`models.evaluate.minilm_cosine`).", ""]
        lines += [f"- {row['variant']}: `{row['command']}`" for row in minilm["rows"] if "command" in row]
        lines.append("")
    digits = results.get("digits")
    if digits:
        lines += ["## Digits CNN (trained): 4 bits", "", _stamp(digits), "",
                  "| variant | file vs fp32 | accuracy | latency vs fp32 |", "|---|---:|---:|---:|"]
        lines += [f"| {row['variant']} | {row['file_ratio']:.3f} | {row['accuracy']:.4f} | {_ratios(row['latency'])} |"
                  for row in digits["rows"]]
        lines.append("")
    large = results.get("large")
    if large:
        base, small = large["base"], large["small"]
        lines += ["## A > 2 GB external-data model (`models.large_mlp --size base`)", "", _stamp(large), "",
                  f"`onnxopt optimize IN -o OUT --passes {large['passes']}` in a process of its own.", "",
                  "| measure | value |", "|---|---|",
                  f"| model | {_mib(base['model_bytes'])}, largest tensor {_mib(large['largest_tensor_bytes'])} |",
                  f"| output | {_mib(base['output_bytes'])} ({base['output_bytes'] / base['model_bytes']:.3f}×), "
                  f"external data complete: {base['external_data_complete']} |",
                  f"| peak RSS | {_mib(base['peak_rss_bytes'])} ({large.get('peak_over_model_size', 0):.3f}× the model)"
                  f" |",
                  "| same command on the 3.7 MB tiny MLP (interpreter, imports) | "
                  f"{_mib(large['tiny']['peak_rss_bytes'])} |",
                  f"| peak above that / largest tensor | {_mib(large.get('peak_above_interpreter_bytes'))} / "
                  f"{_mib(large['largest_tensor_bytes'])} = "
                  f"{large.get('peak_above_interpreter_over_largest_tensor', 0):.2f} |",
                  f"| wall time | {base['wall_s']:.0f} s |",
                  f"| onnxruntime check | small (100 MB) size: relative output error "
                  f"{small.get('relative_output_error', float('nan')):.4f}; base: "
                  f"{base.get('relative_output_error', 'not run (memory)')} |", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", default="gpt2,minilm,digits,large")
    parser.add_argument("--gpt2-size", default="small")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--workdir", type=Path, help="folder for the models (default: a temporary one)")
    arguments = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    RESULTS.mkdir(parents=True, exist_ok=True)
    json_path = RESULTS / "sharing.json"
    results: dict[str, Any] = json.loads(json_path.read_text()) if json_path.exists() else {}
    sections = [s.strip() for s in arguments.sections.split(",") if s.strip()]
    stamp = {"command": "python -m bench.sharing " + " ".join(argv if argv is not None else sys.argv[1:]),
             "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
    with tempfile.TemporaryDirectory(prefix="onnxopt-sharing-") as scratch:
        workdir = arguments.workdir or Path(scratch)
        workdir.mkdir(parents=True, exist_ok=True)
        for section in sections:
            if section == "gpt2":
                measured = _gpt2_by_size(results)
                measured[arguments.gpt2_size] = {**gpt2_section(arguments.gpt2_size, workdir, arguments.runs),
                                                 "measured": stamp}
                results["gpt2"] = measured
            elif section == "minilm":
                results["minilm"] = {**minilm_section(workdir, arguments.runs), "measured": stamp}
            elif section == "digits":
                results["digits"] = {**digits_section(workdir, arguments.runs * 10), "measured": stamp}
            elif section == "large":
                results["large"] = {**large_section(workdir), "measured": stamp}
            else:
                parser.error(f"unknown section {section!r}")
            results["header"] = {"machine": machine_info("cpu"), "cpu_flags": cpu_flags()}
            json_path.write_text(json.dumps(results, indent=1, default=str) + "\n")
            (RESULTS / "sharing.md").write_text(markdown(results))
            logger.info("wrote %s", RESULTS / "sharing.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
