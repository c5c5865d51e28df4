"""bench.measure: the peak-RSS numbers behind the large-model benchmark must be the child's own."""

from __future__ import annotations

import sys

from bench.measure import run_measured

MIB = 2**20


def _allocate(mib: int) -> list[str]:
    # Touch every page so the allocation is resident, not just reserved.
    return [sys.executable, "-c", f"b = bytearray({mib} * {MIB}); b[::4096] = b'x' * len(b[::4096]); print('done')"]


def test_peak_rss_is_the_childs_not_the_parents():
    ballast = bytearray(400 * MIB)  # the parent is large; a vfork+exec child would inherit this peak
    ballast[::4096] = b"x" * len(ballast[::4096])
    small = run_measured(_allocate(10))
    large = run_measured(_allocate(200))
    assert small.returncode == 0 and small.stdout.strip() == "done"
    assert small.peak_rss_bytes is not None and large.peak_rss_bytes is not None
    assert small.peak_rss_bytes < 100 * MIB  # interpreter + 10 MiB, nowhere near the parent's 400 MiB
    # The 190 MiB difference shows up, give or take the interpreter's own noise.
    assert 180 * MIB <= large.peak_rss_bytes - small.peak_rss_bytes <= 220 * MIB
    assert large.wall_s > 0
    del ballast


def test_exit_code_output_and_timeout():
    failed = run_measured([sys.executable, "-c", "import sys; sys.stderr.write('boom\\n'); sys.exit(3)"])
    assert failed.returncode == 3 and failed.last_error_line() == "boom" and not failed.timed_out
    slow = run_measured([sys.executable, "-c", "import time; time.sleep(30)"], timeout_s=1)
    assert slow.timed_out and slow.returncode != 0 and slow.wall_s < 30
