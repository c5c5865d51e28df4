"""Shared by the converter tests."""

from __future__ import annotations

from pathlib import Path


def files_in(folder: Path) -> list[str]:
    """Every file in a folder, hidden temporaries included (none may be left behind)."""
    return sorted(path.name for path in folder.iterdir())
