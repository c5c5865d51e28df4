"""The report document's envelope: schema name and version, ``kind``, and JSON-safe values.

Every report onnxopt writes (``optimize --report x.json``, ``bench --json``, and ``tune``)
is one JSON object with the same envelope, so ``onnxopt report FILE`` can tell what it holds
and refuse what it cannot read instead of rendering it wrong. The envelope is documented in
``docs/reports.md``; bump ``SCHEMA_VERSION`` only for changes that break a reader (new keys
do not).

JSON has no NaN or infinity, and browsers and most JSON libraries refuse Python's
``NaN``/``Infinity`` extensions, so non-finite floats are written as the strings ``"nan"``,
``"inf"`` and ``"-inf"`` (readers turn them back into floats with ``as_number``).
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Mapping
from typing import Any

from onnxopt.errors import BadInputError

SCHEMA = "onnxopt.report"
SCHEMA_VERSION = 1
KINDS = ("optimize", "bench", "tune")
NON_FINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("onnxopt")
    except Exception:  # not installed (a source checkout on sys.path)
        return "unknown"


def header(kind: str) -> dict[str, Any]:
    """The envelope keys every report starts with."""
    if kind not in KINDS:
        raise ValueError(f"unknown report kind {kind!r}")
    return {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "kind": kind,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "onnxopt_version": _version(),
    }


def json_safe(value: Any) -> Any:
    """``value`` with non-finite floats as strings, numpy scalars as Python ones, tuples as lists."""
    if isinstance(value, bool) or value is None or isinstance(value, str | int):
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, Mapping):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [json_safe(item) for item in value]
    item = getattr(value, "item", None)  # numpy scalars
    if callable(item):
        try:
            return json_safe(item())
        except (TypeError, ValueError):
            pass
    return str(value)


def as_number(value: Any) -> float | None:
    """A float from a number or a non-finite marker string; None for anything else (bools too)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and value in NON_FINITE:
        return NON_FINITE[value]
    return None


def detect_kind(doc: Mapping[str, Any]) -> str:
    """The document's kind; reports written before the envelope existed are recognised by their keys."""
    kind = doc.get("kind")
    if kind is not None:
        if kind not in KINDS:
            raise BadInputError(f"unknown report kind {kind!r} (this onnxopt reads {', '.join(KINDS)})")
        return str(kind)
    if isinstance(doc.get("passes"), list) and "before" in doc:
        return "optimize"
    if isinstance(doc.get("models"), list) and "config" in doc:
        return "bench"
    if isinstance(doc.get("trials"), list):
        return "tune"
    raise BadInputError("not an onnxopt report: no 'kind', and neither 'passes', 'models' nor 'trials'")


_REQUIRED = {
    "optimize": {"passes": list, "before": dict, "after": dict},
    "bench": {"models": list, "config": dict},
    "tune": {"trials": list},
}


def validate(doc: Any) -> str:
    """Check the envelope and the keys the renderers rely on; returns the kind, or raises BadInputError."""
    if not isinstance(doc, Mapping):
        raise BadInputError("not an onnxopt report: the JSON is not an object")
    if "schema" in doc and doc["schema"] != SCHEMA:
        raise BadInputError(f"not an onnxopt report: schema is {doc['schema']!r}, expected {SCHEMA!r}")
    version = doc.get("schema_version", SCHEMA_VERSION)
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise BadInputError(f"report schema version {version!r} is newer than this onnxopt reads ({SCHEMA_VERSION}); "
                            "upgrade onnxopt")
    kind = detect_kind(doc)
    for key, expected in _REQUIRED[kind].items():
        if not isinstance(doc.get(key), expected):
            raise BadInputError(f"{kind} report: {key!r} missing or not a JSON {expected.__name__}")
    return kind
