"""The tune report: one JSON document (``"kind": "tune"``), and the front as table rows.

Schema (``schema_version`` 1); every size in bytes, every time in seconds unless the name
says ``_ms``:

* ``kind`` = ``"tune"``, ``schema_version``, ``onnxopt_version``, ``created_utc``, ``command``;
* ``model``: ``path``, ``digest`` (SHA-256 of the files), ``bytes``; ``data``, ``calib``: ``path``,
  ``digest`` or null;
* ``settings``: the budget (``metric``, ``max_error``, ``min_metric``, ``objective``,
  ``max_latency_ms``, ``max_size_mb``, ``margin``) and the search (``target``, ``executor``,
  ``workers``, ``seed``, ``trials``, ``time_budget_s``, ``strategy_batch``, ``batch_size``,
  ``threads``, ``warmup_runs``, ``timed_runs``, ``trial_timeout_s``, ``trial_memory_mb``,
  ``isolate``);
* ``space``: the search space (per pass: group, stage, candidate values, conditions, fixed
  and linked options), ``grid_size`` (configurations exhaustive search would run) and
  ``presets`` (preset name -> its configuration key, or null when it is not in the space);
* ``axes``: which trial fields a plot should use: ``objective`` (``latency_ratio``,
  ``size_bytes`` or ``session_peak_rss_bytes``), ``error`` (``error``), ``metric``;
* ``trials``: one record per trial, in the order the search proposed them —
  ``index``, ``key`` (the configuration, spelled as ``--passes``; ``cleanup`` for none),
  ``cache_key``, ``phase`` (baseline, preset:NAME, sensitivity, neighbor, model),
  ``parents``, ``config`` ([{pass, options}]), ``pipeline`` (all steps run), ``status``
  (ok, failed, timeout, oom, crashed), ``reason``, ``cached``, ``feasible``, ``violations``,
  ``on_front``, ``objective_value``; measured: ``size_bytes``, ``size_ratio``,
  ``latency_ms`` (p50), ``latency_p90_ms``, ``baseline_latency_ms``, ``latency_ratio``
  (to the original, timed interleaved in the same process), ``session_peak_rss_bytes``
  (objective memory only), ``error``, ``metric_value``, ``min_cosine`` (cosine),
  ``reference_metric`` (accuracy of the original); cost: ``optimize_s``, ``evaluate_s``,
  ``bench_s``, ``trial_s``, ``optimize_peak_rss_bytes`` and ``peak_rss_bytes`` (the trial
  process's high-water mark after optimizing / at the end); ``host`` (hostname, cpu,
  cpu_flags, cpu_count, gpus, onnxruntime, providers), ``passes`` (the tuned passes'
  status, notes and counters), ``model_path``;
* ``front``: keys of the Pareto front (objective vs error), best objective first;
* ``best``: ``key``, ``index``, ``config``, ``pipeline``, ``output``, ``rebuilt`` (the model
  was optimized again because its file was gone), or null when nothing met the budget;
* ``presets``: per preset in the space: ``key``, ``feasible``, ``objective_value``, ``error``;
* ``cost``: ``wall_s``, ``trials_run``, ``trials_cached``, ``trial_s_total``,
  ``peak_rss_bytes_max``, ``stopped`` (trials, time budget, space exhausted).
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

from onnxopt.errors import BadInputError

SCHEMA_VERSION = 1
OBJECTIVE_FIELDS = {"latency": "latency_ratio", "size": "size_bytes", "memory": "session_peak_rss_bytes"}


def utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


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
    lines = [f"### tune: {Path(document['model']['path']).name}", "",
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


def write_report(document: dict[str, Any], path: str | Path) -> None:
    """``.json`` (the document) or ``.md``; HTML goes through ``onnxopt report`` (see the README)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".json":
        path.write_text(json.dumps(document, indent=1, default=str) + "\n")
    elif suffix == ".md":
        path.write_text(to_markdown(document))
    else:
        raise BadInputError(f"--report {path.name}: tune writes .json or .md; render HTML from the JSON "
                            "with `onnxopt report` where that command is available")
