"""The tune report: one JSON document (``"kind": "tune"``), and the front as table rows.

The document wears the report package's envelope (``onnxopt.report.schema.header``:
``schema``, ``schema_version``, ``kind``, ``created``, ``onnxopt_version``) and follows its
``tune`` page's conventions (docs/reports.md): ``model`` is the model's path, ``objectives``
names the trial keys the page plots (the first is every scatter's x axis), every trial has
an ``id`` and a ``pareto`` flag. ``onnxopt report tune.json -o tune.html`` (or ``tune --report
tune.html``) renders it: an error-vs-objective scatter with the Pareto front ringed, and the
trials table. Keys, every size in bytes, every time in seconds unless the name says ``_ms``:

* the envelope; ``command``; ``model`` (path), ``model_digest`` (SHA-256 of the files),
  ``model_bytes``; ``data``, ``calib``: ``path`` and ``digest``, or null;
* ``objectives``: [objective field, ``error``, the other axis] — ``latency_ratio``,
  ``size_bytes`` or ``session_peak_rss_bytes`` first;
* ``settings``: the budget (``metric``, ``max_error``, ``min_metric``, ``objective``,
  ``max_latency_ms``, ``max_size_mb``, ``margin``) and the search (``target``, ``executor``,
  ``workers``, ``seed``, ``trials``, ``time_budget_s``, ``strategy_batch``, ``batch_size``,
  ``threads``, ``warmup_runs``, ``timed_runs``, ``trial_timeout_s``, ``trial_memory_mb``,
  ``trial_isolate``);
* ``space``: the search space (per pass: group, stage, candidate values, conditions, fixed
  and linked options), ``grid_size`` (configurations exhaustive search would run) and
  ``presets`` (preset name -> its configuration key, or null when it is not in the space);
* ``trials``: one record per trial, in the order the search proposed them — ``id`` (the
  configuration, spelled as ``--passes``; ``cleanup`` for none), ``index``, ``phase``
  (baseline, preset:NAME, sensitivity, neighbor, model), ``status`` (ok, failed, timeout,
  oom, crashed), ``reason``, ``feasible``, ``pareto``, ``objective_value``; measured:
  ``latency_ms`` (p50), ``latency_p90_ms``, ``baseline_latency_ms``, ``latency_ratio`` (to
  the original, timed interleaved in the same process), ``size_bytes``, ``size_ratio``,
  ``input_bytes``, ``session_peak_rss_bytes`` (objective memory only), ``error``,
  ``metric_value``, ``min_cosine`` (cosine), ``reference_metric`` (accuracy of the
  original); cost: ``optimize_s``, ``evaluate_s``, ``bench_s``, ``trial_s``,
  ``optimize_peak_rss_bytes`` and ``peak_rss_bytes`` (the trial process's high-water mark
  after optimizing / at the end); ``cached``, ``hostname``; nested: ``key`` (= ``id``),
  ``cache_key``, ``parents``, ``config`` ([{pass, options}]), ``pipeline`` (all steps run),
  ``violations``, ``host`` (hostname, machine, cpu, cpu_flags, cpu_count, gpus,
  onnxruntime, providers), ``passes`` (the tuned passes' status, notes and counters),
  ``model_path``, ``node_id`` (Ray), ``traceback`` (failures);
* ``front``: ids of the Pareto front (objective vs error), best objective first;
* ``best``: ``key``, ``index``, ``config``, ``pipeline``, ``output``, ``rebuilt`` (the model
  was optimized again because its file was gone), or null when nothing met the budget;
* ``presets``: per preset in the space: ``key``, ``feasible``, ``objective_value``, ``error``;
* ``notes``, ``hosts`` (the distinct hosts trials ran on);
* ``cost``: ``wall_s``, ``trials_run``, ``trials_cached``, ``trial_s_total``,
  ``peak_rss_bytes_max``, ``stopped`` (trials, time budget, space exhausted), ``phases``,
  ``grid_size``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from onnxopt.report import write_report as render_report
from onnxopt.report.files import format_for

OBJECTIVE_FIELDS = {"latency": "latency_ratio", "size": "size_bytes", "memory": "session_peak_rss_bytes"}
# The order the report's trials table shows; the other keys follow.
LEADING_TRIAL_KEYS = ("id", "index", "phase", "status", "reason", "feasible", "pareto", "objective_value", "error",
                      "metric_value", "min_cosine", "latency_ratio", "latency_ms", "size_bytes", "size_ratio",
                      "session_peak_rss_bytes", "optimize_s", "trial_s", "peak_rss_bytes", "cached", "hostname")


def objectives_for(objective: str) -> list[str]:
    """What the report plots: the objective on x against the error, then against the other axis."""
    first = OBJECTIVE_FIELDS[objective]
    other = "size_bytes" if first != "size_bytes" else "latency_ratio"
    return [first, "error", other]


def ordered_trial(record: dict[str, Any]) -> dict[str, Any]:
    """The record with the keys a reader wants first (the report's trials table keeps this order)."""
    leading = {key: record.get(key) for key in LEADING_TRIAL_KEYS if key in record}
    return {**leading, **{key: value for key, value in record.items() if key not in leading}}


def _mb(value: float | None) -> str:
    return "—" if value is None else f"{value / 1e6:.2f} MB"


def _num(value: float | None, digits: int = 4) -> str:
    return "—" if value is None else f"{value:.{digits}g}"


FRONT_COLUMNS = ("#", "configuration", "latency ms", "vs original", "size", "error", "metric", "feasible")


def front_rows(document: dict[str, Any]) -> list[tuple[str, ...]]:
    """The front as table rows (for the terminal and Markdown), best objective first; best marked ★."""
    by_key = {trial["key"]: trial for trial in document["trials"]}
    best_key = (document.get("best") or {}).get("key")
    rows = []
    for key in document["front"]:
        trial = by_key[key]
        rows.append((
            str(trial["index"]),
            ("★ " if key == best_key else "") + key,
            _num(trial.get("latency_ms")),
            f"{trial['latency_ratio']:.2f}×" if trial.get("latency_ratio") is not None else "—",
            _mb(trial.get("size_bytes")),
            _num(trial.get("error")),
            _num(trial.get("metric_value"), 6),
            "yes" if trial.get("feasible") else "no",
        ))
    return rows


def to_markdown(document: dict[str, Any]) -> str:
    """The front table, the best configuration, the presets and the search's cost."""
    settings, cost = document["settings"], document["cost"]
    budget = (f"max error {settings['max_error']:g}" if settings.get("max_error") is not None
              else f"min {settings['metric']} {settings['min_metric']:g}")
    lines = [f"### tune: {Path(document['model']).name}", "",
             f"Metric {settings['metric']} ({budget}), objective {settings['objective']}; "
             f"{len(document['trials'])} trials of a {document['space']['grid_size']}-configuration grid; "
             f"executor {settings['executor']}, seed {settings['seed']}.", "",
             "| " + " | ".join(FRONT_COLUMNS) + " |", "|" + "---|" * len(FRONT_COLUMNS)]
    lines += ["| " + " | ".join(row) + " |" for row in front_rows(document)]
    best = document.get("best")
    lines += ["", f"Best: `{best['key']}`" if best else "Best: none met the budget", ""]
    if document.get("presets"):
        lines += ["| preset | configuration | feasible | objective | error |", "|---|---|---|---:|---:|"]
        for name, entry in document["presets"].items():
            lines.append(f"| {name} | `{entry['key']}` | {'yes' if entry['feasible'] else 'no'} | "
                         f"{_num(entry.get('objective_value'))} | {_num(entry.get('error'))} |")
        lines.append("")
    lines.append(f"Search cost: {cost['wall_s']:.0f} s wall, {cost['trials_run']} trials run, "
                 f"{cost['trials_cached']} from the cache, peak trial RSS {_mb(cost.get('peak_rss_bytes_max'))}.")
    return "\n".join(lines) + "\n"


def check_report_path(path: str | Path) -> None:
    """A one-line BadInputError, before any trial, for a report name no renderer takes."""
    format_for(Path(path))


def write_report(document: dict[str, Any], path: str | Path) -> None:
    """``.json`` and ``.html`` through the report package (the HTML page: scatter, front, trials); ``.md`` here."""
    path = Path(path)
    if format_for(path) != "markdown":
        render_report(document, path)
        return
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.resolve().parent)
    with os.fdopen(handle, "w", encoding="utf-8") as stream:
        stream.write(to_markdown(document))
    os.replace(temporary, path)
