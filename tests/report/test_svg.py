"""SVG charts: one drawn element per data point, escaped labels, sane scales."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET

from onnxopt.report.svg import Point, Series, TimelineSpan, bar_chart, nice_ticks, scatter_chart, timeline_chart

NS = {"svg": "http://www.w3.org/2000/svg"}


def _parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)  # well-formed XML, or this raises


def _marks(root: ET.Element, klass: str) -> list[ET.Element]:
    return [e for e in root.iter() if klass in (e.get("class") or "").split()]


def test_a_bar_chart_draws_one_bar_per_value_and_escapes_labels():
    labels = ["<b>&x</b>", "plain", "missing"]
    svg = bar_chart(labels, [Series("before", [3.0, 1.0, None]), Series("after", [1.5, 2.0, 4.0])],
                    reference=1.0, title="t <&>")
    root = _parse(svg)
    bars = _marks(root, "bar")
    assert len(bars) == 5 == int(root.get("data-points"))
    assert {b.get("data-label") for b in bars} == set(labels)
    assert "<b>" not in svg and "&lt;b&gt;&amp;x&lt;/b&gt;" in svg
    widths = {(b.get("data-label"), b.get("data-series")): float(b.get("width")) for b in bars}
    assert widths[("<b>&x</b>", "before")] > widths[("plain", "before")], "bars grow with their value"
    assert _marks(root, "reference")


def test_a_log_bar_chart_and_a_capped_one():
    svg = bar_chart([f"n{i}" for i in range(100)], {"error": [10.0 ** -(i % 6) for i in range(100)]},
                    log_scale=True, max_bars=30, title="errors")
    root = _parse(svg)
    assert len(_marks(root, "bar")) == 30
    assert "first 30 of 100" in svg


def test_a_scatter_marks_the_front_and_skips_non_finite_points():
    points = [Point(1, 5, "a"), Point(2, 2, "b"), Point(3, 3, "c"), Point(math.inf, 1, "d")]
    root = _parse(scatter_chart(points, x_label="latency", y_label="size", front=[0, 1]))
    assert len(_marks(root, "point")) == 3
    assert {e.get("data-label") for e in _marks(root, "pareto-point")} == {"a", "b"}
    assert len(_marks(root, "pareto")) == 1


def test_a_timeline_draws_each_span_and_its_tail():
    spans = [TimelineSpan("fold", 0.0, 0.5, 0.6, "ok"), TimelineSpan("cse", 0.6, 0.7, None, "unchanged")]
    root = _parse(timeline_chart(spans))
    assert [e.get("data-label") for e in _marks(root, "span")] == ["fold", "cse"]
    assert len(_marks(root, "tail")) == 1


def test_nice_ticks_are_round_and_cover_the_range():
    ticks = nice_ticks(0, 0.93)
    assert ticks[0] <= 0 and ticks[-1] >= 0.93 and all(round(t / 0.2, 9).is_integer() for t in ticks)
