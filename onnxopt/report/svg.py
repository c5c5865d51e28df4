"""Charts as inline SVG, generated in Python from plain data: bar charts, scatter plots, timelines.

Why SVG strings and not a charting library: a report must be one file that opens offline
in any browser and prints; SVG needs no script to draw, scales, and prints sharp. Each
function takes plain Python data (labels, numbers) and returns an ``<svg>`` element as a
string, so any page (optimize, bench, tune) can place it. Every drawn data point carries
``class`` (``bar``, ``point``, ``span``), ``data-label`` and ``data-value`` attributes and a
``<title>`` tooltip: readers hover for exact values, and tests can count what was drawn.

All text is escaped here: labels come from models (node names can hold anything).

Public API (documented in docs/reports.md): ``bar_chart``, ``scatter_chart``,
``timeline_chart``, ``Series``, ``Point``, ``TimelineSpan``, ``PALETTE``, ``color_for``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from html import escape
from typing import Any

from onnxopt.report.format import format_number, human_bytes

# Okabe–Ito: distinguishable with the common colour-vision deficiencies, and in greyscale print.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#999999", "#332288")
# Colours with a fixed meaning, so "float" looks the same in every pass's chart.
NAMED_COLORS = {
    "ok": "#009E73", "unchanged": "#BBBBBB", "rolled back": "#E69F00", "error": "#D55E00",
    "int8": "#009E73", "int4": "#009E73", "fp16": "#009E73", "bf16": "#009E73", "binary": "#009E73",
    "ternary": "#009E73", "float": "#E69F00", "fp32": "#E69F00", "kept": "#999999", "pruned": "#D55E00",
    "before": "#999999", "after": "#0072B2",
}
WIDTH = 760
FONT = "font-family='system-ui, sans-serif' font-size='11'"
Formatter = Callable[[float], str]


def color_for(name: str, index: int = 0) -> str:
    """A stable colour: the named one when the name has a meaning, else the palette by index."""
    return NAMED_COLORS.get(name, PALETTE[index % len(PALETTE)])


@dataclass(frozen=True)
class Series:
    """One bar series: a name and one value per label (None: no bar)."""

    name: str
    values: Sequence[float | None]
    color: str | None = None


@dataclass(frozen=True)
class Point:
    """One scatter point; ``group`` picks its colour."""

    x: float
    y: float
    label: str
    group: str = ""


@dataclass(frozen=True)
class TimelineSpan:
    """A bar from ``start`` to ``end`` seconds, then a lighter tail to ``tail_end`` (e.g. verification)."""

    label: str
    start: float
    end: float
    tail_end: float | None = None
    group: str = ""


def _attr(value: Any) -> str:
    return escape(str(value), quote=True)


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: max(limit - 1, 1)] + "…"


def _finite(values: Sequence[float | None]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(v)]


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About ``count`` round tick values covering [low, high]."""
    if not (math.isfinite(low) and math.isfinite(high)) or high <= low:
        return [low] if math.isfinite(low) else [0.0]
    raw = (high - low) / max(count, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.floor(low / step) * step
    ticks, value = [], first
    while value <= high + step * 1e-9:
        ticks.append(round(value, 12))
        value += step
    if ticks[-1] < high:
        ticks.append(ticks[-1] + step)
    return ticks


class _Scale:
    """Maps data values to pixels, linear or log10."""

    def __init__(self, values: Sequence[float], pixel_low: float, pixel_high: float, log: bool,
                 include: Sequence[float] = (), binary: bool = False) -> None:
        self.log = log
        data = [v for v in [*values, *include] if math.isfinite(v) and (v > 0 or not log)]
        if log:
            low = min(data, default=1.0)
            high = max(data, default=10.0)
            self.ticks = [10.0 ** e for e in range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1)]
            if len(self.ticks) < 2:
                self.ticks.append(self.ticks[0] * 10)
        else:
            low, high = min([0.0, *data]), max([0.0, *data])
            if high == low:
                high = low + 1.0
            # Byte axes tick at round KiB/MiB/GiB values, not at round decimal byte counts.
            unit = 1024.0 ** max(0, math.floor(math.log(max(abs(low), abs(high)), 1024))) if binary else 1.0
            self.ticks = [tick * unit for tick in nice_ticks(low / unit, high / unit)]
        self.low, self.high = self.ticks[0], self.ticks[-1]
        self.pixel_low, self.pixel_high = pixel_low, pixel_high

    def _t(self, value: float) -> float:
        return math.log10(value) if self.log else value

    def __call__(self, value: float) -> float:
        if self.log and value <= 0:
            return self.pixel_low
        value = min(max(value, self.low), self.high)
        span = self._t(self.high) - self._t(self.low) or 1.0
        fraction = (self._t(value) - self._t(self.low)) / span
        return self.pixel_low + fraction * (self.pixel_high - self.pixel_low)


def _svg_open(height: float, title: str, kind: str, count: int) -> list[str]:
    return [
        f"<svg xmlns='http://www.w3.org/2000/svg' class='chart {kind}' role='img' data-points='{count}' "
        f"viewBox='0 0 {WIDTH} {height:.0f}' width='100%' style='max-width:{WIDTH}px' {FONT}>",
        f"<title>{escape(title)}</title>",
    ]


def _legend(names: Sequence[tuple[str, str]], x: float, y: float) -> list[str]:
    parts, offset = [], x
    for name, color in names:
        parts.append(f"<rect x='{offset:.1f}' y='{y - 9:.1f}' width='10' height='10' fill='{color}'/>"
                     f"<text x='{offset + 14:.1f}' y='{y:.1f}'>{escape(name)}</text>")
        offset += 24 + 7 * len(name)
    return parts


def bar_chart(
    labels: Sequence[str],
    series: Sequence[Series] | Mapping[str, Sequence[float | None]],
    *,
    title: str = "",
    formatter: Formatter = format_number,
    reference: float | None = None,
    reference_label: str = "",
    log_scale: bool = False,
    bar_colors: Sequence[str] | None = None,
    max_bars: int = 60,
    binary: bool = False,
) -> str:
    """Horizontal bars, one row per label, one bar per series in each row.

    ``series`` is a list of ``Series`` or a mapping name -> values. ``bar_colors`` colours a
    single series bar by bar (e.g. by decision). ``reference`` draws a vertical line (e.g.
    1.0 for a time ratio). Only the first ``max_bars`` labels are drawn; the title says so.
    ``binary`` puts the ticks at round powers of 1024 (for byte counts).
    """
    if isinstance(series, Mapping):
        series = [Series(name, list(values)) for name, values in series.items()]
    series = list(series)
    shown = list(labels)[:max_bars]
    if len(labels) > len(shown):
        title = f"{title} (first {len(shown)} of {len(labels)})"
    bar_height = 14 if len(series) == 1 else 9
    row_height = bar_height * len(series) + 6
    label_width, value_width = 230, 70
    top = 26 if len(series) > 1 else 10
    plot_left, plot_right = label_width + 10, WIDTH - value_width
    height = top + row_height * len(shown) + 30
    values = [v for s in series for v in _finite(list(s.values)[: len(shown)])]
    include = [reference] if reference is not None else []
    scale = _Scale(values, plot_left, plot_right, log_scale, include, binary)
    count = sum(1 for s in series for v in list(s.values)[: len(shown)] if v is not None)
    parts = _svg_open(height, title, "bar-chart", count)
    if len(series) > 1:
        parts += _legend([(s.name, s.color or color_for(s.name, i)) for i, s in enumerate(series)], plot_left, 14)
    bottom = top + row_height * len(shown)
    for tick in scale.ticks:
        x = scale(tick)
        parts.append(f"<line x1='{x:.1f}' y1='{top - 4}' x2='{x:.1f}' y2='{bottom:.1f}' stroke='#e3e3e3'/>"
                     f"<text x='{x:.1f}' y='{bottom + 14:.1f}' text-anchor='middle' fill='#555'>"
                     f"{escape(formatter(tick))}</text>")
    for row, label in enumerate(shown):
        y = top + row * row_height
        parts.append(f"<text x='{label_width:.0f}' y='{y + row_height / 2 + 3:.1f}' text-anchor='end'>"
                     f"<title>{escape(str(label))}</title>{escape(_short(str(label), 38))}</text>")
        for index, item in enumerate(series):
            value = list(item.values)[row] if row < len(item.values) else None
            if value is None:
                continue
            color = item.color or color_for(item.name, index)
            if bar_colors is not None and len(series) == 1 and row < len(bar_colors):
                color = bar_colors[row]
            x0 = scale(scale.low if log_scale else max(scale.low, 0.0))
            x1 = scale(value) if math.isfinite(value) else plot_right
            left, width = min(x0, x1), max(abs(x1 - x0), 1.0)
            by = y + 3 + index * bar_height
            text = formatter(value)
            name = f"{item.name}: " if len(series) > 1 else ""
            parts.append(
                f"<rect class='bar' data-label='{_attr(label)}' data-series='{_attr(item.name)}' "
                f"data-value='{_attr(value)}' x='{left:.1f}' y='{by:.1f}' width='{width:.1f}' "
                f"height='{bar_height - 2}' fill='{color}'><title>{escape(str(label))} — {escape(name)}"
                f"{escape(text)}</title></rect>"
                f"<text x='{max(x0, x1) + 4:.1f}' y='{by + bar_height - 4:.1f}' fill='#333'>{escape(text)}</text>")
    if reference is not None:
        x = scale(reference)
        parts.append(f"<line class='reference' x1='{x:.1f}' y1='{top - 6}' x2='{x:.1f}' y2='{bottom + 2:.1f}' "
                     f"stroke='#D55E00' stroke-dasharray='4 3'/>"
                     f"<text x='{x + 3:.1f}' y='{top - 8 if top > 12 else bottom + 26:.1f}' fill='#D55E00'>"
                     f"{escape(reference_label or formatter(reference))}</text>")
    parts.append("</svg>")
    return "".join(parts)


def _front_line(points: Sequence[Point], indices: Sequence[int], sx: _Scale, sy: _Scale) -> str:
    ordered = sorted((points[i] for i in indices), key=lambda p: (p.x, p.y))
    if len(ordered) < 2:
        return ""
    steps = []
    for previous, point in itertools.pairwise(ordered):
        steps += [(sx(previous.x), sy(previous.y)), (sx(point.x), sy(previous.y)), (sx(point.x), sy(point.y))]
    coords = " ".join(f"{x:.1f},{y:.1f}" for x, y in steps)
    return f"<polyline class='pareto' points='{coords}' fill='none' stroke='#D55E00' stroke-width='1.5'/>"


def scatter_chart(
    points: Sequence[Point],
    *,
    x_label: str,
    y_label: str,
    title: str = "",
    x_formatter: Formatter = format_number,
    y_formatter: Formatter = format_number,
    log_x: bool = False,
    log_y: bool = False,
    front: Sequence[int] = (),
    front_line: Sequence[int] | None = None,
) -> str:
    """Points in x/y; ``front`` (indices) are drawn as Pareto points, ``front_line`` joined by a staircase.

    ``front_line`` defaults to ``front``; give the 2-D front of this projection when the
    front was computed over more objectives than the two axes show.
    """
    height = 380
    left, right, top, bottom = 70, WIDTH - 20, 34, height - 46
    usable = [p for p in points if math.isfinite(p.x) and math.isfinite(p.y)]
    sx = _Scale([p.x for p in usable], left, right, log_x, binary=x_formatter is human_bytes)
    sy = _Scale([p.y for p in usable], bottom, top, log_y, binary=y_formatter is human_bytes)
    parts = _svg_open(height, title, "scatter-chart", len(usable))
    for tick in sx.ticks:
        x = sx(tick)
        parts.append(f"<line x1='{x:.1f}' y1='{top}' x2='{x:.1f}' y2='{bottom}' stroke='#eee'/>"
                     f"<text x='{x:.1f}' y='{bottom + 14}' text-anchor='middle' fill='#555'>"
                     f"{escape(x_formatter(tick))}</text>")
    for tick in sy.ticks:
        y = sy(tick)
        parts.append(f"<line x1='{left}' y1='{y:.1f}' x2='{right}' y2='{y:.1f}' stroke='#eee'/>"
                     f"<text x='{left - 4}' y='{y + 3:.1f}' text-anchor='end' fill='#555'>"
                     f"{escape(y_formatter(tick))}</text>")
    parts.append(f"<rect x='{left}' y='{top}' width='{right - left}' height='{bottom - top}' fill='none' "
                 f"stroke='#888'/><text x='{(left + right) / 2:.0f}' y='{height - 12}' text-anchor='middle'>"
                 f"{escape(x_label)}</text><text x='14' y='{(top + bottom) / 2:.0f}' text-anchor='middle' "
                 f"transform='rotate(-90 14 {(top + bottom) / 2:.0f})'>{escape(y_label)}</text>")
    groups = list(dict.fromkeys(p.group for p in usable if p.group))
    if groups:
        parts += _legend([(g, color_for(g, i)) for i, g in enumerate(groups)], left, 18)
    on_front = set(front)
    line = _front_line(points, [i for i in (front if front_line is None else front_line)
                                if math.isfinite(points[i].x) and math.isfinite(points[i].y)], sx, sy)
    parts.append(line)
    for index, point in enumerate(points):
        if not (math.isfinite(point.x) and math.isfinite(point.y)):
            continue
        color = color_for(point.group, groups.index(point.group)) if point.group else PALETTE[0]
        pareto = index in on_front
        klass = "point pareto-point" if pareto else "point"
        ring = " stroke='#D55E00' stroke-width='2.5'" if pareto else " stroke='white'"
        parts.append(
            f"<circle class='{klass}' data-label='{_attr(point.label)}' data-x='{_attr(point.x)}' "
            f"data-y='{_attr(point.y)}' data-value='{_attr(point.y)}' cx='{sx(point.x):.1f}' cy='{sy(point.y):.1f}' "
            f"r='{6 if pareto else 4.5}' fill='{color}'{ring}><title>{escape(point.label)}: "
            f"{escape(x_label)} {escape(x_formatter(point.x))}, {escape(y_label)} {escape(y_formatter(point.y))}"
            f"{' (Pareto front)' if pareto else ''}</title></circle>")
    parts.append("</svg>")
    return "".join(parts)


def timeline_chart(spans: Sequence[TimelineSpan], *, title: str = "", tail_name: str = "checks",
                   formatter: Formatter | None = None) -> str:
    """One row per span on a shared seconds axis (a Gantt chart); the tail is drawn lighter."""
    fmt = formatter or (lambda seconds: f"{seconds:.3g} s")
    row_height, label_width, top = 18, 200, 24
    left, right = label_width + 10, WIDTH - 20
    height = top + row_height * len(spans) + 30
    end = max([s.tail_end or s.end for s in spans] + [s.end for s in spans] + [1e-6])
    scale = _Scale([0.0, end], left, right, False)
    parts = _svg_open(height, title, "timeline-chart", len(spans))
    groups = list(dict.fromkeys(s.group for s in spans if s.group))
    parts += _legend([(g, color_for(g, i)) for i, g in enumerate(groups)] + [(tail_name, "#cfd8e3")], left, 14)
    bottom = top + row_height * len(spans)
    for tick in scale.ticks:
        x = scale(tick)
        parts.append(f"<line x1='{x:.1f}' y1='{top}' x2='{x:.1f}' y2='{bottom}' stroke='#eee'/>"
                     f"<text x='{x:.1f}' y='{bottom + 14}' text-anchor='middle' fill='#555'>"
                     f"{escape(fmt(tick))}</text>")
    for row, span in enumerate(spans):
        y = top + row * row_height
        color = color_for(span.group, groups.index(span.group)) if span.group else PALETTE[0]
        x0, x1 = scale(span.start), scale(span.end)
        parts.append(f"<text x='{label_width}' y='{y + 12}' text-anchor='end'><title>{escape(span.label)}</title>"
                     f"{escape(_short(span.label, 32))}</text>")
        if span.tail_end is not None and span.tail_end > span.end:
            parts.append(f"<rect class='tail' x='{x1:.1f}' y='{y + 3}' width='{max(scale(span.tail_end) - x1, 1):.1f}' "
                         f"height='{row_height - 6}' fill='#cfd8e3'><title>{escape(span.label)}: {tail_name} "
                         f"{escape(fmt(span.tail_end - span.end))}</title></rect>")
        parts.append(
            f"<rect class='span' data-label='{_attr(span.label)}' data-value='{_attr(span.end - span.start)}' "
            f"x='{x0:.1f}' y='{y + 3}' width='{max(x1 - x0, 1.5):.1f}' height='{row_height - 6}' fill='{color}'>"
            f"<title>{escape(span.label)}: {escape(fmt(span.end - span.start))}"
            f"{' (' + escape(span.group) + ')' if span.group else ''}</title></rect>")
    parts.append("</svg>")
    return "".join(parts)
