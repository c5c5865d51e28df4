"""The layout promise: the framework holds no pass family's code, and families stay apart.

``onnxopt/`` is the framework; each folder of ``passes/`` is one pass family. A family may
import the framework and itself, never another family (a helper two families need moves
into the framework), and no framework module may import a family: otherwise the folder a
file sits in would no longer say what it serves.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FAMILIES = sorted(path.name for path in (ROOT / "passes").iterdir() if (path / "__init__.py").exists())


def imported_modules(path: Path) -> set[str]:
    """Every absolute module a file imports (``from x import y`` gives ``x`` and ``x.y``)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def family_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[:2] == ["onnxopt", "passes"] and len(parts) > 2 and parts[2] in FAMILIES:
        return parts[2]
    return None


def test_there_are_pass_families():
    assert {"cleanup", "fusion", "precision", "quantization"} <= set(FAMILIES)


@pytest.mark.parametrize("family", FAMILIES)
def test_a_family_imports_no_other_family(family: str):
    offending = []
    for path in sorted((ROOT / "passes" / family).rglob("*.py")):
        for module in imported_modules(path):
            other = family_of(module)
            if other is not None and other != family:
                offending.append(f"{path.relative_to(ROOT)} imports {module}")
    assert not offending, offending


@pytest.mark.parametrize("family", FAMILIES)
def test_a_family_says_how_it_works(family: str):
    doc = ast.get_docstring(ast.parse((ROOT / "passes" / family / "__init__.py").read_text()))
    assert doc and len(doc.splitlines()) >= 5, f"passes/{family}/__init__.py needs a docstring describing the family"


def test_the_framework_imports_no_family():
    offending = []
    for path in sorted((ROOT / "onnxopt").rglob("*.py")):
        for module in imported_modules(path):
            if family_of(module) is not None:
                offending.append(f"{path.relative_to(ROOT)} imports {module}")
    assert not offending, offending


def test_no_family_named_module_in_the_framework():
    prefixes = ("fp16_", "half_", "qdq_", "quant", "weight_only", "dynamic_quant", "gptq", "lowbit", "packing",
                "smoothing", "op_speed", "prune", "winograd", "fft", "cluster")
    allowed = {"fp16_judge.py"}  # verification judges lossy half models with it
    offending = [
        str(path.relative_to(ROOT))
        for path in (ROOT / "onnxopt").rglob("*.py")
        if path.name.startswith(prefixes) and path.name not in allowed
    ]
    assert not offending, offending
