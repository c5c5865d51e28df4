"""How numbers read in every rendering: bytes in KiB/MiB, errors in scientific notation, ratios as ×.

One place, so the terminal, Markdown and HTML show a value the same way. A stat's name
says its unit (``*_bytes``, ``seconds``, ``*_ratio``), as the pass contract asks of option
names; ``format_stat`` uses that to pick the form.
"""

from __future__ import annotations

import math
from typing import Any

from onnxopt.report.schema import as_number


def human_bytes(count: float | int | None) -> str:
    """1536 -> '1.5 KiB'; None -> '-'."""
    if count is None:
        return "-"
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"  # pragma: no cover - the loop returns at TiB


def format_number(value: Any, digits: int = 4) -> str:
    """Integers with thousands separators, floats with ``digits`` significant digits; '-' for None."""
    number = as_number(value)
    if number is None:
        return "-" if value is None else str(value)
    if not math.isfinite(number):
        return "NaN" if math.isnan(number) else ("inf" if number > 0 else "-inf")
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    if number == 0:
        return "0"
    if number == int(number) and abs(number) < 1e15:
        return f"{int(number):,}"
    if abs(number) >= 1000 and abs(number) < 1e9:
        return f"{number:,.1f}"
    if abs(number) >= 1e5 or abs(number) < 1e-3:
        return f"{number:.{max(digits - 1, 1)}e}"
    return f"{number:.{digits}g}"


def format_count(value: Any) -> str:
    """A count with thousands separators (counts arrive as floats after ``as_number``)."""
    number = as_number(value)
    if number is None or not math.isfinite(number) or number != int(number):
        return format_number(value)
    return f"{int(number):,}"


def format_cosine(value: Any) -> str:
    """Cosine similarity with six decimals (what tells 0.99999 from 0.9999 apart)."""
    number = as_number(value)
    return "-" if number is None else f"{number:.6f}"


def format_seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def format_error(value: Any) -> str:
    """Errors in scientific notation ('-' when not measured)."""
    number = as_number(value)
    if number is None:
        return "-"
    if not math.isfinite(number):
        return format_number(number)
    return f"{number:.2e}"


def format_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}×"


def is_bytes_key(key: str) -> bool:
    return key.endswith("bytes") or key.endswith("_bytes_before") or key.endswith("_bytes_after")


def format_stat(key: str, value: Any) -> str:
    """A pass stat as text: bytes humanised, errors in e-notation, counts with separators."""
    number = as_number(value)
    if number is not None and is_bytes_key(key) and math.isfinite(number):
        return human_bytes(number)
    if number is not None and "error" in key:
        return format_error(number)
    if number is not None:
        return format_number(value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def ratio(after: float | None, before: float | None) -> float | None:
    """after/before, or None when either is missing or before is zero."""
    if after is None or before is None or before == 0:
        return None
    return float(after) / float(before)
