"""Fidelity metrics for the sample models, each run through onnxruntime.

- MiniLM: per-sentence cosine between the model's sentence embeddings and the reference
  PyTorch embeddings (mean and minimum), plus the hidden-state error where the reference
  holds hidden states.
- digits: top-1 accuracy on the held-out split (``models.digits.top1_accuracy``).
- everything else: output error of a candidate against the fp32 original on the same
  inputs (max abs, max rel, cosine).

Every function takes a path, a ModelProto, an onnxopt Model or an InferenceSession.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.digits import top1_accuracy
from models.sessions import ModelLike, output_names, session_for
from onnxopt.errors import BadInputError

MINILM_REFERENCE = Path(__file__).resolve().parent.parent / "tests" / "data" / "minilm_reference.npz"
MINILM_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
# Sample-input functions of the random-weight builders, by cache name.
SAMPLE_INPUT_MODULES = {"resnet18": "models.resnet", "resnet50": "models.resnet", "mobilenetv2": "models.mobilenet",
                        "bert": "models.bert", "gpt2": "models.gpt2", "large_mlp": "models.large_mlp"}

__all__ = ["OutputError", "minilm_cosine", "minilm_hidden_state_error", "output_error", "sample_feeds",
           "top1_accuracy"]


def load_minilm_reference(path: str | Path | None = None) -> dict[str, np.ndarray]:
    """The reference arrays; ``last_hidden_state_rows`` says which sentences' hidden states are kept."""
    with np.load(path or MINILM_REFERENCE) as archive:
        reference = {name: archive[name] for name in archive.files}
    if "last_hidden_state" in reference and "last_hidden_state_rows" not in reference:
        reference["last_hidden_state_rows"] = np.arange(len(reference["last_hidden_state"]))
    return reference


def mean_pool_normalize(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """sentence-transformers' pooling in numpy: masked mean over tokens, then L2 normalisation."""
    weights = mask[..., None].astype(np.float32)
    mean = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
    return mean / np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12)


def _row_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a.reshape(len(a), -1).astype(np.float64)
    b = b.reshape(len(b), -1).astype(np.float64)
    return (a * b).sum(axis=1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-300)


def _run_minilm(session, reference: dict[str, np.ndarray], rows: np.ndarray, batch_size: int) -> dict[str, np.ndarray]:
    available = output_names(session)
    wanted = [name for name in ("sentence_embedding", "last_hidden_state") if name in available]
    if not wanted:
        raise BadInputError(f"MiniLM model has neither sentence_embedding nor last_hidden_state (has {available})")
    collected: dict[str, list[np.ndarray]] = {name: [] for name in wanted}
    input_names = [i.name for i in session.get_inputs()]
    for start in range(0, len(rows), batch_size):
        batch = rows[start : start + batch_size]
        feed = {name: reference[name][batch] for name in MINILM_INPUTS if name in input_names}
        for name, value in zip(wanted, session.run(wanted, feed), strict=True):
            collected[name].append(value)
    return {name: np.concatenate(values) for name, values in collected.items()}


def minilm_embeddings(model: ModelLike, tokens: dict[str, np.ndarray], batch_size: int = 16) -> np.ndarray:
    """Sentence embeddings of tokenized sentences: the model's ``sentence_embedding`` output, or
    its ``last_hidden_state`` pooled the way sentence-transformers does."""
    rows = np.arange(len(tokens["input_ids"]))
    outputs = _run_minilm(session_for(model), tokens, rows, batch_size)
    if "sentence_embedding" in outputs:
        return outputs["sentence_embedding"]
    return mean_pool_normalize(outputs["last_hidden_state"], tokens["attention_mask"])


def minilm_cosine(model: ModelLike, reference: str | Path | dict[str, np.ndarray] | None = None,
                  batch_size: int = 16) -> dict[str, float]:
    """Per-sentence cosine of the model's embeddings to the reference: ``mean_cosine``, ``min_cosine``.

    Embeddings as ``minilm_embeddings`` makes them. Also reports ``max_abs_error`` of the embeddings.
    """
    reference = reference if isinstance(reference, dict) else load_minilm_reference(reference)
    embeddings = minilm_embeddings(model, reference, batch_size)
    expected = reference["sentence_embedding"]
    cosine = _row_cosine(embeddings, expected)
    return {"mean_cosine": float(cosine.mean()), "min_cosine": float(cosine.min()),
            "max_abs_error": float(np.abs(embeddings - expected).max()), "sentences": len(embeddings)}


def minilm_hidden_state_error(model: ModelLike, reference: str | Path | dict[str, np.ndarray] | None = None,
                              batch_size: int = 16) -> dict[str, float]:
    """``max_abs_error`` and per-sentence ``min_cosine`` of ``last_hidden_state`` (all 128 positions)."""
    reference = reference if isinstance(reference, dict) else load_minilm_reference(reference)
    session = session_for(model)
    if "last_hidden_state" not in output_names(session):
        raise BadInputError("model has no last_hidden_state output (the pooled variant?)")
    rows = np.asarray(reference["last_hidden_state_rows"])
    hidden = _run_minilm(session, reference, rows, batch_size)["last_hidden_state"]
    expected = reference["last_hidden_state"]
    return {"max_abs_error": float(np.abs(hidden - expected).max()),
            "min_cosine": float(_row_cosine(hidden, expected).min()), "sentences": len(rows)}


@dataclass
class OutputError:
    """Worst error over all outputs and feeds.

    ``max_rel`` is the largest absolute error divided by the largest reference magnitude
    of that output (element-wise relative error means nothing where outputs cross zero);
    ``cosine`` is over each output's values from all feeds flattened together.
    """

    max_abs: float
    max_rel: float
    cosine: float
    per_output: dict[str, dict[str, float]]

    def as_dict(self) -> dict[str, float]:
        return {"max_abs": self.max_abs, "max_rel": self.max_rel, "cosine": self.cosine}


def output_error(model: ModelLike, reference_model: ModelLike,
                 feeds: dict[str, np.ndarray] | Iterable[dict[str, np.ndarray]]) -> OutputError:
    """Compare ``model`` with ``reference_model`` on the same ``feeds``, output by output."""
    candidate, reference = session_for(model), session_for(reference_model)
    names = output_names(reference)
    missing = [name for name in names if name not in output_names(candidate)]
    if missing:
        raise BadInputError(f"model lacks output(s) {', '.join(missing)} of the reference")
    feeds = [feeds] if isinstance(feeds, dict) else list(feeds)
    if not feeds:
        raise BadInputError("output_error needs at least one feed")
    stats = {name: {"max_abs": 0.0, "scale": 0.0, "dot": 0.0, "norm_a": 0.0, "norm_b": 0.0} for name in names}
    for feed in feeds:
        got = dict(zip(names, candidate.run(names, feed), strict=True))
        want = dict(zip(names, reference.run(names, feed), strict=True))
        for name in names:
            a, b = np.asarray(got[name], dtype=np.float64), np.asarray(want[name], dtype=np.float64)
            if a.shape != b.shape:
                raise BadInputError(f"output {name!r}: shape {list(a.shape)} differs from reference {list(b.shape)}")
            entry = stats[name]
            entry["max_abs"] = max(entry["max_abs"], float(np.abs(a - b).max(initial=0.0)))
            entry["scale"] = max(entry["scale"], float(np.abs(b).max(initial=0.0)))
            entry["dot"] += float((a * b).sum())
            entry["norm_a"] += float((a * a).sum())
            entry["norm_b"] += float((b * b).sum())
    per_output = {}
    for name, entry in stats.items():
        norms = np.sqrt(entry["norm_a"] * entry["norm_b"])
        cosine = entry["dot"] / norms if norms > 0 else float(entry["norm_a"] == entry["norm_b"])
        relative = entry["max_abs"] / entry["scale"] if entry["scale"] > 0 else entry["max_abs"]
        per_output[name] = {"max_abs": entry["max_abs"], "max_rel": relative, "cosine": float(cosine)}
    return OutputError(
        max_abs=max(v["max_abs"] for v in per_output.values()),
        max_rel=max(v["max_rel"] for v in per_output.values()),
        cosine=min(v["cosine"] for v in per_output.values()),
        per_output=per_output,
    )


def sample_feeds(name: str, size: str = "tiny", batch_size: int = 1, count: int = 1,
                 seed: int = 0) -> list[dict[str, np.ndarray]]:
    """``count`` feeds for a random-weight sample model, on the distribution it was built for."""
    if name not in SAMPLE_INPUT_MODULES:
        raise BadInputError(f"no sample inputs for {name!r} (choose from {', '.join(SAMPLE_INPUT_MODULES)})")
    module = importlib.import_module(SAMPLE_INPUT_MODULES[name])
    return [module.sample_inputs(size, batch_size, seed + index) for index in range(count)]
