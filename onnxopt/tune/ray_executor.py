"""Jobs as Ray tasks: ``--executor ray`` (a local cluster) or ``ray:ADDRESS`` (an existing one).

Ray is an optional extra (``pip install 'onnxopt[ray]'``); nothing else imports it.

Inputs travel once: each model or DATA bundle is put in Ray's object store the first time
a job needs it, and the task receives the reference wrapped in a list (so Ray does not
fetch it eagerly). On the worker, a copy at the same path with the same digest — a shared
file system, or the driver's own machine — is used as is; otherwise the bytes are fetched
from the object store once per node into a local folder named by the digest.

Each task runs its job isolated (``onnxopt.tune.isolation``) on the worker, so latency is
measured on the worker's hardware and tagged with it, and a crash or a memory blow-up is
a record. Tasks are not retried: a failure is an answer. Outputs stay on the worker's
disk; ``fetch`` copies one back (a task pinned to that node reads it) when the path is not
visible here.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from onnxopt.errors import BadInputError
from onnxopt.tune.cache import FileBundle, bundle_matches
from onnxopt.tune.executors import ROLES, Executor, copy_model
from onnxopt.tune.isolation import run_job

logger = logging.getLogger(__name__)


def _read_bundle(bundle: FileBundle) -> dict[str, bytes]:
    root = Path(bundle.root)
    return {name: (root / name).read_bytes() for name in bundle.files}


def _materialize(bundle: FileBundle, wrapped_ref: list[Any]) -> str:
    """A path on this node holding the bundle's bytes."""
    if bundle_matches(bundle):
        return bundle.path
    import ray

    folder = Path(tempfile.gettempdir()) / "onnxopt-tune-inputs" / bundle.digest
    main = folder / Path(bundle.path).name if Path(bundle.path).name in bundle.files else folder
    if not all((folder / name).is_file() for name in bundle.files):
        files = ray.get(wrapped_ref[0])
        folder.mkdir(parents=True, exist_ok=True)
        for name, content in files.items():
            target = folder / name
            staging = target.with_name(f".{target.name}.{os.getpid()}")
            staging.write_bytes(content)
            os.replace(staging, target)
    return str(main)


def _remote_job(job: dict[str, Any], refs: dict[str, list[Any]]) -> dict[str, Any]:
    """The task body: local paths for the inputs, run the job isolated, say where it ran."""
    import ray

    local = dict(job)
    for role in ROLES:
        bundle = job.get(role)
        local[f"{role}_path"] = _materialize(FileBundle.from_dict(bundle), refs[role]) if bundle else None
    record = run_job(local)
    record["node_id"] = ray.get_runtime_context().get_node_id()
    return record


def _read_output(path: str) -> dict[str, bytes]:
    source = Path(path)
    files = {source.name: source.read_bytes()}
    data = source.with_name(source.name + ".data")
    if data.exists():
        files[data.name] = data.read_bytes()
    return files


class RayExecutor(Executor):
    """Jobs as Ray tasks, one CPU each by default."""

    name = "ray"

    def __init__(self, address: str | None = None, num_cpus: int | None = None, cpus_per_job: float = 1.0) -> None:
        try:
            import ray
        except ImportError:
            raise BadInputError("--executor ray needs Ray: pip install 'onnxopt[ray]'") from None
        self._ray = ray
        self._started_here = not ray.is_initialized()
        if self._started_here:
            options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                       "logging_level": logging.WARNING}
            if address is None and num_cpus is not None:
                options["num_cpus"] = num_cpus
            try:
                ray.init(address=address, **options)
            except (ConnectionError, RuntimeError, ValueError) as error:
                raise BadInputError(f"cannot connect to the Ray cluster {address or '(local)'}: {error}") from None
        self.workers = max(1, int(ray.cluster_resources().get("CPU", 1) // cpus_per_job))
        self._task = ray.remote(num_cpus=cpus_per_job, max_retries=0)(_remote_job)
        self._refs: dict[str, Any] = {}

    def _ref(self, bundle: dict[str, Any] | None) -> list[Any]:
        if bundle is None:
            return []
        digest = bundle["digest"]
        if digest not in self._refs:
            self._refs[digest] = self._ray.put(_read_bundle(FileBundle.from_dict(bundle)))
        return [self._refs[digest]]

    def run(self, jobs: list[dict[str, Any]]) -> Iterator[tuple[int, dict[str, Any]]]:
        pending = {}
        for index, job in enumerate(jobs):
            refs = {role: self._ref(job.get(role)) for role in ROLES}
            pending[self._task.remote(job, refs)] = index
        while pending:
            done, _ = self._ray.wait(list(pending), num_returns=1)
            for ref in done:
                index = pending.pop(ref)
                try:
                    record = self._ray.get(ref)
                except self._ray.exceptions.RayError as error:  # the worker itself died
                    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
                    record = {"status": "crashed", "reason": f"Ray task failed: {first}"}
                yield index, record

    def fetch(self, record: dict[str, Any], target: Path) -> bool:
        if super().fetch(record, target):
            return True
        node, path = record.get("node_id"), record.get("model_path")
        if not node or not path:
            return False
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        reader = self._ray.remote(num_cpus=0)(_read_output).options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=node, soft=False))
        try:
            files = self._ray.get(reader.remote(path))
        except self._ray.exceptions.RayError as error:
            logger.warning("cannot fetch %s from node %s: %s", path, node, error)
            return False
        with tempfile.TemporaryDirectory(prefix="onnxopt-fetch-") as folder:
            for name, content in files.items():
                (Path(folder) / name).write_bytes(content)
            copy_model(Path(folder) / Path(path).name, target)
        return True

    def close(self) -> None:
        self._refs.clear()
        if self._started_here and self._ray.is_initialized():
            self._ray.shutdown()
