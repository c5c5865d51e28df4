"""``onnxopt report REPORT.json [-o OUT]``: render a saved report (optimize, bench or tune).

The JSON report is the record; this command makes the other renderings from it later —
a standalone HTML page with charts, Markdown, or tables on the terminal — so a run made
on a server can be read on a laptop without running anything again.
"""

from __future__ import annotations

from pathlib import Path

import click

from onnxopt.cli.console import stderr, stdout
from onnxopt.cli.errors import handle_errors


@click.command("report")
@click.argument("report_path", type=click.Path(path_type=Path))
@click.option("-o", "--output", "output_path", type=click.Path(path_type=Path),
              help="Write OUT: .html (standalone page with charts), .md or .json. Without it: tables here.")
@click.option("--rows", "max_rows", default=8, show_default=True, type=click.IntRange(min=1),
              help="Per-node decision rows shown on the terminal per pass.")
@handle_errors
def report(report_path: Path, output_path: Path | None, max_rows: int) -> None:
    """Render REPORT_PATH, a JSON report written by optimize --report, bench --json or tune."""
    from onnxopt.report import load_report, renderables, write_report

    doc = load_report(report_path)
    if output_path is None:
        for renderable in renderables(doc, str(report_path), max_rows=max_rows):
            stdout.print(renderable)
        return
    if output_path.resolve() == report_path.resolve():
        from onnxopt.errors import BadInputError

        raise BadInputError("the output is the input report; give another file name")
    write_report(doc, output_path)
    stderr.print(f"wrote {output_path} ({doc.get('kind') or 'report'})")
