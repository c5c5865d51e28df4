"""Writing a report in the format its file name asks for (.json, .md, .html).

One entry point for ``optimize --report``, ``bench --report``, ``onnxopt report -o`` and
``tune``: the suffix picks the renderer, and the file is written whole or not at all
(temporary file, then rename), so a reader never opens half a report.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from onnxopt.atomic_files import write_bytes_atomically
from onnxopt.errors import BadInputError
from onnxopt.report.html import render_html
from onnxopt.report.jsonio import to_json
from onnxopt.report.markdown import to_markdown

FORMATS = {".json": "json", ".md": "markdown", ".markdown": "markdown", ".html": "html", ".htm": "html"}


def format_for(path: Path) -> str:
    """The format a report file name asks for; BadInputError for any other suffix."""
    try:
        return FORMATS[path.suffix.lower()]
    except KeyError:
        raise BadInputError(f"{path}: use a .json, .md or .html file name for a report") from None


def render(doc: Mapping[str, Any], fmt: str) -> str:
    """``doc`` rendered as ``json``, ``markdown`` or ``html``."""
    if fmt == "json":
        return to_json(doc)
    if fmt == "markdown":
        return to_markdown(doc)
    if fmt == "html":
        return render_html(doc)
    raise ValueError(f"unknown report format {fmt!r}")


def write_report(doc: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Render ``doc`` in the format of ``path``'s suffix and write it atomically."""
    path = Path(path)
    text = render(doc, format_for(path))
    write_bytes_atomically(path, text.encode("utf-8"))
    return path
