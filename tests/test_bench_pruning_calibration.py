"""bench.pruning_calibration: the data-scaling extrapolation and the table it writes."""

from __future__ import annotations

import pytest

from bench.pruning_calibration import ShareRow, markdown, unlimited_data_estimate


def _rows(floor: float, slope: float) -> list[ShareRow]:
    rows = []
    for share, tokens in ((0.25, 2000), (0.5, 4000), (1.0, 8000)):
        row = ShareRow(share, int(share * 600), tokens, optimize_wall_s=60.0)
        row.held_out_mean = 1.0 - (floor + slope / tokens)
        row.held_out_min, row.fitted_mean = row.held_out_mean - 0.05, 0.995
        row.unused_mean = None if share == 1.0 else row.held_out_mean + 0.002
        rows.append(row)
    return rows


def test_estimate_recovers_the_floor_of_an_exact_power_law():
    assert unlimited_data_estimate(_rows(0.02, 30.0)) == pytest.approx(0.98, abs=1e-9)


def test_estimate_leaves_failed_shares_out():
    rows = _rows(0.02, 30.0)
    rows[1].status, rows[1].held_out_mean = "failed", 0.5
    assert unlimited_data_estimate(rows) == pytest.approx(0.98, abs=1e-9)


def test_estimate_needs_two_measured_shares():
    rows = _rows(0.02, 30.0)
    for row in rows[1:]:
        row.held_out_mean = None
    assert unlimited_data_estimate(rows) is None


def test_table_has_a_row_per_share_and_marks_failures():
    rows = _rows(0.02, 16.0)
    rows[1].status, rows[1].note = "failed", "exit 2"
    header = {"command": "python -m bench.pruning_calibration", "date": "2026-11-29", "machine": "x86_64",
              "cpu_flags": "avx2, fma", "onnxruntime": "1.31.1"}
    text = markdown(rows, header, unlimited_data_estimate(rows))
    assert "| 0.25 | 150 | 2000 | 0.9720 |" in text
    assert "| 0.50 | 300 | 4000 | failed: exit 2 |" in text
    assert "| 1.00 | 600 | 8000 | 0.9780 |" in text and "| — |" in text
    assert "CPU flags: avx2, fma" in text and "mean cosine ≈ 0.98" in text
