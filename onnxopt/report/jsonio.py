"""The JSON rendering, and reading a saved report back.

The JSON file is the report itself (every other rendering can be made from it later with
``onnxopt report FILE``), so it is written complete, with the envelope of
``onnxopt.report.schema`` and only standard JSON values (non-finite floats as strings).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from onnxopt.errors import BadInputError
from onnxopt.report.schema import json_safe, validate


def to_json(doc: Mapping[str, Any]) -> str:
    """Standard JSON (no NaN/Infinity tokens), indented, ending in a newline."""
    return json.dumps(json_safe(doc), indent=2, allow_nan=False) + "\n"


def load_report(path: str | Path) -> dict[str, Any]:
    """A saved report, validated; BadInputError with one line for a missing, broken or foreign file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BadInputError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise BadInputError(f"{path}: cannot read ({error})") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as error:
        raise BadInputError(f"{path}: not JSON ({error.msg} at line {error.lineno})") from None
    try:
        validate(doc)
    except BadInputError as error:
        raise BadInputError(f"{path}: {error}") from None
    return doc
