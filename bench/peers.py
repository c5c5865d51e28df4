"""The tools users would pick instead of onnxopt, each run the way its documentation shows.

``python -m bench.peers TOOL IN OUT [--calib DATA] [--batch-size N]`` runs one of them in
a process of its own, so ``bench.compare`` can measure each tool's wall time and peak
memory alike (``bench.measure``). Peers are benchmark-only dependencies (the ``bench``
extra); none of them is imported by onnxopt itself.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import onnx

Runner = Callable[[Path, Path, argparse.Namespace], None]
# Lines starting with this on stdout are notes for the results table (how the tool was coaxed).
NOTE_PREFIX = "bench-note: "


def note(text: str) -> None:
    """Tell bench.compare something the results table should say about this run."""
    sys.stdout.write(NOTE_PREFIX + text + "\n")
    sys.stdout.flush()


def _ort_dynamic(source: Path, target: Path, args: argparse.Namespace) -> None:
    """onnxruntime's dynamic quantization: int8 per-channel weights, activations quantized at run time."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(source, target, per_channel=True, weight_type=QuantType.QInt8)


def _ort_static_qdq(source: Path, target: Path, args: argparse.Namespace) -> None:
    """onnxruntime's static QDQ quantization (S8S8, per-channel) after its recommended pre-processing."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from onnxopt.data import make_feeds
    from onnxopt.model_io import read_proto

    class FeedsReader(CalibrationDataReader):
        """onnxopt's DATA batches: the very data onnxopt's own int8 preset calibrates on."""

        def __init__(self, model_path: Path) -> None:
            self._feeds = make_feeds(read_proto(model_path), args.calib, args.batch_size)
            self._iterator: Iterator[dict] = iter(self._feeds)

        def get_next(self) -> dict | None:
            return next(self._iterator, None)

        def rewind(self) -> None:
            self._iterator = iter(self._feeds)

    if args.calib is None:
        raise SystemExit("ort-static-qdq needs --calib DATA")
    with tempfile.TemporaryDirectory(prefix="bench-qdq-") as folder:
        prepared = Path(folder) / "prepared.onnx"
        try:
            quant_pre_process(str(source), str(prepared))
        except Exception as error:  # what its docs suggest when symbolic shape inference gives up
            note(f"quant_pre_process failed ({type(error).__name__}: {str(error).splitlines()[0]}); "
                 "retried with skip_symbolic_shape=True")
            quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        quantize_static(prepared, target, FeedsReader(prepared), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)


def _fp16_converter(source: Path, target: Path, args: argparse.Namespace) -> None:
    """onnxconverter-common's float16 conversion, keeping fp32 inputs and outputs."""
    from onnxconverter_common import float16

    onnx.save(float16.convert_float_to_float16(onnx.load(source), keep_io_types=True), target)


def _onnxsim(source: Path, target: Path, args: argparse.Namespace) -> None:
    """onnx-simplifier with its defaults (constant folding, shape inference, onnxoptimizer fusions)."""
    from onnxsim import simplify

    simplified, checked = simplify(onnx.load(source))
    if not checked:
        raise SystemExit("onnxsim: its own output check failed")
    onnx.save(simplified, target)


def _onnxslim(source: Path, target: Path, args: argparse.Namespace) -> None:
    """onnxslim with its defaults."""
    import onnxslim

    onnx.save(onnxslim.slim(str(source)), target)


def _onnxoptimizer(source: Path, target: Path, args: argparse.Namespace) -> None:
    """onnxoptimizer with its fuse-and-eliminate pass list, the one its README recommends."""
    import onnxoptimizer

    onnx.save(onnxoptimizer.optimize(onnx.load(source), onnxoptimizer.get_fuse_and_elimination_passes()), target)


PEERS: dict[str, Runner] = {
    "ort-dynamic": _ort_dynamic,
    "ort-static-qdq": _ort_static_qdq,
    "fp16-converter": _fp16_converter,
    "onnxsim": _onnxsim,
    "onnxslim": _onnxslim,
    "onnxoptimizer": _onnxoptimizer,
}
NEEDS_CALIBRATION = {"ort-static-qdq"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tool", choices=sorted(PEERS))
    parser.add_argument("source", type=Path)
    parser.add_argument("target", type=Path)
    parser.add_argument("--calib", type=Path, default=None, help="DATA for calibrating static quantization")
    parser.add_argument("--batch-size", type=int, default=1)
    args = parser.parse_args(argv)
    PEERS[args.tool](args.source, args.target, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
