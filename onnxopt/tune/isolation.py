"""Run a job so that its failure, hang or memory blow-up becomes a record, never the search's end.

``run_job`` starts ``python -m onnxopt.tune.isolation JOB.json RESULT.json`` in a session
of its own. The child caps its own address space (``resource.setrlimit(RLIMIT_AS)``,
before importing onnxruntime, so a runaway allocation fails inside it instead of taking
the machine down; the limit is set in the child rather than through ``preexec_fn``, which
is unsafe in a threaded parent such as the process pool), runs the job, and writes its
record. The parent waits up to the timeout, then kills the whole process group (the
memory probes the benchmark starts included). What comes back, always a record:

* ``ok`` — the job's own record;
* ``failed`` — the job raised (a pass error, bad options, a rolled-back pass): the reason
  is the exception's first line, with the last lines of the traceback; ``deterministic``
  when the configuration itself cannot work (a pass rolled back, onnxruntime cannot load
  the result), which is what the cache may keep;
* ``oom`` — ``MemoryError`` or an allocation failure inside onnxruntime under the limit,
  or a death by signal while a limit was set;
* ``timeout`` — killed after ``timeout_s``;
* ``crashed`` — the child died without a record (segfault, abort): exit status and the
  last line of its stderr.

``isolate=False`` runs the job in this process instead (fast, for tests and tiny models;
failures are still records, but a hang or a crash is not contained and the peak memory
is the process's, not the job's).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

OOM_MARKERS = ("bad_alloc", "MemoryError", "Cannot allocate memory", "Failed to allocate", "out of memory",
               "failed to map segment")
_TRACEBACK_LINES = 6


def _dispatch(job: dict[str, Any]) -> dict[str, Any]:
    from onnxopt.tune.trial import run_optimize_job, run_trial

    kinds = {"trial": run_trial, "optimize": run_optimize_job}
    if job.get("kind") not in kinds:
        raise ValueError(f"unknown job kind {job.get('kind')!r}")
    return kinds[job["kind"]](job)


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def execute_inline(job: dict[str, Any]) -> dict[str, Any]:
    """Run the job in this process; any exception becomes a ``failed`` (or ``oom``) record."""
    from onnxopt.errors import OnnxoptError, RuntimeLoadError
    from onnxopt.tune.trial import TrialFailed

    started = time.perf_counter()
    memory_limited = bool((job.get("limits") or {}).get("memory_mb"))
    try:
        record = _dispatch(job)
    except MemoryError:
        record = {"status": "oom", "reason": "MemoryError (over the trial's memory limit)"}
    except OnnxoptError as error:
        record = {"status": "failed", "reason": str(error).splitlines()[0] if str(error) else type(error).__name__,
                  # A pass rolled back, or onnxruntime cannot load the result: the same inputs fail the same way.
                  "deterministic": isinstance(error, (TrialFailed, RuntimeLoadError))}
    except Exception as error:
        reason = _first_line(error)
        status = "oom" if memory_limited and any(marker in reason for marker in OOM_MARKERS) else "failed"
        tail = traceback.format_exc().strip().splitlines()[-_TRACEBACK_LINES:]
        record = {"status": status, "reason": reason, "traceback": tail}
    record.setdefault("trial_s", round(time.perf_counter() - started, 3))
    return record


def _limit_memory(memory_mb: float | None) -> None:
    if not memory_mb:
        return
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows: no address-space limit
        return
    limit = int(memory_mb * 1024 * 1024)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit status {code}"


def _kill_group(child: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.pid, signal.SIGKILL)
    child.wait()


def _die_with_parent() -> None:
    """Linux: the kernel kills this child when the process that started it dies (even by SIGKILL).

    The child runs in a session of its own (so a timeout can kill its whole group), which
    also means a Ctrl-C or a kill of the search would not reach it: this closes that gap.
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() == 1:  # the parent died before prctl took effect
            os._exit(1)


def run_isolated(job: dict[str, Any]) -> dict[str, Any]:
    """Run the job in a child process with the job's timeout and memory limit."""
    limits = job.get("limits") or {}
    timeout = limits.get("timeout_s") or None
    memory_mb = limits.get("memory_mb") or None
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="onnxopt-job-") as folder:
        job_path, result_path, stderr_path = (Path(folder) / name for name in ("job.json", "result.json", "stderr"))
        job_path.write_text(json.dumps(job, default=str))
        env = dict(os.environ)
        # The user's metric or plugin modules import in the child as they do here.
        env["PYTHONPATH"] = os.pathsep.join(p for p in (os.getcwd(), env.get("PYTHONPATH", "")) if p)
        with open(stderr_path, "wb") as stderr:
            child = subprocess.Popen([sys.executable, "-m", "onnxopt.tune.isolation", str(job_path), str(result_path)],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr, env=env,
                                     start_new_session=True)
            try:
                code = child.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                _kill_group(child)
                return {"status": "timeout", "reason": f"no result after {timeout:g} s; killed",
                        "trial_s": round(time.perf_counter() - started, 3)}
            except BaseException:  # interrupted (Ctrl-C, an executor shutting down): the child goes too
                _kill_group(child)
                raise
        _kill_group(child)  # stray grandchildren
        if result_path.exists():
            return json.loads(result_path.read_text())
        tail = [line for line in stderr_path.read_text(errors="replace").splitlines() if line.strip()]
        last = tail[-1].strip() if tail else ""
        elapsed = round(time.perf_counter() - started, 3)
        if memory_mb and (code < 0 or any(marker in "\n".join(tail[-20:]) for marker in OOM_MARKERS)):
            return {"status": "oom", "reason": f"{_describe_exit(code)} under the {memory_mb:g} MiB memory limit"
                    + (f": {last}" if last else ""), "trial_s": elapsed}
        reason = f"worker died with {_describe_exit(code)}" + (f": {last}" if last else "")
        return {"status": "crashed", "reason": reason, "trial_s": elapsed}


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    """Run a job here, isolated unless its limits say ``isolate: false``."""
    if (job.get("limits") or {}).get("isolate", True):
        return run_isolated(job)
    return execute_inline(job)


def main(argv: list[str] | None = None) -> int:
    """Child entry point: limit memory, run the job, write its record (exit 0 whatever happened)."""
    job_path, result_path = (Path(arg) for arg in (argv or sys.argv[1:])[:2])
    _die_with_parent()
    job = json.loads(job_path.read_text())
    _limit_memory((job.get("limits") or {}).get("memory_mb"))
    logging.basicConfig(level=logging.WARNING)
    record = execute_inline(job)
    temporary = result_path.with_name(result_path.name + ".tmp")
    temporary.write_text(json.dumps(record, default=str))
    os.replace(temporary, result_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
