"""PEP 517 build backend: scikit-build-core, with one change to editable installs.

Everything is delegated to ``scikit_build_core.build`` (CMake builds the kernel library, see
``native/CMakeLists.txt``). The one change: scikit-build-core's editable wheel writes a ``.pth`` that,
besides importing its redirecting finder, puts the parent folder of every package source on
``sys.path`` (for Cython's cimports). With ``onnxopt.passes`` mapped from the top-level ``passes/``
folder, that parent is the repository root (and for a nested key, the folder above it), so a bare
``import passes`` - or any other top-level folder of the checkout - would resolve from anywhere. The
finder alone resolves ``onnxopt`` and ``onnxopt.passes`` (including subpackages added after the
install), so we keep only its ``import`` line. Non-editable wheels are untouched.
"""

from __future__ import annotations

import base64
import hashlib
import os
import zipfile

from scikit_build_core.build import *  # noqa: F403  (re-export every hook)
from scikit_build_core.build import build_editable as _build_editable


def build_editable(wheel_directory: str, config_settings: dict | None = None,
                   metadata_directory: str | None = None) -> str:
    name = _build_editable(wheel_directory, config_settings, metadata_directory)
    _keep_only_imports_in_pth(os.path.join(wheel_directory, name))
    return name


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"sha256={digest}"


def _keep_only_imports_in_pth(path: str) -> None:
    with zipfile.ZipFile(path) as source:
        entries = [(info, source.read(info.filename)) for info in source.infolist()]
    changed = {}
    for info, data in entries:
        if info.filename.endswith(".pth") and "/" not in info.filename:
            lines = data.decode().splitlines()
            kept = [line for line in lines if line.startswith("import ")]
            if kept != lines:
                changed[info.filename] = ("\n".join(kept) + "\n").encode()
    if not changed:
        return
    temporary = path + ".tmp"
    with zipfile.ZipFile(temporary, "w", zipfile.ZIP_DEFLATED) as target:
        for info, data in entries:
            if info.filename in changed:
                data = changed[info.filename]
            elif info.filename.endswith(".dist-info/RECORD"):
                rows = []
                for row in data.decode().splitlines():
                    file, _, _ = row.partition(",")
                    if file in changed:
                        row = f"{file},{_record_hash(changed[file])},{len(changed[file])}"
                    rows.append(row)
                data = ("\n".join(rows) + "\n").encode()
            target.writestr(info, data)
    os.replace(temporary, path)
