"""Peak host memory of one model's onnxruntime session, measured in a process of its own.

Why a separate process: the peak resident set size (``ru_maxrss``) is a per-process
high-water mark that never goes down, so once one model has run in a process every later
measurement in it is polluted. Timing, on the other hand, wants all models in one process
so their runs can be interleaved. ``onnxopt.benchmark`` therefore starts one short probe
per model (``python -m onnxopt.memory_probe``) and times the models in its own process.

The probe reports the process's RSS right before the model is loaded (the interpreter,
numpy, onnxruntime and the feed), its peak RSS after session creation and a few runs, and
the difference: the memory the model itself costs (peak: VmHWM on Linux, ru_maxrss
elsewhere). Device (GPU) memory is not counted.

Protocol: one JSON object on stdout; exit 0 on success, 2 with ``{"error": ...}`` when the
model or feed cannot be used.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from onnxopt.errors import BadInputError


def peak_rss_bytes() -> int:
    """The high-water mark of this process's resident set size, in bytes.

    On Linux we read ``VmHWM`` from /proc: it belongs to the address space made by exec, so
    it starts from zero in a fresh process. ``ru_maxrss`` does not: a child started through
    vfork (as Python's subprocess does) inherits its parent's peak, which would make every
    child of a large parent look large.
    """
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # reported in kB
    try:
        import resource
    except ImportError:  # Windows: psutil exposes the peak working set instead
        info = psutil.Process().memory_info()
        return int(getattr(info, "peak_wset", info.rss))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return int(peak if sys.platform == "darwin" else peak * 1024)


def measure(model_path: Path, feed_path: Path, provider: str, threads: int, ort_optimize: bool,
            runs: int) -> dict[str, Any]:
    """Create a session for ``model_path``, run it ``runs`` times on the saved feed, report memory."""
    from onnxopt.runtime import create_session

    with np.load(feed_path, allow_pickle=False) as archive:
        feed = {name: archive[name] for name in archive.files}
    baseline = psutil.Process().memory_info().rss
    session = create_session(model_path, provider=provider, optimize=ort_optimize, threads=threads)
    output_names = [output.name for output in session.get_outputs()]
    for _ in range(max(runs, 1)):
        session.run(output_names, feed)
    peak = peak_rss_bytes()
    return {
        "baseline_rss_bytes": int(baseline),
        "process_peak_rss_bytes": peak,
        "peak_rss_bytes": max(peak - int(baseline), 0),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("feed", type=Path, help=".npz holding one complete feed")
    parser.add_argument("--provider", default="cpu")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-ort-optimize", action="store_true")
    args = parser.parse_args(argv)
    try:
        result = measure(args.model, args.feed, args.provider, args.threads, not args.no_ort_optimize, args.runs)
    except BadInputError as error:
        sys.stdout.write(json.dumps({"error": str(error)}) + "\n")
        return 2
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
