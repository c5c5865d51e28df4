"""What the int8 optimizer itself costs: wall time and peak memory against onnxruntime's ``quantize_dynamic``.

The claim under test (issue 8): ``onnxopt optimize --preset int8`` (no DATA) stays within
2x of ``quantize_dynamic(per_channel=True)`` in wall time and peak RSS on BERT-base and
GPT-2 — although it also times int8 against float per node and for the whole model under
1 thread and all cores, smooths outliers, and checks every emitted node.

The two commands run alternately (``--repeats`` times each, in fresh processes measured by
``bench.measure``), so a burst of load on this shared machine hits both; we report the
median of each and their ratio.

    python -m bench.int8_cost                        # BERT-base and GPT-2 (base sizes)
    python -m bench.int8_cost --models bert --size small --repeats 1

Writes ``bench/results/int8_cost.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import statistics
import sys
import tempfile
from pathlib import Path

from bench.measure import run_measured
from models.cache import cached_model
from onnxopt.benchmark import machine_info
from onnxopt.cpu_features import host_cpu

logger = logging.getLogger("bench.int8_cost")
PROJECT_ROOT = Path(__file__).resolve().parents[1]
ORT_DYNAMIC = ("from onnxruntime.quantization import QuantType, quantize_dynamic; import sys; "
               "quantize_dynamic(sys.argv[1], sys.argv[2], per_channel=True, weight_type=QuantType.QInt8)")


def measure(name: str, size: str, repeats: int, folder: Path) -> dict:
    source = cached_model(name, size)
    commands = {
        "onnxopt --preset int8": [sys.executable, "-m", "onnxopt.cli", "optimize", str(source), "-o",
                                  str(folder / "onnxopt.onnx"), "--preset", "int8", "--json"],
        "quantize_dynamic": [sys.executable, "-c", ORT_DYNAMIC, str(source), str(folder / "ort.onnx")],
    }
    samples: dict[str, list] = {label: [] for label in commands}
    for index in range(repeats):
        for label, command in commands.items():
            measured = run_measured(command, cwd=folder)
            if measured.returncode != 0:
                raise SystemExit(f"{label} failed on {name}: {measured.last_error_line()}")
            samples[label].append((measured.wall_s, measured.peak_rss_bytes))
            logger.info("%s %s #%d: %.1f s, %.0f MiB", name, label, index + 1, measured.wall_s,
                        (measured.peak_rss_bytes or 0) / 2**20)
    row = {"model": f"{name} ({size})", "model_bytes": source.stat().st_size}
    for label, values in samples.items():
        row[label] = {"wall_s": statistics.median(v[0] for v in values),
                      "peak_rss_bytes": statistics.median(v[1] for v in values), "all": values}
    ours, theirs = row["onnxopt --preset int8"], row["quantize_dynamic"]
    row["time_ratio"] = ours["wall_s"] / theirs["wall_s"]
    row["memory_ratio"] = ours["peak_rss_bytes"] / theirs["peak_rss_bytes"]
    return row


def markdown(rows: list[dict], header: dict) -> str:
    lines = [
        "# What int8 optimization costs: onnxopt against quantize_dynamic", "",
        f"`{header['command']}` — {header['date']}; CPU {header['cpu']}, {header['machine']['cpu_count']} cores "
        f"(shared: load average {header['load']}); onnxruntime {header['machine']['onnxruntime']}.",
        f"Medians of {header['repeats']} alternating runs per command, each a fresh process (wall time, peak RSS).",
        "",
        "| model | onnxopt `--preset int8` | `quantize_dynamic(per_channel=True)` | time ratio | memory ratio |",
        "|---|---|---|---:|---:|",
    ]
    for row in rows:
        ours, theirs = row["onnxopt --preset int8"], row["quantize_dynamic"]
        lines.append(f"| {row['model']} | {ours['wall_s']:.1f} s, {ours['peak_rss_bytes'] / 2**30:.2f} GiB | "
                     f"{theirs['wall_s']:.1f} s, {theirs['peak_rss_bytes'] / 2**30:.2f} GiB | "
                     f"{row['time_ratio']:.2f}× | {row['memory_ratio']:.2f}× |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    import os

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="bert,gpt2")
    parser.add_argument("--size", default="base", choices=("tiny", "small", "base"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "bench" / "results" / "int8_cost")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    load = " / ".join(f"{value:.1f}" for value in os.getloadavg())
    rows = []
    with tempfile.TemporaryDirectory(prefix="onnxopt-int8-cost-") as folder:
        for name in [item.strip() for item in args.models.split(",") if item.strip()]:
            rows.append(measure(name, args.size, args.repeats, Path(folder)))
    header = {"command": "python -m bench.int8_cost " + " ".join(argv if argv is not None else sys.argv[1:]),
              "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
              "cpu": host_cpu().describe(), "machine": machine_info("cpu"), "repeats": args.repeats, "load": load}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps({"header": header, "rows": rows}, indent=2) + "\n")
    text = markdown(rows, header)
    args.out.with_suffix(".md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
