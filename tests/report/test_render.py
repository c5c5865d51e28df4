"""HTML, Markdown and terminal renderings of real optimize reports."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from rich.console import Console

from onnxopt.report import render_html, renderables, to_markdown
from onnxopt.report.htmlkit import esc as kit_escaped
from tests.report.conftest import EVIL


def _decision_rows(html: str, table_id: str) -> list[str]:
    table = re.search(rf"<table class='sortable' id='{table_id}'>(.*?)</table>", html, re.S)
    assert table, f"no table {table_id}"
    return re.findall(r"<tr>(.*?)</tr>", table.group(1), re.S)[1:]  # minus the header row


def test_the_html_page_stands_alone_with_charts_and_decision_tables(int8_doc):
    html = render_html(int8_doc)
    assert html.startswith("<!doctype html>") and "Content-Security-Policy" in html
    assert not re.search(r"""(src|href)\s*=\s*['"]?(https?:)?//""", html), "no network resource"
    assert "@import" not in html and "url(" not in html
    for heading in ("Before / after", "Passes", "Error per output", "What each pass did"):
        assert f"<h2>{heading}</h2>" in html
    svgs = re.findall(r"<svg.*?</svg>", html, re.S)
    assert len(svgs) >= 6, "bytes by dtype/op, nodes by op, timeline, errors, decisions"
    for svg in svgs:
        ET.fromstring(svg)
    qdq = next(p for p in int8_doc["passes"] if p["name"] == "qdq")
    rows = _decision_rows(html, f"decisions-{int8_doc['passes'].index(qdq) + 1}")
    assert len(rows) == len(qdq["stats"]["decisions"])
    assert "time ratio to float" in html
    assert "island_time_ratios" not in html and "{'" not in html, "no Python dicts printed as text"


def test_fp32_decisions_show_their_reason(fp16_doc):
    fp16 = next(p for p in fp16_doc["passes"] if p["name"] == "fp16")
    kept = fp16["stats"]["decisions"]
    assert {row["decision"] for row in kept} == {"fp32"}
    gemms = [row for row in kept if row["op"] == "Gemm"]
    assert len(gemms) == 2 and all("op:Gemm" in row["reason"] for row in gemms), gemms
    html = render_html(fp16_doc)
    assert all(kit_escaped(row["reason"]) in html for row in kept)


def test_hostile_names_are_escaped_everywhere(evil_doc):
    fp16 = next(p for p in evil_doc["passes"] if p["name"] == "fp16")
    assert fp16["stats"]["decisions"][0]["node"] == EVIL
    html = render_html(evil_doc)
    assert "<script>alert" not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in html
    assert html.count("<script>") == 1, "only the page's own script"
    lines = to_markdown(evil_doc).splitlines()
    index = next(i for i, line in enumerate(lines) if line.startswith("| node") and "alert" in lines[i + 2])
    header, row = lines[index], lines[index + 2]
    assert "<script>" not in row and "\\|" in row
    unescaped = re.compile(r"(?<!\\)\|")
    assert len(unescaped.split(row)) == len(unescaped.split(header)), "the pipe in the name does not add a cell"
    console = Console(width=100, record=True)
    for renderable in renderables(evil_doc):
        console.print(renderable)
    assert "alert" in console.export_text()


def test_markdown_has_the_summary_passes_and_decisions(int8_doc):
    markdown = to_markdown(int8_doc)
    assert "| file size |" in markdown and "## Passes" in markdown
    assert "## qdq: per-node decisions" in markdown and "time_ratio" in markdown


def _lines(doc: dict, width: int, report: str | None = None) -> list[str]:
    console = Console(width=width, record=True, color_system=None)
    for renderable in renderables(doc, report):
        console.print(renderable)
    return console.export_text().splitlines()


def test_terminal_tables_fit_80_columns_and_point_to_the_report(int8_doc):
    lines = _lines(int8_doc, 80, "r.html")
    assert max(len(line) for line in lines) <= 80
    assert any("decisions:" in line for line in lines)
    assert any("per-node decisions" in line for line in lines)
    assert not any(line.strip() in (",", "}") for line in lines), "nothing folded mid-value"
    qdq = next(p for p in int8_doc["passes"] if p["name"] == "qdq")
    stats_lines = [line for line in lines if "=" in line]
    assert any(f"candidates={qdq['stats']['candidates']}" in line for line in stats_lines)


def test_long_decision_lists_are_cut_with_a_see_report_line(int8_doc):
    qdq = next(p for p in int8_doc["passes"] if p["name"] == "qdq")
    many = {**int8_doc, "passes": [{**qdq, "stats": {**qdq["stats"], "decisions": [
        {"node": f"/layer{i}/Conv", "op": "Conv", "decision": "int8", "reason": "faster in int8", "time_ratio": 0.5}
        for i in range(40)]}}]}
    console = Console(width=80, record=True)
    from onnxopt.report.terminal import optimize_renderables

    for renderable in optimize_renderables(many, None, max_rows=5):
        console.print(renderable)
    text = console.export_text()
    assert "/layer4/Conv" in text and "/layer5/Conv" not in text
    assert "35 more of 40 rows: see --report" in text
