"""``onnxopt compare A B``: run two models on the same inputs and report their differences."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from onnxopt.data import make_feeds
from onnxopt.errors import BadInputError
from onnxopt.model_io import read_valid_proto
from onnxopt.runtime import create_session, run_session
from onnxopt.verify import Comparison, compare_runs


def compare_models(
    path_a: Path,
    path_b: Path,
    inputs: Path | None = None,
    batch_size: int = 1,
    shapes: dict[str, list[int]] | None = None,
    max_batches: int | None = 16,
) -> tuple[Comparison, dict[str, Any]]:
    """Worst-case errors of B against A per output over the feeds (DATA or random)."""
    proto_a = read_valid_proto(path_a)
    read_valid_proto(path_b)
    feeds = make_feeds(proto_a, inputs, batch_size, shapes, max_batches=max_batches)
    session_a = create_session(path_a)
    session_b = create_session(path_b)
    names_a = [o.name for o in session_a.get_outputs()]
    names_b = [o.name for o in session_b.get_outputs()]
    if names_a != names_b:
        raise BadInputError(f"the models have different outputs: {names_a} vs {names_b}")
    inputs_b = {i.name for i in session_b.get_inputs()}
    references, candidates = [], []
    count = 0
    for feed in feeds:
        missing = set(inputs_b) - set(feed)
        if missing:
            raise BadInputError(f"model B needs input(s) model A does not have: {', '.join(sorted(missing))}")
        references.append(run_session(session_a, feed))
        candidates.append(run_session(session_b, {k: v for k, v in feed.items() if k in inputs_b}))
        count += 1
    comparison = compare_runs(references, candidates)
    return comparison, {"a": str(path_a), "b": str(path_b), "feeds": count, **comparison.as_dict()}
