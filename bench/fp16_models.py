"""fp16 on the sample models: onnxopt's pass beside onnxconverter-common's converter.

For each model (``models.cache``): convert with the fp16 pass (calibrated on the model's
own sample inputs) and with onnxconverter-common's ``convert_float_to_float16(keep_io_types
=True)``, then record whether onnxruntime loads the result, whether its outputs are
finite, their worst relative error and cosine against fp32 (``models.evaluate``), the
file-size ratio, and the conversion time. ``--judge N`` also runs the fp16-faithful
reference evaluator on N samples (small models only: it is pure numpy).

    python -m bench.fp16_models                       # minilm, bert/gpt2 small
    python -m bench.fp16_models --models bert:base,gpt2:base

Prints a Markdown table; ``--json PATH`` writes the rows.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx

from onnxopt.fp16_judge import judge_run, relative_error
from onnxopt.model_io import load, save
from onnxopt.pass_api import PassContext

logger = logging.getLogger("bench.fp16_models")
DEFAULT_MODELS = ("minilm_pooled", "bert:small", "gpt2:small", "resnet18:small")


@dataclass
class Row:
    model: str
    tool: str
    loads: bool
    finite: bool | None = None
    max_rel: float | None = None
    cosine: float | None = None
    size_ratio: float | None = None
    seconds: float | None = None
    judge_rel: float | None = None
    note: str = ""


def _feeds(name: str, size: str, count: int) -> list[dict[str, np.ndarray]]:
    if name.startswith("minilm"):
        reference = np.load(Path(__file__).resolve().parents[1] / "tests" / "data" / "minilm_reference.npz")
        names = ("input_ids", "attention_mask", "token_type_ids")
        return [{key: reference[key][i * 8:(i + 1) * 8] for key in names} for i in range(count)]
    from models.evaluate import sample_feeds

    return sample_feeds(name, size, batch_size=1, count=count)


def _judge(path: Path, reference: Path, feeds: list[dict[str, np.ndarray]], samples: int) -> float:
    from onnxopt.runtime import create_session, run_session

    session = create_session(reference)
    worst = 0.0
    for feed in feeds[:samples]:
        if "attention_mask" in feed:  # drop the all-padding tail: the evaluator is slow
            length = int(feed["attention_mask"].sum(axis=1).max())
            feed = {key: value[:, :length] for key, value in feed.items()}
        expected = run_session(session, feed)
        judged = judge_run(str(path), feed)
        worst = max(worst, max(relative_error(expected[name], judged[name]) for name in expected))
    return worst


def _evaluate(row: Row, path: Path, source: Path, feeds: list[dict[str, np.ndarray]], judge: int) -> Row:
    from models.evaluate import output_error
    from onnxopt.runtime import create_session, run_session

    try:
        session = create_session(path)
    except Exception as error:  # the point of the table: some converters' outputs do not load
        row.loads = False
        row.note = str(error).splitlines()[0][:160]
        return row
    row.loads = True
    row.finite = all(np.all(np.isfinite(value)) for feed in feeds for value in run_session(session, feed).values())
    error = output_error(path, source, feeds)
    row.max_rel, row.cosine = error.max_rel, error.cosine
    row.size_ratio = path.stat().st_size / source.stat().st_size
    if judge:
        try:
            row.judge_rel = _judge(path, source, feeds, judge)
        except Exception as error:  # report, do not hide: an unfaithful or failing judge is news
            row.note = f"judge: {str(error).splitlines()[0][:120]}"
    return row


def run_ours(name: str, source: Path, feeds, folder: Path, judge: int) -> Row:
    from onnxopt.passes.precision.fp16 import Fp16Pass

    model = load(source)
    start = time.perf_counter()
    result = Fp16Pass().run(model, PassContext(data=feeds))
    target = folder / "ours.onnx"
    save(model, target)
    row = _evaluate(Row(name, "onnxopt fp16", loads=False, seconds=time.perf_counter() - start),
                    target, source, feeds, judge)
    row.note = "; ".join(filter(None, [f"{result.stats['nodes_fp32']} node(s) kept fp32", row.note]))
    return row


def run_theirs(name: str, source: Path, feeds, folder: Path, judge: int) -> Row:
    from onnxconverter_common.float16 import convert_float_to_float16

    start = time.perf_counter()
    target = folder / "theirs.onnx"
    try:
        converted = convert_float_to_float16(onnx.load(str(source)), keep_io_types=True)
        onnx.save(converted, str(target))
    except Exception as error:
        return Row(name, "onnxconverter-common", loads=False,
                   note=f"conversion failed: {str(error).splitlines()[0][:120]}")
    row = Row(name, "onnxconverter-common", loads=False, seconds=time.perf_counter() - start)
    return _evaluate(row, target, source, feeds, judge)


def _format(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1e4 else f"{value:.2e}"
    return str(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS), help="name[:size],... from models.cache")
    parser.add_argument("--feeds", type=int, default=2, help="sample feeds for calibration and comparison")
    parser.add_argument("--judge", type=int, default=0, help="samples judged with fp16 semantics (small models)")
    parser.add_argument("--json", type=Path, help="write the rows here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    from models.cache import cached_model

    rows: list[Row] = []
    for spec in args.models.split(","):
        name, _, size = spec.partition(":")
        source = cached_model(name, size or "tiny")
        label = f"{name}-{size}" if size else name
        feeds = _feeds(name, size or "tiny", args.feeds)
        with tempfile.TemporaryDirectory(prefix="fp16-bench-") as folder:
            for runner in (run_ours, run_theirs):
                row = runner(label, source, feeds, Path(folder), args.judge)
                rows.append(row)
                logger.warning("%s", row)
    header = ["model", "tool", "loads", "finite", "max_rel", "cosine", "size_ratio", "seconds", "judge_rel", "note"]
    sys.stdout.write("| " + " | ".join(header) + " |\n|" + "---|" * len(header) + "\n")
    for row in rows:
        sys.stdout.write("| " + " | ".join(_format(getattr(row, key)) for key in header) + " |\n")
    if args.json:
        args.json.write_text(json.dumps([asdict(row) for row in rows], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
