"""Packaging: one onnxruntime build only, and the pass package installed as onnxopt.passes."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import subprocess
import sys
from pathlib import Path


def _installed(name: str) -> bool:
    try:
        importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def test_onnxruntime_and_onnxruntime_gpu_are_never_installed_together() -> None:
    # They ship the same files and overwrite each other; no extra may pull in the second one.
    assert _installed("onnxruntime") != _installed("onnxruntime-gpu")


def test_passes_are_installed_under_onnxopt_not_as_a_top_level_module(tmp_path: Path) -> None:
    spec = importlib.util.find_spec("onnxopt.passes")
    assert spec is not None and spec.origin is not None
    assert Path(spec.origin).parent.name == "passes"
    # Outside the source tree, a top-level ``passes`` must not be importable.
    done = subprocess.run(
        [sys.executable, "-c", "import passes"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0 and "No module named 'passes'" in done.stderr
    done = subprocess.run(
        [sys.executable, "-c", "import onnxopt.passes as p; print(len(p.all_passes()))"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and int(done.stdout) >= 10, done.stderr


def test_the_wheel_holds_every_module_of_the_framework_and_of_every_pass_family(tmp_path: Path) -> None:
    # A non-editable install must ship each pass family's folder, not only the top of onnxopt.passes.
    import zipfile

    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(root), "--no-deps", "-q", "-w", str(tmp_path)],
        capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr
    (wheel,) = tmp_path.glob("onnxopt-*.whl")
    shipped = set(zipfile.ZipFile(wheel).namelist())
    expected = set()
    for source, installed in (("onnxopt", "onnxopt"), ("passes", "onnxopt/passes")):
        folder = root / source
        expected |= {f"{installed}/{path.relative_to(folder).as_posix()}" for path in folder.rglob("*.py")}
    missing = sorted(expected - shipped)
    assert not missing, missing
