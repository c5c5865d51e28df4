"""Write files so that a reader never sees half of one: a temporary file beside the target, then a rename.

``model_io.save`` writes models (and their external data) through it; converters and exporters write
other artefacts (a converted ModelProto, an ``.ort`` flatbuffer, a TensorRT engine, a
reduced-operator config). A failure part-way leaves the target as it was, and a group of
files (a model and the config beside it) is renamed only once all of them are complete.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from onnxopt.errors import BadInputError


def check_output_folder(path: Path) -> None:
    """The folder of an output path must exist (we never create folders silently)."""
    if not path.resolve().parent.is_dir():
        raise BadInputError(f"{path}: output folder does not exist")


@contextlib.contextmanager
def staged_outputs(targets: list[Path]) -> Iterator[list[Path]]:
    """Yield temporary paths beside ``targets``; on normal exit rename each onto its target.

    Temporary files live in the targets' folders (same file system, so the rename is
    atomic) and are removed if the block raises.
    """
    temps: list[Path] = []
    try:
        for target in targets:
            check_output_folder(target)
            handle, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.resolve().parent)
            os.close(handle)
            temps.append(Path(name))
        yield temps
        mode = 0o666 & ~_umask()  # mkstemp's 0600 would hide the file from other users
        for temp, target in zip(temps, targets, strict=True):
            os.chmod(temp, mode)
            os.replace(temp, target)
        temps.clear()
    finally:
        for temp in temps:
            with contextlib.suppress(OSError):
                temp.unlink()


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def write_bytes_atomically(path: Path, payload: bytes) -> int:
    """Write ``payload`` to ``path`` atomically; returns the byte count."""
    with staged_outputs([path]) as (temp,):
        temp.write_bytes(payload)
    return len(payload)


def copy_atomically(source: Path, target: Path) -> int:
    """Copy ``source`` onto ``target`` atomically (streamed); returns the byte count."""
    with staged_outputs([target]) as (temp,):
        shutil.copyfile(source, temp)
    return target.stat().st_size
