"""Sweep onnx's shipped models through the fp16 pass and record the worst error.

Every model of ``onnx/backend/test/data/light`` and ``pytorch-converted`` is converted
with the fp16 pass, loaded in onnxruntime (CPU, graph optimizations off), run on its own
test inputs (pytorch-converted) or on random inputs (light), and compared with the fp32
model: outputs must be finite and within ``FP16_TOLERANCE`` relative error (max
|difference| over max |fp32 output|). The pytorch-converted models are small enough to be
judged with fp16 semantics too (``onnxopt.fp16_judge``).

``python -m bench.fp16_sweep [--judge]`` prints one line per model and the worst case.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnx.numpy_helper

from onnxopt.data import make_feeds
from onnxopt.errors import BadInputError
from onnxopt.fp16_judge import judge_run, relative_error
from onnxopt.model_io import load, to_proto
from onnxopt.pass_api import PassContext
from onnxopt.runtime import create_session, run_session

BACKEND_DATA = Path(onnx.__file__).resolve().parent / "backend" / "test" / "data"
# Declared fp16 tolerance: relative to the largest fp32 output magnitude. fp16 keeps 11
# significant bits (~5e-4 per rounding); deep CNNs accumulate a few dozen roundings.
FP16_TOLERANCE = 1e-2

logger = logging.getLogger(__name__)


@dataclass
class SweepResult:
    name: str
    relative_error: float
    finite: bool
    nodes_half: int
    nodes_fp32: int
    judge_error: float | None = None
    skipped: str = ""


def sweep_models() -> list[Path]:
    """The .onnx files of the light and pytorch-converted sets."""
    light = sorted((BACKEND_DATA / "light").glob("*.onnx"))
    converted = sorted((BACKEND_DATA / "pytorch-converted").glob("*/model.onnx"))
    return light + converted


def model_name(path: Path) -> str:
    return path.stem if path.parent.name == "light" else path.parent.name


def feed_for(path: Path, proto: onnx.ModelProto) -> dict[str, np.ndarray]:
    """The model's own test inputs when it ships them, else a seeded random feed."""
    data_set = path.parent / "test_data_set_0"
    if data_set.is_dir():
        initializers = {init.name for init in proto.graph.initializer}
        names = [value.name for value in proto.graph.input if value.name not in initializers]
        tensors = [onnx.load_tensor(str(file)) for file in sorted(data_set.glob("input_*.pb"))]
        return {name: onnx.numpy_helper.to_array(tensor) for name, tensor in zip(names, tensors, strict=False)}
    return next(iter(make_feeds(proto, random_count=1)))


def _typed_feed(model, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``feed`` cast to the types the (converted) model declares for its inputs."""
    declared = {tensor.name: np.dtype(tensor.dtype) for tensor in model.graph.inputs if tensor.dtype is not None}
    return {name: value.astype(declared.get(name, value.dtype)) for name, value in feed.items()}


def check_model(path: Path, judge: bool = False, keep_io_types: bool = True) -> SweepResult:
    """Convert one model and compare it with its fp32 self.

    ``keep_io_types=False`` makes inputs and outputs half too, so that even a model of a
    single op runs in half (with fp32 inputs and outputs, converting a lone op would only
    add two casts, and the pass leaves it alone); its feed is cast to half.
    """
    from onnxopt.passes.precision.fp16 import Fp16Options, Fp16Pass

    model = load(path)
    proto = to_proto(model)
    feed = feed_for(path, proto)
    label = model_name(path) + ("" if keep_io_types else " (half io)")
    try:
        reference = run_session(create_session(model), feed)
    except BadInputError as error:  # old opsets onnxruntime no longer implements
        return _check_with_reference_only(path, model, feed, str(error), keep_io_types)
    converted = model.copy()
    result = Fp16Pass(Fp16Options(keep_io_types=keep_io_types)).run(converted, PassContext(data=[feed]))
    half_feed = _typed_feed(converted, feed)
    actual = run_session(create_session(converted), half_feed)
    errors = [relative_error(reference[name], actual[name]) for name in reference]
    finite = all(np.all(np.isfinite(value)) for value in actual.values())
    judge_error = None
    if judge:
        judged = judge_run(converted, half_feed)
        judge_error = max(relative_error(reference[name], judged[name]) for name in reference)
    return SweepResult(label, max(errors), finite, result.stats["nodes_half"],
                       result.stats["nodes_fp32"], judge_error)


def _check_with_reference_only(path: Path, model, feed: dict[str, np.ndarray], why: str,
                               keep_io_types: bool) -> SweepResult:
    """For opsets onnxruntime dropped: fp32 reference evaluator against the fp16 judge."""
    from onnx.reference import ReferenceEvaluator

    from onnxopt.passes.precision.fp16 import Fp16Options, Fp16Pass

    label = model_name(path) + ("" if keep_io_types else " (half io)") + " (reference only)"
    proto = to_proto(model)
    try:
        names = [output.name for output in proto.graph.output]
        reference = dict(zip(names, ReferenceEvaluator(proto).run(None, feed), strict=True))
    except Exception as error:  # the reference evaluator lacks some old ops too
        return SweepResult(label, 0.0, True, 0, 0, skipped=f"{why}; reference: {error}")
    converted = model.copy()
    # Ranges cannot be measured without a runtime; the static rules still apply.
    options = Fp16Options(check_activations=False, keep_io_types=keep_io_types)
    result = Fp16Pass(options).run(converted, PassContext())
    judged = judge_run(converted, _typed_feed(converted, feed))
    errors = [relative_error(reference[name], judged[name]) for name in reference]
    finite = all(np.all(np.isfinite(value)) for value in judged.values())
    return SweepResult(label, max(errors), finite, result.stats["nodes_half"], result.stats["nodes_fp32"], max(errors))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--judge", action="store_true", help="also judge pytorch-converted models with fp16 semantics")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    worst: SweepResult | None = None
    failures = 0
    for path in sweep_models():
        for keep_io_types in (True, False):
            result = check_model(path, judge=args.judge and path.parent.name != "light", keep_io_types=keep_io_types)
            if result.skipped:
                sys.stdout.write(f"skip {result.name:58s} fp32 model does not run: {result.skipped}\n")
                continue
            ok = result.finite and result.relative_error <= FP16_TOLERANCE
            failures += not ok
            judged = "" if result.judge_error is None else f" judge={result.judge_error:.2e}"
            sys.stdout.write(f"{'ok  ' if ok else 'FAIL'} {result.name:58s} rel={result.relative_error:.2e}{judged} "
                             f"half={result.nodes_half} fp32={result.nodes_fp32}\n")
            if worst is None or result.relative_error > worst.relative_error:
                worst = result
    if worst is not None:
        sys.stdout.write(f"worst: {worst.name} rel={worst.relative_error:.3e} (tolerance {FP16_TOLERANCE})\n")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
