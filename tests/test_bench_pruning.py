"""bench.pruning: --merge keeps other models' rows (with where they came from); sections name the size."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

from bench.pruning import Row, _kept_rows, markdown


def _header(command: str, date: str) -> dict:
    return {"command": command, "date": date, "machine": "x86_64", "cpu_flags": "avx2", "onnxruntime": "1.0",
            "jobs": 1}


def test_merge_keeps_rows_of_models_not_measured_now_and_says_when_they_were(tmp_path):
    earlier = [Row("gpt2", "original (unpruned)", size="base", parameters=10, note="latency at batch 1"),
               Row("gpt2", "2:4 sparsity", size="base", parameters=10),
               Row("minilm", "original (unpruned)", parameters=5)]
    (tmp_path / "pruning.json").write_text(json.dumps({"header": _header("python -m bench.pruning --models gpt2",
                                                                          "2026-11-29 15:00 UTC"),
                                                        "rows": [asdict(row) for row in earlier]}))
    arguments = argparse.Namespace(out=tmp_path, models="minilm,digits")
    kept = _kept_rows(arguments)
    assert [(row.model, row.variant) for row in kept] == [("gpt2", "original (unpruned)"), ("gpt2", "2:4 sparsity")]
    assert kept[0].note == ("latency at batch 1; measured 2026-11-29 15:00 UTC: "
                            "`python -m bench.pruning --models gpt2`")
    text = markdown(kept, _header("python -m bench.pruning --models minilm,digits --merge", "2026-11-29 16:00 UTC"))
    assert "## gpt2 (base)" in text and "| 2:4 sparsity | 0.00 M |" in text
    assert "measured 2026-11-29 15:00 UTC" in text


def test_merge_without_an_earlier_run_keeps_nothing(tmp_path):
    assert _kept_rows(argparse.Namespace(out=tmp_path, models="gpt2")) == []
