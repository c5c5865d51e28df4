"""Streamed statistics for refitting a layer against the teacher: ``[x, 1]ᵀ[x, 1]`` and ``[x, 1]ᵀ y_teacher``.

Recovery refits a consumer (the layer that reads the pruned units) so that, on its *own*
inputs ``x`` — the pruned model's activations, which drift from the original's as layers
are pruned — it reproduces the *teacher's* output ``y`` (the original model's activation
of the same name). Least squares needs only two sums, accumulated batch by batch:

* ``gram  = Σ [x, 1]ᵀ [x, 1]``  ((K+1)², the input second moments with a constant column,
  so the bias is refitted too: that is the bias compensation for removed units' mean);
* ``cross = Σ [x, 1]ᵀ y``       ((K+1)·N), and ``Σ ‖y‖²`` to express errors as a fraction.

The student and the teacher run side by side on the same feed (two onnxruntime sessions);
only one batch of activations exists at a time. A Conv consumer's input is unfolded into
its kernel patches (rows ``[C·kh·kw]``, channel-major like the weight), a MatMul/Gemm
consumer's input is read row by row; padded token positions (an ``attention_mask`` input)
are left out, as in ``onnxopt.input_statistics``.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import onnxruntime as ort

from onnxopt.activations import with_extra_outputs
from onnxopt.model_io import Model
from onnxopt.passes.pruning.coupling import Consumer
from onnxopt.runtime import create_session

logger = logging.getLogger(__name__)


@dataclass
class ConsumerStatistics:
    """Sums over calibration rows of one consumer (see the module docstring).

    ``folds``: the same sums over the even and the odd batches, so that a refit fitted on
    one half can be judged on the other (two-fold cross-validation); empty for a fold itself.
    """

    gram: np.ndarray
    cross: np.ndarray
    target_energy: float
    rows: int
    folds: list[ConsumerStatistics] = field(default_factory=list)

    @property
    def features(self) -> int:
        return self.gram.shape[0] - 1


class Unsupported(Exception):
    """The consumer's input cannot be read as rows (e.g. a 3-D or auto-padded convolution)."""


def _conv_geometry(consumer: Consumer) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int, int, int], tuple]:
    node = consumer.node
    kernel = tuple(int(d) for d in node.inputs[1].shape[2:]) if node.inputs[1].shape is not None else ()
    if len(kernel) != 2:
        raise Unsupported(f"Conv {node.name!r}: only 2-D convolutions are unfolded")
    if node.attrs.get("auto_pad", "NOTSET") not in ("NOTSET", b"NOTSET"):
        raise Unsupported(f"Conv {node.name!r}: auto_pad")
    strides = tuple(int(v) for v in node.attrs.get("strides", [1, 1]))
    dilations = tuple(int(v) for v in node.attrs.get("dilations", [1, 1]))
    pads = tuple(int(v) for v in node.attrs.get("pads", [0, 0, 0, 0]))
    return kernel, strides, pads, dilations


def unfold(consumer: Consumer, x: np.ndarray) -> np.ndarray:
    """The consumer's input as ``[rows, K]`` with K in the order of ``consumer_weight_kn``'s rows."""
    node = consumer.node
    if node.op == "MatMul":
        return x.reshape(-1, x.shape[-1])
    if node.op == "Gemm":
        return x.T if int(node.attrs.get("transA", 0)) else x
    kernel, strides, pads, dilations = _conv_geometry(consumer)
    padded = np.pad(x, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    span = tuple((k - 1) * d + 1 for k, d in zip(kernel, dilations, strict=True))
    windows = np.lib.stride_tricks.sliding_window_view(padded, span, axis=(2, 3))
    windows = windows[:, :, :: strides[0], :: strides[1], :: dilations[0], :: dilations[1]]
    batch, channels, out_h, out_w = windows.shape[:4]
    return windows.transpose(0, 2, 3, 1, 4, 5).reshape(batch * out_h * out_w, channels * kernel[0] * kernel[1])


def output_rows(consumer: Consumer, y: np.ndarray) -> np.ndarray:
    """The consumer's output as ``[rows, N]``, rows matching ``unfold``'s."""
    if consumer.node.op == "Conv":
        return y.transpose(0, 2, 3, 1).reshape(-1, y.shape[1])
    return y.reshape(-1, y.shape[-1])


def _row_mask(consumer: Consumer, x: np.ndarray, mask: np.ndarray | None) -> np.ndarray | None:
    if mask is None or consumer.node.op != "MatMul" or x.shape[:-1] != mask.shape:
        return None
    return np.asarray(mask).reshape(-1) != 0


class _Sums:
    """Running sums of one fold."""

    def __init__(self) -> None:
        self.gram: np.ndarray | None = None
        self.cross: np.ndarray | None = None
        self.energy = 0.0
        self.rows = 0

    def add(self, augmented: np.ndarray, targets: np.ndarray) -> None:
        if self.gram is None:
            self.gram = np.zeros((augmented.shape[1],) * 2)
            self.cross = np.zeros((augmented.shape[1], targets.shape[1]))
        self.gram += (augmented.T @ augmented).astype(np.float64)
        self.cross += (augmented.T @ targets).astype(np.float64)
        self.energy += float(np.sum(targets.astype(np.float64) ** 2))
        self.rows += augmented.shape[0]

    def result(self) -> ConsumerStatistics | None:
        if self.gram is None or self.rows == 0:
            return None
        return ConsumerStatistics(self.gram, self.cross, self.energy, self.rows)


class Accumulator:
    """Running sums for one consumer, kept per fold (batches alternate between the two)."""

    def __init__(self, consumer: Consumer) -> None:
        self.consumer = consumer
        self.folds = [_Sums(), _Sums()]
        self.batches = 0

    def add(self, x: np.ndarray, y: np.ndarray, mask: np.ndarray | None) -> None:
        features = unfold(self.consumer, np.asarray(x, dtype=np.float32))
        targets = output_rows(self.consumer, np.asarray(y, dtype=np.float32))
        if features.shape[0] != targets.shape[0]:
            raise Unsupported(f"{self.consumer.node.name!r}: {features.shape[0]} input rows, "
                              f"{targets.shape[0]} output rows")
        keep = _row_mask(self.consumer, np.asarray(x), mask)
        if keep is not None:
            features, targets = features[keep], targets[keep]
        augmented = np.concatenate([features, np.ones((features.shape[0], 1), np.float32)], axis=1)
        self.folds[self.batches % 2].add(augmented, targets)
        self.batches += 1

    def result(self) -> ConsumerStatistics | None:
        parts = [fold.result() for fold in self.folds]
        present = [part for part in parts if part is not None]
        if not present:
            return None
        total = ConsumerStatistics(sum(p.gram for p in present), sum(p.cross for p in present),
                                   sum(p.target_energy for p in present), sum(p.rows for p in present))
        total.folds = present if len(present) == 2 else []
        return total


class TeacherRunner:
    """One session of the teacher exposing every consumer output any group will ask for."""

    def __init__(self, teacher: Model, names: Iterable[str]) -> None:
        wanted = list(dict.fromkeys(names))
        self.session: ort.InferenceSession = create_session(with_extra_outputs(teacher, wanted))
        self.available = {output.name for output in self.session.get_outputs()}
        self.inputs = [item.name for item in self.session.get_inputs()]

    def run(self, names: list[str], feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        values = self.session.run(names, {name: feed[name] for name in self.inputs})
        return dict(zip(names, values, strict=True))


def _limited(feeds: Iterable[dict[str, np.ndarray]], max_batches: int) -> Iterator[dict[str, np.ndarray]]:
    return itertools.islice(iter(feeds), max_batches) if max_batches > 0 else iter(feeds)


def collect_consumer_statistics(student: Model, teacher: TeacherRunner, consumers: list[Consumer],
                                feeds: Iterable[dict[str, np.ndarray]], mask_input: str | None = None,
                                max_batches: int = 0,
                                residuals: list[str | None] | None = None) -> list[ConsumerStatistics | None]:
    """Stream ``feeds`` through the student and the teacher once; sums for each consumer (None: unsupported).

    ``residuals[i]`` names the tensor that consumer ``i``'s output is added to (a residual
    stream), or None. Its target is then ``y_teacher + (r_teacher − r_student)``: the layer
    also makes up for the drift that earlier pruning left in the stream it adds to.
    """
    residuals = residuals or [None] * len(consumers)
    input_names = [consumer.input.name for consumer in consumers]
    output_names = [consumer.node.outputs[0].name for consumer in consumers]
    residual_names = [name for name in residuals if name]
    missing = [name for name in [*output_names, *residual_names] if name not in teacher.available]
    if missing:
        raise Unsupported(f"the teacher has no tensor {missing[0]!r}")
    session = create_session(with_extra_outputs(student, [*input_names, *residual_names]))
    student_inputs = [item.name for item in session.get_inputs()]
    accumulators: list[Accumulator | None] = [Accumulator(consumer) for consumer in consumers]
    wanted_student = list(dict.fromkeys([*input_names, *residual_names]))
    wanted_teacher = list(dict.fromkeys([*output_names, *residual_names]))
    for feed in _limited(feeds, max_batches):
        values = session.run(wanted_student, {name: feed[name] for name in student_inputs})
        xs = dict(zip(wanted_student, values, strict=True))
        ys = teacher.run(wanted_teacher, feed)
        mask = feed.get(mask_input) if mask_input else None
        for index, consumer in enumerate(consumers):
            accumulator = accumulators[index]
            if accumulator is None:
                continue
            target = ys[consumer.node.outputs[0].name]
            residual = residuals[index]
            if residual:
                drift = ys[residual] - xs[residual]
                if drift.shape != target.shape:
                    accumulators[index] = None
                    continue
                target = target + drift
            try:
                accumulator.add(xs[consumer.input.name], target, mask)
            except Unsupported as why:
                logger.info("no statistics for %s: %s", consumer.node.name, why)
                accumulators[index] = None
    return [accumulator.result() if accumulator is not None else None for accumulator in accumulators]


def collect_input_grams(model: Model, consumers: list[Consumer], feeds: Iterable[dict[str, np.ndarray]],
                        mask_input: str | None = None, max_batches: int = 0) -> list[np.ndarray | None]:
    """``XᵀX`` of each consumer's unfolded input (rows as ``unfold`` reads them), in one streamed pass.

    What SparseGPT and Wanda need; unlike ``onnxopt.input_statistics`` it also unfolds
    Conv inputs into kernel patches, so convolution weights get their real statistics.
    """
    names = list(dict.fromkeys(consumer.input.name for consumer in consumers))
    session = create_session(with_extra_outputs(model, names))
    model_inputs = [item.name for item in session.get_inputs()]
    sums: list[np.ndarray | None] = [None] * len(consumers)
    failed = [False] * len(consumers)
    for feed in _limited(feeds, max_batches):
        values = dict(zip(names, session.run(names, {name: feed[name] for name in model_inputs}), strict=True))
        mask = feed.get(mask_input) if mask_input else None
        for index, consumer in enumerate(consumers):
            if failed[index]:
                continue
            x = np.asarray(values[consumer.input.name], dtype=np.float32)
            try:
                rows = unfold(consumer, x)
            except Unsupported as why:
                logger.info("no statistics for %s: %s", consumer.node.name, why)
                failed[index] = True
                continue
            keep = _row_mask(consumer, x, mask)
            if keep is not None:
                rows = rows[keep]
            gram = (rows.T @ rows).astype(np.float64)
            sums[index] = gram if sums[index] is None else sums[index] + gram
    return [None if failed[index] else sums[index] for index in range(len(consumers))]
