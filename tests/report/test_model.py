"""The report model: decision tables from any pass's rows, the envelope, JSON safety, the Pareto front."""

from __future__ import annotations

import itertools
import json
import math

import pytest

from onnxopt.errors import BadInputError
from onnxopt.report import SCHEMA_VERSION, load_report, pareto_front, to_json, validate, view_of
from onnxopt.report.model import DecisionTable, OptimizeView, TuneView


def test_a_decision_table_takes_the_columns_it_finds_known_ones_first():
    rows = [
        {"op": "Conv", "node": "a", "decision": "winograd-f4", "candidate_ms": 1.5, "note": "x"},
        {"node": "b", "op": "Conv", "decision": "direct", "reason": "faster", "candidate_ms": 2, "kept_units": None},
        {"node": "c", "op": "Conv", "decision": "direct", "candidate_ms": "inf", "kept_units": 7},
    ]
    table = DecisionTable.from_rows(rows)
    assert table.names == ["node", "op", "decision", "reason", "candidate_ms", "note", "kept_units"]
    assert table.numeric_columns() == ["candidate_ms", "kept_units"]
    assert table.counts() == {"direct": 2, "winograd-f4": 1}
    assert table.values("candidate_ms") == [1.5, 2.0, math.inf]


def test_the_optimize_view_splits_counters_collections_and_decisions(int8_doc):
    view = view_of(int8_doc)
    assert isinstance(view, OptimizeView)
    qdq = next(p for p in view.passes if p.name == "qdq")
    assert qdq.decisions is not None and "time_ratio" in qdq.decisions.numeric_columns()
    assert set(qdq.decisions.counts()) <= {"int8", "float"} and "int8" in qdq.decisions.counts()
    assert all(not isinstance(v, dict | list) for v in qdq.counters.values())
    assert "quantized_by_op" in qdq.collections
    spans = view.timeline()
    assert len(spans) == len(view.passes)
    assert all(a.start <= b.start for a, b in itertools.pairwise(spans)), "passes ran in order"
    assert all(s.check_end >= s.end >= s.start >= 0 for s in spans)
    assert view.breakdown("weights_by_dtype")[0][:1] == ["float32"]
    assert "int8" in int8_doc["weights_by_dtype_after"]


def test_the_envelope_is_written_and_checked(int8_doc, tmp_path):
    assert int8_doc["kind"] == "optimize" and int8_doc["schema_version"] == SCHEMA_VERSION
    path = tmp_path / "r.json"
    path.write_text(to_json(int8_doc))
    assert load_report(path)["passes"] == json.loads(to_json(int8_doc))["passes"]
    newer = {**int8_doc, "schema_version": SCHEMA_VERSION + 1}
    with pytest.raises(BadInputError, match="newer"):
        validate(newer)
    with pytest.raises(BadInputError, match="unknown report kind"):
        validate({**int8_doc, "kind": "nonsense"})
    with pytest.raises(BadInputError, match="not an onnxopt report"):
        validate({"hello": 1})
    legacy = {key: value for key, value in int8_doc.items() if key not in ("kind", "schema", "schema_version")}
    assert validate(legacy) == "optimize", "reports written before the envelope still load"


def test_json_is_standard_json_even_with_infinities():
    doc = {"kind": "tune", "trials": [{"id": "a", "error": math.inf, "latency_ms": math.nan}]}
    text = to_json(doc)
    assert "Infinity" not in text and "NaN" not in text
    back = json.loads(text)
    assert back["trials"][0]["error"] == "inf" and back["trials"][0]["latency_ms"] == "nan"


def test_the_pareto_front_keeps_only_points_nothing_beats():
    points = [[1, 5], [2, 2], [3, 3], [5, 1], [2, 2], [4, 1], [math.nan, 0]]
    assert pareto_front(points) == [0, 1, 4, 5]
    assert pareto_front([]) == []


def test_a_tune_view_computes_the_front_when_the_trials_do_not_say():
    doc = {"kind": "tune", "objectives": ["latency_ms", "size_bytes"], "trials": [
        {"id": "fp32", "latency_ms": 10.0, "size_bytes": 100},
        {"id": "int8", "latency_ms": 4.0, "size_bytes": 30},
        {"id": "int4", "latency_ms": 9.0, "size_bytes": 20},
        {"id": "bad", "latency_ms": 5.0, "size_bytes": 40},
        {"id": "broken", "status": "failed", "latency_ms": 1.0, "size_bytes": 1},
    ]}
    view = view_of(doc)
    assert isinstance(view, TuneView)
    assert [view.trials[i]["id"] for i in view.front] == ["int8", "int4"]
    flagged = {**doc, "trials": [{**t, "pareto": t["id"] == "fp32"} for t in doc["trials"]]}
    assert [view_of(flagged).trials[i]["id"] for i in view_of(flagged).front] == ["fp32"], "the tuner's flags win"
