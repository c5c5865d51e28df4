"""A BERT-shaped encoder with seeded random weights (the graph MiniLM uses, at BERT's sizes).

Same inputs and output as MiniLM (``input_ids``, ``attention_mask``, ``token_type_ids`` ->
``last_hidden_state``) and the same graph builder (``models.transformer``); weights are
drawn as BERT initialises them (normal, std 0.02) with small non-zero biases and
LayerNorm parameters near (1, 0), so bias and normalisation ops carry real values.

Sizes: ``tiny`` (2 layers, hidden 64: for tests), ``small`` (4 layers, hidden 256),
``base`` (BERT-base: 12 layers, hidden 768, 12 heads, intermediate 3072, vocab 30522).

Run ``python -m models.bert OUT.onnx --size base [--pooled]``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

from models.builder import run_cli, write_model
from models.transformer import EncoderConfig, bert_encoder

SEED = 768
INIT_STD = 0.02

SIZES = {
    "tiny": EncoderConfig(vocab_size=1000, hidden_size=64, num_layers=2, num_heads=4, intermediate_size=256,
                          max_positions=128),
    "small": EncoderConfig(vocab_size=30522, hidden_size=256, num_layers=4, num_heads=4, intermediate_size=1024),
    "base": EncoderConfig(vocab_size=30522, hidden_size=768, num_layers=12, num_heads=12, intermediate_size=3072),
}
SEQUENCE_LENGTHS = {"tiny": 32, "small": 128, "base": 128}


def _normal(rng: np.random.Generator, shape: tuple[int, ...], std: float = INIT_STD, mean: float = 0.0) -> np.ndarray:
    return (rng.standard_normal(shape, dtype=np.float32) * np.float32(std) + np.float32(mean)).astype(np.float32)


def random_weights(config: EncoderConfig, seed: int = SEED) -> dict[str, np.ndarray]:
    """BertModel-named weights (Linear weights ``[out, in]``), drawn from ``seed``."""
    rng = np.random.default_rng(seed)
    hidden, inner = config.hidden_size, config.intermediate_size
    weights = {
        "embeddings.word_embeddings.weight": _normal(rng, (config.vocab_size, hidden)),
        "embeddings.position_embeddings.weight": _normal(rng, (config.max_positions, hidden)),
        "embeddings.token_type_embeddings.weight": _normal(rng, (config.type_vocab_size, hidden)),
    }

    def layer_norm(prefix: str) -> None:
        weights[f"{prefix}.weight"] = _normal(rng, (hidden,), 0.05, 1.0)
        weights[f"{prefix}.bias"] = _normal(rng, (hidden,))

    def linear(prefix: str, out_features: int, in_features: int) -> None:
        weights[f"{prefix}.weight"] = _normal(rng, (out_features, in_features))
        weights[f"{prefix}.bias"] = _normal(rng, (out_features,))

    layer_norm("embeddings.LayerNorm")
    for index in range(config.num_layers):
        prefix = f"encoder.layer.{index}"
        for part in ("query", "key", "value"):
            linear(f"{prefix}.attention.self.{part}", hidden, hidden)
        linear(f"{prefix}.attention.output.dense", hidden, hidden)
        layer_norm(f"{prefix}.attention.output.LayerNorm")
        linear(f"{prefix}.intermediate.dense", inner, hidden)
        linear(f"{prefix}.output.dense", hidden, inner)
        layer_norm(f"{prefix}.output.LayerNorm")
    return weights


def build(path: str | os.PathLike[str], size: str = "base", pooled: bool = False, seed: int = SEED) -> Path:
    """Write a random-weight BERT encoder at ``size`` to ``path``."""
    config = SIZES[size]
    proto = bert_encoder(config, random_weights(config, seed), f"bert-{size}", pooled=pooled,
                         doc_string=f"BERT-shaped encoder ({size}), seeded random weights")
    return write_model(proto, path)


def sample_token_inputs(vocab_size: int, sequence_length: int, batch_size: int, seed: int,
                        with_token_types: bool = True) -> dict[str, np.ndarray]:
    """Token ids with right padding of random length (at least half the sequence kept)."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, vocab_size, size=(batch_size, sequence_length), dtype=np.int64)
    lengths = rng.integers(max(1, sequence_length // 2), sequence_length + 1, size=batch_size)
    mask = (np.arange(sequence_length)[None, :] < lengths[:, None]).astype(np.int64)
    feed = {"input_ids": ids * mask, "attention_mask": mask}
    if with_token_types:
        feed["token_type_ids"] = np.zeros_like(ids)
    return feed


def sample_inputs(size: str = "base", batch_size: int = 1, seed: int = 0,
                  sequence_length: int | None = None) -> dict[str, np.ndarray]:
    return sample_token_inputs(SIZES[size].vocab_size, sequence_length or SEQUENCE_LENGTHS[size], batch_size, seed)


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pooled", action="store_true", help="output sentence_embedding (mean pool + L2 norm)")
    parser.add_argument("--seed", type=int, default=SEED)


if __name__ == "__main__":
    run_cli(__doc__.splitlines()[0], build, _arguments)
