"""Property test: damaged copies of real models through the real CLI keep every bad-input promise.

A few hundred mutants (``tests/model_mutations.py``: one defect each in a copy of one of
onnx's shipped models, the digits CNN, the tiny sample models, or a real model wrapped in
an If or given a local function) go through ``optimize``, ``optimize --preset fp16`` and
``inspect`` in turn. Every run must keep the promises ``tests/bad_input_cases.py`` checks:
exit code 0, 1 or 2, never an internal error or a traceback, nothing written on exit 2,
the input untouched, and an output that passes onnx's full check and loads in
onnxruntime whenever the input did. Defects that always make a model invalid must be
refused with exit 2, and mutations that keep a model valid must not be refused by
``optimize`` or ``inspect``. ``bench/bad_input_fuzz.py`` runs the same with thousands of
cases and several seeds.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.bad_input_cases import COMMANDS, run_case
from tests.model_mutations import Mutant, backend_sources, derived_sources, mutants, sample_sources

SEED = 20261129
CASES = 240

# Defects no valid model can carry: these must always end in exit 2.
ALWAYS_INVALID = {
    "undefined-input", "subgraph-undefined-input", "double-assignment", "cycle", "rename-output",
    "raw-data-length", "typed-data-count", "negative-dim", "duplicate-initializer", "unknown-domain", "ir-version",
}
# Mutations meant to keep a model valid: when onnx agrees (an Identity after a sequence-typed output
# at opset < 14 is not), optimize and inspect must accept them.
STILL_VALID = {"shuffle-nodes", "insert-identity", "duplicate-weight", "dead-node", "unnamed-nodes"}


@functools.lru_cache(maxsize=1)
def all_mutants() -> list[Mutant]:
    """The same mutants in every test worker: sources in a fixed order, one seed."""
    backend = backend_sources()
    samples = sample_sources(("tiny",))
    derived_folder = Path(tempfile.mkdtemp(prefix="onnxopt-derived-"))
    atexit.register(shutil.rmtree, derived_folder, True)
    bases = [source for source in backend if source.name.startswith(("light/", "pytorch-converted/"))][::6]
    sources = backend + samples + derived_sources(derived_folder, bases + samples[:1])
    return mutants(sources, CASES, SEED)


@pytest.mark.parametrize("index", range(CASES))
def test_damaged_model_keeps_the_cli_promises(index: int, tmp_path: Path) -> None:
    mutant = all_mutants()[index]
    command = list(COMMANDS)[index % len(COMMANDS)]
    outcome = run_case(mutant, command, tmp_path)
    assert not outcome.violations(), outcome.as_dict()
    if mutant.kind in ALWAYS_INVALID:
        assert outcome.exit_code == 2, outcome.as_dict()
    valid = outcome.input_full_check or outcome.input_valid_once_sorted
    if mutant.kind in STILL_VALID and valid and command != "optimize-fp16":
        assert outcome.exit_code == 0, outcome.as_dict()


def test_the_mutants_cover_every_kind_and_the_subgraph_and_function_bodies() -> None:
    made = all_mutants()
    kinds = {mutant.kind for mutant in made}
    assert kinds >= ALWAYS_INVALID | STILL_VALID | {"flip-bytes", "truncate-file", "garble-name", "external-entry"}
    assert any(mutant.source.endswith("+if") and mutant.kind == "subgraph-undefined-input" for mutant in made)
    assert any(mutant.source.endswith("+function") for mutant in made)
    assert any(mutant.source == "large_mlp-tiny" for mutant in made), "external data must be damaged too"
