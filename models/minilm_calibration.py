"""Calibration DATA for all-MiniLM-L6-v2 with enough tokens for layer-wise refits.

``tests/data/minilm_calib.npz`` holds 64 sentences as token ids (764 tokens, padded to
128): fewer than one FFN's 1536 inputs, so a least-squares refit of a pruned layer
overfits them. ``tests/data/minilm_calib_sentences.txt`` adds 627 more sentences, none
close to the 48 held-out sentences of ``minilm_reference.npz`` that fidelity is judged on
(``tests/models/test_minilm_calibration.py`` checks). Kept apart from ``models.minilm`` so
that the cached models' build digest (``models.cache``) does not change with the data.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from models.minilm import tokenize
from onnxopt.errors import BadInputError

logger = logging.getLogger(__name__)

DATA_DIR = Path(__file__).resolve().parent.parent / "tests" / "data"
SHIPPED_CALIBRATION = DATA_DIR / "minilm_calib.npz"
CALIBRATION_SENTENCES = DATA_DIR / "minilm_calib_sentences.txt"


def calibration_sentences() -> list[str]:
    """The extra calibration sentences (one a line), beside the 64 of ``minilm_calib.npz``."""
    return [line.strip() for line in CALIBRATION_SENTENCES.read_text().splitlines() if line.strip()]


def extended_calibration(target: str | os.PathLike[str], max_length: int = 24) -> Path:
    """DATA (npz) of the 64 shipped calibration sentences followed by ``calibration_sentences()``.

    Padded to ``max_length`` rather than 128: padded positions are masked out of the
    statistics anyway, and shorter rows make each calibration run several times cheaper.
    About 8,700 tokens in all.
    """
    with np.load(SHIPPED_CALIBRATION) as archive:
        shipped = {name: archive[name] for name in archive.files}
    if shipped["attention_mask"][:, max_length:].any():
        raise BadInputError(f"a shipped calibration sentence is longer than {max_length} tokens")
    extra = tokenize(calibration_sentences(), max_length=max_length)
    if int(extra["attention_mask"][:, -1].sum()):
        logger.warning("some calibration sentences were truncated to %d tokens", max_length)
    arrays = {name: np.concatenate([shipped[name][:, :max_length], extra[name]]) for name in shipped}
    target = Path(target)
    np.savez(target, **arrays)
    return target
