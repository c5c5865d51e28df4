"""Reports: one document model, rendered to the terminal, JSON, Markdown and standalone HTML.

A report is a JSON-able document (``OptimizeResult.as_dict()``, ``BenchReport.as_dict()``,
a tune result) with an envelope saying its ``kind`` (``schema``). ``model`` turns it into
typed views once; each rendering is one module: ``terminal`` (rich), ``jsonio`` (the file
itself, and reading it back), ``markdown``, ``html`` (pages built from ``htmlkit`` blocks
and ``svg`` charts). ``files.write_report`` picks the rendering from a file name.

Per-node decisions are the one convention every pass follows: ``stats["decisions"]``, a
list of flat dicts ``{"node", "op", "decision", "reason", <numbers>…}``; they are shown
as sortable, filterable tables with charts without any renderer knowing the pass.

The schema and the renderer API for other tools (``onnxopt tune``) are in docs/reports.md.
"""

from __future__ import annotations

from onnxopt.report.files import format_for, render, write_report
from onnxopt.report.format import human_bytes
from onnxopt.report.html import render_html
from onnxopt.report.jsonio import load_report, to_json
from onnxopt.report.markdown import to_markdown
from onnxopt.report.model import pareto_front, view_of
from onnxopt.report.schema import KINDS, SCHEMA, SCHEMA_VERSION, header, json_safe, validate
from onnxopt.report.terminal import renderables

__all__ = [
    "KINDS",
    "SCHEMA",
    "SCHEMA_VERSION",
    "format_for",
    "header",
    "human_bytes",
    "json_safe",
    "load_report",
    "pareto_front",
    "render",
    "render_html",
    "renderables",
    "to_json",
    "to_markdown",
    "validate",
    "view_of",
    "write_report",
]
