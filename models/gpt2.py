"""A GPT-2-shaped decoder stack with seeded random weights and a causal mask.

Inputs ``input_ids`` and ``attention_mask`` (right padding), output ``logits``.
Pre-LayerNorm blocks with fused QKV projection (MatMul + Split), causal mask built from
the sequence length (``Trilu``) and combined with the padding mask, tanh-GELU written out
as exporters emit it, final LayerNorm and the tied language-model head. Weights follow
GPT-2's initialisation: normal with std 0.02, residual projections scaled by
``1/sqrt(2 * layers)``.

Sizes: ``tiny`` (2 layers, hidden 64: for tests), ``small`` (4 layers, hidden 256),
``base`` (GPT-2 small: 12 layers, hidden 768, 12 heads, vocab 50257, 1024 positions).

Run ``python -m models.gpt2 OUT.onnx --size base``.
"""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

import numpy as np

from models.bert import sample_token_inputs
from models.builder import run_cli, write_model
from models.transformer import DecoderConfig, gpt2_decoder

SEED = 124
INIT_STD = 0.02

SIZES = {
    "tiny": DecoderConfig(vocab_size=1000, hidden_size=64, num_layers=2, num_heads=4, max_positions=128),
    "small": DecoderConfig(vocab_size=50257, hidden_size=256, num_layers=4, num_heads=4),
    "base": DecoderConfig(vocab_size=50257, hidden_size=768, num_layers=12, num_heads=12),
}
SEQUENCE_LENGTHS = {"tiny": 32, "small": 128, "base": 128}


def random_weights(config: DecoderConfig, seed: int = SEED) -> dict[str, np.ndarray]:
    """GPT2Model-named weights (Conv1D weights ``[in, out]``), drawn from ``seed``."""
    rng = np.random.default_rng(seed)
    hidden, inner = config.hidden_size, config.intermediate_size
    residual_std = INIT_STD / math.sqrt(2 * config.num_layers)

    def normal(shape: tuple[int, ...], std: float = INIT_STD, mean: float = 0.0) -> np.ndarray:
        return (rng.standard_normal(shape, dtype=np.float32) * np.float32(std) + np.float32(mean)).astype(np.float32)

    weights = {"wte.weight": normal((config.vocab_size, hidden)), "wpe.weight": normal((config.max_positions, hidden),
                                                                                       0.01)}

    def layer_norm(prefix: str) -> None:
        weights[f"{prefix}.weight"] = normal((hidden,), 0.05, 1.0)
        weights[f"{prefix}.bias"] = normal((hidden,))

    def conv1d(prefix: str, in_features: int, out_features: int, std: float = INIT_STD) -> None:
        weights[f"{prefix}.weight"] = normal((in_features, out_features), std)
        weights[f"{prefix}.bias"] = normal((out_features,))

    for index in range(config.num_layers):
        prefix = f"h.{index}"
        layer_norm(f"{prefix}.ln_1")
        conv1d(f"{prefix}.attn.c_attn", hidden, 3 * hidden)
        conv1d(f"{prefix}.attn.c_proj", hidden, hidden, residual_std)
        layer_norm(f"{prefix}.ln_2")
        conv1d(f"{prefix}.mlp.c_fc", hidden, inner)
        conv1d(f"{prefix}.mlp.c_proj", inner, hidden, residual_std)
    layer_norm("ln_f")
    return weights


def build(path: str | os.PathLike[str], size: str = "base", seed: int = SEED) -> Path:
    """Write a random-weight GPT-2-shaped decoder at ``size`` to ``path``."""
    config = SIZES[size]
    proto = gpt2_decoder(config, random_weights(config, seed), f"gpt2-{size}",
                         doc_string=f"GPT-2-shaped decoder ({size}), seeded random weights")
    return write_model(proto, path)


def sample_inputs(size: str = "base", batch_size: int = 1, seed: int = 0,
                  sequence_length: int | None = None) -> dict[str, np.ndarray]:
    return sample_token_inputs(SIZES[size].vocab_size, sequence_length or SEQUENCE_LENGTHS[size], batch_size, seed,
                               with_token_types=False)


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=int, default=SEED)


if __name__ == "__main__":
    run_cli(__doc__.splitlines()[0], build, _arguments)
