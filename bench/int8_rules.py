"""Where int8 wins, measured: island timings of every quantization candidate, next to the shape rules.

``qdq:decide_by=rules`` decides without timing, from the op and the weight shape
(``passes/quantization/speed_rules.py``). This script is where those rules come from and
how they are checked: for each sample model it runs the ``qdq`` pass with its host timing
(islands under 1 thread and onnxruntime's default), records every candidate's int8/fp32
island time ratio with its shape, and reports how often the rules agree with the timing
(a rule "agrees" when it quantizes a node whose island ran at most 0.95x, or keeps float
one that did not).

    python -m bench.int8_rules                          # CNNs static (calibrated), transformers dynamic
    python -m bench.int8_rules --models minilm,digits --size tiny

Writes ``bench/results/int8_rules.md`` and ``.json`` (with the CPU flags and thread counts).
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import sys
import tempfile
from pathlib import Path

from bench.compare import SPECS
from onnxopt.benchmark import machine_info
from onnxopt.cpu_features import host_cpu
from onnxopt.data import make_feeds
from onnxopt.model_io import load, read_proto
from onnxopt.pass_api import PassContext
from onnxopt.passes.quantization.qdq import QdqPass
from onnxopt.passes.quantization.speed_rules import rule_verdict

logger = logging.getLogger("bench.int8_rules")
PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODELS = ("minilm", "digits", "resnet50", "mobilenetv2", "bert", "gpt2")
TRANSFORMERS = {"minilm", "bert", "gpt2"}
FASTER = 0.95


def _weight_shape(node) -> str:
    shapes = [tuple(int(d) for d in tensor.shape) for tensor in node.inputs[1:2] if hasattr(tensor, "values")]
    return "x".join(map(str, shapes[0])) if shapes else "activation"


def measure(name: str, size: str, workdir: Path) -> list[dict]:
    spec = SPECS[name]
    source = spec.source(size)
    workdir.mkdir(parents=True, exist_ok=True)
    _, calib = spec.data(size, workdir)
    model = load(source)
    dynamic = name in TRANSFORMERS
    feeds = None if dynamic else make_feeds(read_proto(source), calib, 1)
    options = {"mode": "dynamic" if dynamic else "static", "calibration_batches": 8}
    work = model.copy()
    result = QdqPass(QdqPass.make_options(options)).run(work, PassContext(data=feeds))
    ratios = {row["node"]: row["time_ratio"] for row in result.stats.get("decisions", []) if "time_ratio" in row}
    by_name = {node.name: node for node in model.graph.nodes}
    rows = []
    for node_name, ratio in ratios.items():
        node = by_name.get(node_name)
        if node is None:
            continue
        quantize, reason = rule_verdict(node)
        rows.append({"model": name, "node": node_name, "op": node.op, "weight": _weight_shape(node),
                     "group": int(node.attrs.get("group", 1)), "island_ratio": ratio,
                     "timing_says": "int8" if ratio <= FASTER else "float",
                     "rule_says": "int8" if quantize else "float", "rule_reason": reason})
    return rows


def markdown(rows: list[dict], header: dict) -> str:
    agree = sum(row["timing_says"] == row["rule_says"] for row in rows)
    lines = [
        "# int8 speed rules against island timings",
        "",
        f"`{header['command']}` — {header['date']}; CPU {header['cpu']}; onnxruntime "
        f"{header['machine'].get('onnxruntime')}; islands timed under 1 thread and onnxruntime's default "
        f"({header['machine'].get('cpu_count')} cores), the worse ratio kept; int8 counts as faster at "
        f"≤ {FASTER}x the float time.",
        "",
        f"Rules agree with the timing on {agree} of {len(rows)} candidates.",
        "",
        "| model | op | weight | group | island int8/fp32 | timing | rules | rule's reason |",
        "|---|---|---|---:|---:|---|---|---|",
    ]
    seen = set()
    for row in rows:
        key = (row["model"], row["op"], row["weight"], row["group"], row["island_ratio"])
        if key in seen:
            continue  # nodes of one signature share a timing: one line each
        seen.add(key)
        mark = "" if row["timing_says"] == row["rule_says"] else " ⚠"
        lines.append(f"| {row['model']} | {row['op']} | {row['weight']} | {row['group']} | {row['island_ratio']:.2f} "
                     f"| {row['timing_says']} | {row['rule_says']}{mark} | {row['rule_reason']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS))
    parser.add_argument("--size", default="small", choices=("tiny", "small", "base"))
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "bench" / "results" / "int8_rules")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="onnxopt-rules-") as folder:
        for name in [item.strip() for item in args.models.split(",") if item.strip()]:
            logger.info("%s ...", name)
            rows += measure(name, args.size, Path(folder) / name)
    header = {"command": "python -m bench.int8_rules " + " ".join(argv if argv is not None else sys.argv[1:]),
              "date": datetime.date.today().isoformat(), "cpu": host_cpu().describe(),
              "machine": machine_info("cpu")}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps({"header": header, "rows": rows}, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(rows, header))
    print(markdown(rows, header))
    return 0


if __name__ == "__main__":
    sys.exit(main())
