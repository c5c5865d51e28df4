"""Run a command and measure its wall time and peak resident memory, exactly.

Why a wrapper process: on Linux a child's ``ru_maxrss`` starts from its parent's peak
when the child is started by fork or vfork and then exec'd, so measuring a child of a
large benchmark driver would report the driver's memory. We run the command as the child
of a small, fresh Python process (this file's ``__main__``), read the command's own peak
with ``os.wait4`` there, and hand it back in a JSON file. The floor of the measurement is
that wrapper's few megabytes, far below any optimizer's peak.

Linux and macOS only (``os.wait4``); the benchmarks are run there.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Measured:
    """Outcome of one measured command."""

    returncode: int
    wall_s: float
    peak_rss_bytes: int | None
    stdout: str
    stderr: str
    timed_out: bool = False

    def last_error_line(self) -> str:
        """The last non-empty line of stderr (or stdout): usually the error message."""
        for text in (self.stderr, self.stdout):
            lines = [line.strip() for line in text.splitlines() if line.strip()]
            if lines:
                return lines[-1]
        return f"exit code {self.returncode}"


def _maxrss_bytes(ru_maxrss: int) -> int:
    return int(ru_maxrss if sys.platform == "darwin" else ru_maxrss * 1024)


def run_measured(command: list[str], timeout_s: float | None = None, cwd: str | os.PathLike[str] | None = None,
                 env: dict[str, str] | None = None) -> Measured:
    """Run ``command``; return its exit code, wall time, peak RSS and output."""
    with tempfile.TemporaryDirectory(prefix="onnxopt-measure-") as folder:
        result_path = Path(folder) / "result.json"
        stdout_path, stderr_path = Path(folder) / "stdout", Path(folder) / "stderr"
        wrapper = [sys.executable, str(Path(__file__).resolve()), "--result", str(result_path), "--", *command]
        with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
            process = subprocess.Popen(wrapper, stdout=out, stderr=err, cwd=cwd, env=env, start_new_session=True)
            timed_out = False
            try:
                process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                timed_out = True
                os.killpg(process.pid, signal.SIGKILL)  # the wrapper and the command share this group
                process.wait()
        stdout = stdout_path.read_text(errors="replace")
        stderr = stderr_path.read_text(errors="replace")
        if result_path.exists():
            result = json.loads(result_path.read_text())
            return Measured(result["returncode"], result["wall_s"], result["peak_rss_bytes"], stdout, stderr)
        return Measured(process.returncode if not timed_out else -9, float(timeout_s or 0), None, stdout,
                        stderr + ("\ntimed out" if timed_out else ""), timed_out=timed_out)


def _wrapper_main() -> int:
    parser = argparse.ArgumentParser(description="run a command, write its wall time and peak RSS as JSON")
    parser.add_argument("--result", required=True, type=Path)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    start = time.perf_counter()
    process = subprocess.Popen(command)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)  # tell Popen the child is reaped
    args.result.write_text(json.dumps({"returncode": process.returncode, "wall_s": wall,
                                       "peak_rss_bytes": _maxrss_bytes(usage.ru_maxrss)}))
    return 0


if __name__ == "__main__":
    sys.exit(_wrapper_main())
