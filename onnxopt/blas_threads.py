"""Run numpy's matrix products on one thread where they are small and many.

Why: numpy's BLAS (OpenBLAS) starts as many threads as cores for every product. For the
medium-sized products passes compute by the hundred (a layer's weights times a few
hundred sampled rows), waking and synchronising those threads costs more than the work
— and on a machine shared with other jobs it costs far more: 128×768 @ 768×2304 took 70
ms with OpenBLAS's threads and 18 ms on one thread on our shared 2-core machine, and
BERT-base int8 spent 20 s of its 70 s there. onnxruntime keeps its own thread pool; this
only affects numpy.

``threadpoolctl`` does the limiting; without it (an optional dependency of the library) the
context does nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


@contextlib.contextmanager
def single_threaded_blas() -> Iterator[None]:
    """Limit numpy's BLAS to one thread inside the block (restored after)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl is a dependency; stay correct without it
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield
