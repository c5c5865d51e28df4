"""One executor interface for work that fans out: tuning trials and ``onnxopt batch`` models.

A job is a JSON-able dict (``kind``, the model and DATA as ``FileBundle`` dicts, what to
do, ``limits``); an executor runs a list of them and yields ``(index, record)`` as each
finishes. Callers must not depend on the order of completion — the tuner collects a
whole batch before deciding anything, which is why the same seed gives the same search on
every executor.

* ``local`` — one job at a time on this machine (each in its own isolated child process);
* ``process:N`` — N jobs at a time on this machine, each in its own isolated child;
* ``ray`` / ``ray:ADDRESS`` — Ray tasks on a cluster (``onnxopt.tune.ray_executor``; a local
  cluster is started when no address is given). The ``ray`` extra is optional.

Every executor can bring a job's output file back to this machine (``fetch``).
"""

from __future__ import annotations

import concurrent.futures
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from onnxopt.errors import BadInputError
from onnxopt.tune.isolation import run_job

ROLES = ("model", "calib", "data")


def localize(job: dict[str, Any]) -> dict[str, Any]:
    """The job with ``<role>_path`` set to the bundles' paths on this machine."""
    local = dict(job)
    for role in ROLES:
        bundle = job.get(role)
        local[f"{role}_path"] = bundle["path"] if bundle else None
    return local


def copy_model(source: Path, target: Path) -> None:
    """Copy a model file; one with external data is re-saved so the data file takes the new name."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if source.resolve() == target.resolve():
        return
    if source.with_name(source.name + ".data").exists():
        from onnxopt.model_io import load, save

        save(load(source), target, external_data=True)
        return
    staging = target.with_name(f".{target.name}.{os.getpid()}")
    shutil.copyfile(source, staging)
    os.replace(staging, target)


class Executor:
    """Runs jobs; subclasses set ``name`` and implement ``run``."""

    name = "executor"
    workers = 1

    def run(self, jobs: list[dict[str, Any]]) -> Iterator[tuple[int, dict[str, Any]]]:
        raise NotImplementedError

    def fetch(self, record: dict[str, Any], target: Path) -> bool:
        """Bring the model a job wrote (``record['model_path']``) to ``target`` here; False if it is gone."""
        source = Path(record.get("model_path") or "")
        if not record.get("model_path") or not source.is_file():
            return False
        copy_model(source, target)
        return True

    def close(self) -> None:
        pass

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class LocalExecutor(Executor):
    """One job at a time, in order."""

    name = "local"

    def run(self, jobs: list[dict[str, Any]]) -> Iterator[tuple[int, dict[str, Any]]]:
        for index, job in enumerate(jobs):
            yield index, run_job(localize(job))


class ProcessExecutor(Executor):
    """Up to ``workers`` jobs at a time on this machine, each in an isolated child process."""

    name = "process"

    def __init__(self, workers: int) -> None:
        if workers < 1:
            raise BadInputError("process:N needs N >= 1")
        self.workers = workers
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="onnxopt-job")

    def run(self, jobs: list[dict[str, Any]]) -> Iterator[tuple[int, dict[str, Any]]]:
        futures = {}
        for index, job in enumerate(jobs):
            isolated = {**localize(job), "limits": {**(job.get("limits") or {}), "isolate": True}}
            futures[self._pool.submit(run_job, isolated)] = index
        for future in concurrent.futures.as_completed(futures):
            yield futures[future], future.result()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def make_executor(spec: str, ray_options: dict[str, Any] | None = None) -> Executor:
    """An executor from ``local``, ``process[:N]``, ``ray`` or ``ray:ADDRESS``."""
    kind, _, argument = spec.partition(":")
    if kind == "local" and not argument:
        return LocalExecutor()
    if kind == "process":
        if not argument:
            return ProcessExecutor(os.cpu_count() or 1)
        try:
            return ProcessExecutor(int(argument))
        except ValueError:
            raise BadInputError(f"--executor {spec!r}: process:N needs a number of workers") from None
    if kind == "ray":
        from onnxopt.tune.ray_executor import RayExecutor

        return RayExecutor(address=argument or None, **(ray_options or {}))
    raise BadInputError(f"unknown executor {spec!r} (choose local, process:N, ray or ray:ADDRESS)")
