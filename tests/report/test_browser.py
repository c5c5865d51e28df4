"""The HTML reports in a real browser: headless Chromium driven by Selenium.

Skipped, with the reason, where Selenium or Chromium/chromedriver is missing (CI may lack
them): ``apt-get install chromium chromium-driver`` and the ``dev`` extra provide them.
``ONNXOPT_CHROMIUM`` and ``ONNXOPT_CHROMEDRIVER`` point at other binaries. Screenshots go
to ``<pytest basetemp>/report-screenshots/`` (``--basetemp DIR`` keeps them in DIR).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from onnxopt.report import render_html

CHROMIUM = os.environ.get("ONNXOPT_CHROMIUM") or next(
    (path for name in ("chromium", "chromium-browser", "google-chrome") if (path := shutil.which(name))), None)
DRIVER = os.environ.get("ONNXOPT_CHROMEDRIVER") or shutil.which("chromedriver")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync")
MARKS = ".bar, .point, .span"


@pytest.fixture(scope="module")
def browser():
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[dev]')")
    if not CHROMIUM or not DRIVER:
        pytest.skip("no headless Chromium here: install Debian's chromium and chromium-driver "
                    "(or set ONNXOPT_CHROMIUM / ONNXOPT_CHROMEDRIVER)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="onnxopt-chromium-")
    for flag in (*FLAGS, f"--user-data-dir={profile}", "--window-size=1280,1600"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    try:
        # The console check must be able to fail: an error logged by a page has to show up.
        driver.get("data:text/html,<script>console.error('onnxopt-probe')</script>")
        assert any("onnxopt-probe" in entry["message"] for entry in driver.get_log("browser"))
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory) -> Path:
    folder = tmp_path_factory.getbasetemp() / "report-screenshots"
    folder.mkdir(exist_ok=True)
    return folder


def open_page(driver, html: str, path: Path) -> list[dict]:
    """Load ``html`` from a file and return what the console logged while loading."""
    path.write_text(html)
    driver.get_log("browser")  # drop entries of earlier pages
    driver.get(path.as_uri())
    return [entry for entry in driver.get_log("browser") if entry["level"] in ("SEVERE", "WARNING")]


def chart_marks(driver) -> list[dict]:
    """For every chart: the points it declares, the marks drawn, and how many of them have a visible box."""
    return driver.execute_script(f"""
        return Array.from(document.querySelectorAll('svg.chart')).map(function (svg) {{
            var marks = Array.from(svg.querySelectorAll('{MARKS}'));
            return {{declared: parseInt(svg.getAttribute('data-points'), 10), drawn: marks.length,
                     visible: marks.filter(function (m) {{ var r = m.getBoundingClientRect();
                                                          return r.width > 0 && r.height > 0; }}).length,
                     title: svg.querySelector('title').textContent}};
        }});""")


def column_values(driver, table_id: str, column: str) -> list[str]:
    return driver.execute_script("""
        var table = document.getElementById(arguments[0]), name = arguments[1];
        var index = Array.from(table.tHead.rows[0].cells).findIndex(function (th) { return th.textContent === name; });
        return Array.from(table.tBodies[0].rows).filter(function (row) { return !row.hidden; })
            .map(function (row) { var cell = row.cells[index];
                                  return cell.getAttribute('data-sort') || cell.textContent; });""",
                                 table_id, column)


def screenshot(driver, path: Path) -> Path:
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1280, min(height + 40, 12000))
    driver.save_screenshot(str(path))
    driver.set_window_size(1280, 1600)
    assert path.stat().st_size > 10_000
    return path


def _decision_table_id(doc: dict, name: str) -> str:
    index = next(i for i, record in enumerate(doc["passes"]) if record["name"] == name)
    return f"decisions-{index + 1}"


def test_int8_report_renders_charts_and_its_decision_table_sorts_and_filters(browser, int8_doc, tmp_path,
                                                                              screenshots, record_property):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    errors = open_page(browser, render_html(int8_doc), tmp_path / "int8.html")
    assert errors == [], errors
    charts = chart_marks(browser)
    assert len(charts) >= 6
    for chart in charts:
        assert chart["drawn"] == chart["declared"] > 0 and chart["visible"] == chart["drawn"], chart
    qdq = next(p for p in int8_doc["passes"] if p["name"] == "qdq")
    rows = qdq["stats"]["decisions"]
    ratio_chart = next(c for c in charts if "time ratio" in c["title"])
    assert ratio_chart["drawn"] == sum(1 for row in rows if "time_ratio" in row)

    table_id = _decision_table_id(int8_doc, "qdq")
    header = browser.find_element(By.CSS_SELECTOR, f"#{table_id} th[title='sort by time_ratio']")
    header.click()
    ascending = [float(v) for v in column_values(browser, table_id, "time_ratio")]
    assert ascending == sorted(ascending) and len(ascending) == len(rows)
    assert header.get_attribute("aria-sort") == "ascending"
    header.click()
    assert [float(v) for v in column_values(browser, table_id, "time_ratio")] == sorted(ascending, reverse=True)
    browser.find_element(By.CSS_SELECTOR, f"#{table_id} th[title='sort by node']").click()
    nodes = column_values(browser, table_id, "node")
    assert nodes == sorted(nodes, key=str.lower)

    box = browser.find_element(By.XPATH, f"//table[@id='{table_id}']/ancestor::div[@class='data-table']")
    facet = Select(box.find_element(By.CSS_SELECTOR, "select.facet"))
    facet.select_by_value("int8")
    decided = column_values(browser, table_id, "decision")
    assert decided == ["int8"] * sum(1 for row in rows if row["decision"] == "int8")
    facet.select_by_value("")
    box.find_element(By.CSS_SELECTOR, "input.filter").send_keys("Gemm")
    assert set(column_values(browser, table_id, "op")) == {"Gemm"}
    assert box.find_element(By.CSS_SELECTOR, ".row-count").text.endswith(f"of {len(rows)} rows")
    box.find_element(By.CSS_SELECTOR, "input.filter").clear()

    shot = screenshot(browser, screenshots / "int8-digits.png")
    record_property("screenshot", str(shot))


def test_fp16_report_shows_fp32_decisions(browser, fp16_doc, tmp_path, screenshots):
    errors = open_page(browser, render_html(fp16_doc), tmp_path / "fp16.html")
    assert errors == [], errors
    table_id = _decision_table_id(fp16_doc, "fp16")
    assert set(column_values(browser, table_id, "decision")) == {"fp32"}
    assert "Gemm" in column_values(browser, table_id, "op")
    screenshot(browser, screenshots / "fp16-digits.png")


def test_hostile_names_stay_text(browser, evil_doc, tmp_path):
    from onnxopt.report.htmlkit import esc
    from tests.report.conftest import EVIL

    errors = open_page(browser, render_html(evil_doc), tmp_path / "evil.html")
    assert errors == [], errors
    assert browser.execute_script("return document.scripts.length") == 1
    assert browser.execute_script("return document.images.length") == 0
    assert EVIL in column_values(browser, _decision_table_id(evil_doc, "fp16"), "node")
    assert esc(EVIL) not in browser.execute_script("return document.body.innerText")


def test_tune_page_marks_the_pareto_front(browser, tmp_path, screenshots):
    trials = [{"id": f"t{i}", "config": f"--preset int8 -O qdq.max_error={e}", "status": "ok",
               "latency_ms": lat, "size_bytes": size, "error": e}
              for i, (lat, size, e) in enumerate([(10.0, 4e6, 1e-6), (4.0, 1.1e6, 2e-3), (5.0, 1.2e6, 1e-3),
                                                  (9.0, 0.7e6, 5e-2), (6.0, 1.5e6, 3e-3)])]
    trials.append({"id": "broken", "status": "failed", "reason": "verification failed"})
    doc = {"kind": "tune", "schema_version": 1, "model": "m.onnx",
           "objectives": ["latency_ms", "size_bytes", "error"], "trials": trials}
    errors = open_page(browser, render_html(doc), tmp_path / "tune.html")
    assert errors == [], errors
    charts = chart_marks(browser)
    assert [c["drawn"] for c in charts] == [5, 5]
    front = browser.execute_script("return Array.from(document.querySelectorAll('svg.chart')).map("
                                   "function (s) { return s.querySelectorAll('.pareto-point').length; })")
    assert front == [4, 4], "t4 is beaten by t2 in all three objectives"
    assert browser.execute_script("return document.querySelectorAll('polyline.pareto').length") == 2
    screenshot(browser, screenshots / "tune.png")


@pytest.mark.slow
@pytest.mark.parametrize("run", ["minilm-fp16", "resnet18-int8"])
def test_readme_runs_open_in_chromium(browser, run, tmp_path, screenshots, record_property):
    """The Must-show runs: MiniLM (real weights) through fp16, ResNet-18 through int8 with calibration."""
    import numpy as np

    from onnxopt import optimize

    if run == "minilm-fp16":
        from models.minilm import build

        source = build(tmp_path / "minilm.onnx", pooled=True)
        result = optimize(source, tmp_path / "out.onnx", preset="fp16", verify=True)
        name, decision = "fp16", "fp32"
    else:
        from models.resnet import build, sample_inputs

        source = build(tmp_path / "resnet18.onnx", size="small", arch="resnet18")
        np.savez(tmp_path / "calib.npz", **sample_inputs("small", 16, seed=1))
        result = optimize(source, tmp_path / "out.onnx", preset="int8", calib=tmp_path / "calib.npz", verify=True)
        name, decision = "qdq", "int8"
    doc = result.as_dict()
    errors = open_page(browser, render_html(doc), tmp_path / f"{run}.html")
    assert errors == [], errors
    charts = chart_marks(browser)
    assert len(charts) >= 6 and all(c["drawn"] == c["declared"] == c["visible"] > 0 for c in charts), charts
    decided = column_values(browser, _decision_table_id(doc, name), "decision")
    assert decision in decided and len(decided) == len(next(p for p in doc["passes"] if p["name"] == name)
                                                          ["stats"]["decisions"])
    record_property("screenshot", str(screenshot(browser, screenshots / f"{run}.png")))
