"""Trial results cached by what determines them, so a rerun or a larger ``--trials`` resumes.

A trial is a function of (model bytes, calibration DATA, evaluation DATA, configuration,
the measurement settings, onnxopt's version); the cache key is the SHA-256 of those, the
files hashed by content (a renamed copy of a model hits the cache, an edited one does not).
Budgets are not in the key: whether a trial is feasible is decided again from its measured
numbers on every run, so tightening ``--max-error`` reuses every trial.

Layout under the cache folder (``$ONNXOPT_CACHE/tune`` or ``~/.cache/onnxopt/tune``):
``trials/<key>.json`` (one trial's record) and ``models/<key>.onnx`` (its model, kept for the
Pareto front). Writes go through a temporary file and a rename, so concurrent searches
sharing the cache never read half a file. Only trials that ran, and failures that the
configuration itself causes (a pass rolled back, onnxruntime cannot load the result), are
cached; a timeout, an out-of-memory, a crash or a missing file depends on the limits and
the machine, and is tried again. The settings in the key include the hardware class the
driver runs on (CPU model and features, onnxruntime version) and a digest of a user
metric's module: another CPU or an edited metric measures again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx

from onnxopt.external_data import external_info, is_external
from onnxopt.model_io import iter_model_tensor_protos

logger = logging.getLogger(__name__)

def cacheable(record: dict[str, Any]) -> bool:
    """ok trials, and failures that the configuration itself causes (not a missing file, not a limit)."""
    return record.get("status") == "ok" or (record.get("status") == "failed" and bool(record.get("deterministic")))
_CHUNK = 1 << 20


def default_cache_dir() -> Path:
    root = os.environ.get("ONNXOPT_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "onnxopt") / "tune"


def _hash_files(paths: list[Path], root: Path) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        with open(path, "rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
        digest.update(b"\0")
    return digest.hexdigest()


@dataclass(frozen=True)
class FileBundle:
    """A model or a DATA set as files: ``path`` (main file or folder), ``files`` under ``root``, a digest.

    The digest names the bundle on every machine: a worker whose copy at ``path`` has the
    same digest uses it; another gets the bytes through the executor (Ray's object store).
    """

    path: str
    root: str
    files: tuple[str, ...]
    digest: str

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "root": self.root, "files": list(self.files), "digest": self.digest}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FileBundle:
        return cls(data["path"], data["root"], tuple(data["files"]), data["digest"])


def model_bundle(path: str | os.PathLike[str]) -> FileBundle:
    """The model file and the external-data files it names."""
    path = Path(path).resolve()
    proto = onnx.load(str(path), load_external_data=False)
    names = {path.name}
    for tensor in iter_model_tensor_protos(proto):
        if is_external(tensor):
            names.add(external_info(tensor).get("location", ""))
    files = sorted(name for name in names if name)
    return FileBundle(str(path), str(path.parent), tuple(files), _hash_files([path.parent / f for f in files],
                                                                               path.parent))


def data_bundle(path: str | os.PathLike[str]) -> FileBundle:
    """One .npz, or every .npz of a folder."""
    path = Path(path).resolve()
    if path.is_dir():
        files = sorted(p.name for p in path.glob("*.npz"))
        return FileBundle(str(path), str(path), tuple(files), _hash_files([path / f for f in files], path))
    return FileBundle(str(path), str(path.parent), (path.name,), _hash_files([path], path.parent))


def bundle_matches(bundle: FileBundle) -> bool:
    """Whether this machine's copy at ``bundle.path`` holds the same bytes."""
    root = Path(bundle.root)
    paths = [root / name for name in bundle.files]
    if not all(path.is_file() for path in paths):
        return False
    try:
        return _hash_files(paths, root) == bundle.digest
    except OSError:
        return False


def trial_key(model_digest: str, calib_digest: str | None, data_digest: str | None, config_key: str,
              settings: dict[str, Any], version: str) -> str:
    """The cache key of one trial."""
    document = {"model": model_digest, "calib": calib_digest, "data": data_digest, "config": config_key,
                "settings": settings, "onnxopt": version}
    return hashlib.sha256(json.dumps(document, sort_keys=True, default=str).encode()).hexdigest()


def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "w") as out:
            out.write(text)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


class TrialCache:
    """Trial records and models on disk, by key; ``enabled=False`` reads nothing and keeps nothing."""

    def __init__(self, root: Path, enabled: bool = True) -> None:
        self.root = Path(root)
        self.enabled = enabled

    def model_path(self, key: str) -> Path:
        return self.root / "models" / f"{key}.onnx"

    def _record_path(self, key: str) -> Path:
        return self.root / "trials" / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        if not self.enabled:
            return None
        path = self._record_path(key)
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as error:
            logger.warning("ignoring unreadable cached trial %s: %s", path, error)
            return None

    def put(self, key: str, record: dict[str, Any]) -> None:
        if not self.enabled or not cacheable(record):
            return
        atomic_write_text(self._record_path(key), json.dumps(record, indent=1, default=str) + "\n")

    def drop_model(self, key: str) -> None:
        path = self.model_path(key)
        for candidate in (path, path.with_name(path.name + ".data")):
            with contextlib.suppress(FileNotFoundError):
                candidate.unlink()
