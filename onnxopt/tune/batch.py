"""``onnxopt batch``: one pipeline over many models, through the tuner's executors.

Each model is one job (``onnxopt.tune.trial.run_optimize_job``): the pipeline is resolved
once here (preset, ``--passes`` or a pipeline file, with ``-O`` overrides) and sent as
data, so a Ray worker needs neither the pipeline file nor the preset's version of onnxopt
to agree. Jobs run isolated like trials: one model that crashes or runs out of memory is
a row of the summary, not the end of the batch. Outputs land in the output folder under
the model's file name (Ray workers write to their disk and the file is fetched back).
The summary document has ``"kind": "batch"`` (not a kind ``onnxopt report`` renders: its
table is the rendering).
"""

from __future__ import annotations

import datetime
import glob
import shutil
import tempfile
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import onnxopt
from onnxopt.api import resolve_steps
from onnxopt.errors import BadInputError
from onnxopt.targets import TARGETS
from onnxopt.tune.cache import FileBundle, data_bundle, model_bundle
from onnxopt.tune.executors import Executor, make_executor


def expand_models(patterns: Iterable[str]) -> list[Path]:
    """Model paths from files and glob patterns (``**`` recursive), in a stable order, no duplicates."""
    found: dict[Path, None] = {}
    for pattern in patterns:
        matches = sorted(glob.glob(pattern, recursive=True)) if glob.has_magic(pattern) else [pattern]
        if not matches:
            raise BadInputError(f"no model matches {pattern!r}")
        for match in matches:
            path = Path(match)
            if not path.is_file():
                raise BadInputError(f"{match}: no such model file")
            found.setdefault(path.resolve(), None)
    models = list(found)
    names = [path.name for path in models]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise BadInputError(f"several models are named {', '.join(duplicates)}; their outputs would collide")
    return models


def optimize_many(models: list[Path], output_dir: Path, executor: str | Executor = "local", *,
                  passes: str | None = None, preset: str | None = None, config: Path | None = None,
                  overrides: Iterable[str] = (), target: str = "ort-cpu", calib: Path | None = None,
                  inputs: Path | None = None, verify: bool = False, batch_size: int = 1,
                  shapes: Mapping[str, list[int]] | None = None, timeout_s: float | None = None,
                  memory_mb: float | None = None, progress: Any = None) -> dict[str, Any]:
    """Optimize every model with one pipeline; returns the summary document (one row per model)."""
    if target not in TARGETS:
        raise BadInputError(f"unknown target {target!r} (choose from {', '.join(TARGETS)})")
    if not output_dir.is_dir():
        raise BadInputError(f"{output_dir}: output folder does not exist")
    for name, path in (("--calib", calib), ("--inputs", inputs)):
        if path is not None and not Path(path).exists():
            raise BadInputError(f"{name} {path}: no such file or folder")
    inputs_dir = {path.resolve().parent for path in models}
    if output_dir.resolve() in inputs_dir:
        raise BadInputError("the output folder holds input models; onnxopt never overwrites its input")
    steps = resolve_steps(passes, preset, config, list(overrides))
    pipeline = [{"name": step.name, "options": dict(step.options)} for step in steps]
    calib_bundle: FileBundle | None = data_bundle(calib) if calib else None
    inputs_bundle: FileBundle | None = data_bundle(inputs) if inputs else None
    options = {"target": target, "verify": verify, "batch_size": batch_size, "shapes": dict(shapes or {})}
    owned = isinstance(executor, str)
    runner = make_executor(executor) if isinstance(executor, str) else executor
    scratch = Path(tempfile.mkdtemp(prefix="onnxopt-batch-"))
    started = time.perf_counter()
    rows: list[dict[str, Any] | None] = [None] * len(models)
    try:
        jobs = []
        for index, path in enumerate(models):
            remote = runner.name == "ray"
            output = scratch / f"{index}" / path.name if remote else output_dir / path.name
            jobs.append({"kind": "optimize", "model": model_bundle(path).as_dict(),
                         "calib": calib_bundle.as_dict() if calib_bundle else None,
                         "data": inputs_bundle.as_dict() if inputs_bundle else None,
                         "pipeline": pipeline, "options": options, "output": str(output),
                         "limits": {"timeout_s": timeout_s, "memory_mb": memory_mb, "isolate": True}})
        for index, record in runner.run(jobs):
            target_path = output_dir / models[index].name
            moved = record.get("model_path") and Path(record["model_path"]) != target_path
            if moved and not runner.fetch(record, target_path) and record.get("status") == "ok":
                record = {**record, "status": "failed", "reason": "the output could not be fetched"}
            record = {**record, "model": str(models[index]), "output": str(target_path)
                      if record.get("status") in ("ok", "failed") and target_path.exists() else None}
            rows[index] = record
            if progress:
                progress(record)
    finally:
        if owned:
            runner.close()
        shutil.rmtree(scratch, ignore_errors=True)
    results = [row or {"model": str(models[i]), "status": "crashed", "reason": "no result"}
               for i, row in enumerate(rows)]
    created = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    return {"kind": "batch", "schema_version": 1, "onnxopt_version": onnxopt.__version__, "created": created,
            "pipeline": [step.name for step in steps], "target": target, "executor": runner.name,
            "output_dir": str(output_dir), "models": results, "wall_s": round(time.perf_counter() - started, 3),
            "failed": sum(1 for row in results if row.get("status") != "ok")}
