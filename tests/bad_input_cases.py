"""Run one damaged model through the real CLI and judge it by the CLI's promises.

The promises (README, "Bad input"): the exit code is 0, 1 or 2; an error is one line on
stderr, never a traceback and never "internal error" for a damaged file; exit 2 writes
nothing; the input files are never changed and no temporary file is left; and an output
written with exit 0 (or 1, after a rolled-back pass) passes
``onnx.checker.check_model(full_check=True)`` and loads in onnxruntime whenever the input
did. The oracle for the input is onnx's and onnxruntime's own verdict, not onnxopt's.

Shared by ``tests/cli/test_bad_input_property.py`` (a few hundred cases in the default
suite) and ``bench/bad_input_fuzz.py`` (thousands, several seeds, results in bench/results).
"""

from __future__ import annotations

import os
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

import onnx
import onnxruntime as ort
from click.testing import CliRunner

from onnxopt.cli import cli
from onnxopt.onnx_check import memory_ceiling, virtual_memory_bytes
from tests.model_mutations import Mutant

COMMANDS: dict[str, list[str]] = {
    "optimize": ["optimize", "{input}", "-o", "{output}"],
    "optimize-fp16": ["optimize", "{input}", "-o", "{output}", "--preset", "fp16"],
    "inspect": ["inspect", "{input}", "--json"],
}


ORACLE_MEMORY_BYTES = 2 << 30


def _full_check_here(path: Path) -> bool:
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception:  # any complaint, of any type, is a "no"
        return False
    return True


def passes_full_check(path: Path) -> bool:
    """onnx's own verdict: ``check_model(full_check=True)`` on the file (external data beside it).

    onnx's shape inference can exhaust memory or crash on a damaged file (an Expand whose
    shape input is declared with 2^62 elements takes 20 GB), so where the OS allows it the
    check runs in a forked child under an address-space cap; a child that dies is a "no".
    """
    if not hasattr(os, "fork") or virtual_memory_bytes() is None:
        return _full_check_here(path)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            quiet = os.open(os.devnull, os.O_WRONLY)
            os.dup2(quiet, 2)
            with memory_ceiling(ORACLE_MEMORY_BYTES):
                code = 0 if _full_check_here(path) else 1
        finally:
            os._exit(code)
    _pid, status = os.waitpid(pid, 0)
    return os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


def passes_full_check_once_sorted(path: Path) -> bool:
    """onnx's verdict on the file with its main graph's nodes put in dependency order.

    onnxopt sorts nodes on import, so a model whose only defect is node order is one it
    may accept; this tells such inputs apart from invalid ones (a plain Kahn sort,
    independent of onnxopt's own).
    """
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception:
        return False
    nodes = list(proto.graph.node)
    available = {value.name for value in proto.graph.input} | {init.name for init in proto.graph.initializer}
    ordered, pending = [], nodes
    while pending:
        ready = [node for node in pending if all(not name or name in available for name in node.input)]
        if not ready:
            return False
        for node in ready:
            available.update(node.output)
        ordered += ready
        pending = [node for node in pending if not any(node is done for done in ready)]
    if all(first is second for first, second in zip(ordered, nodes, strict=True)):
        return False  # already in order: sorting cannot help
    sorted_proto = onnx.ModelProto()
    sorted_proto.CopyFrom(proto)
    del sorted_proto.graph.node[:]
    sorted_proto.graph.node.extend(ordered)
    sorted_path = path.with_name("sorted-for-oracle.onnx")
    try:
        sorted_path.write_bytes(sorted_proto.SerializeToString())
        return passes_full_check(sorted_path)
    finally:
        sorted_path.unlink()


def loads_in_onnxruntime(path: Path) -> bool:
    """onnxruntime's verdict: a CPU session can be created (graph optimizations off)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 4
    try:
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception:
        return False
    return True


def _snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {path.name: (path.read_bytes(), os.stat(path).st_mtime_ns) for path in sorted(folder.iterdir())}


@dataclass
class Outcome:
    """What one CLI run did with one mutant, and what onnx and onnxruntime say about its files."""

    source: str
    kind: str
    description: str
    command: str
    exit_code: int
    error_lines: list[str]
    output_written: bool
    input_unchanged: bool
    leftovers: list[str]
    input_full_check: bool
    input_loads: bool  # asked only of inputs onnx's full check accepts (as they are or once sorted)
    input_valid_once_sorted: bool = False
    output_full_check: bool | None = None
    output_loads: bool | None = None
    uncaught: str = ""
    stderr_tail: str = ""
    notes: list[str] = field(default_factory=list)

    def violations(self) -> list[str]:
        """Every broken promise, in words; empty when the run kept them all."""
        broken = []
        if self.uncaught:
            broken.append(f"uncaught exception (a traceback for the user): {self.uncaught}")
        if self.exit_code not in (0, 1, 2):
            broken.append(f"exit code {self.exit_code}")
        if any("internal error" in line for line in self.error_lines):
            broken.append(f"internal error: {self.error_lines}")
        if "Traceback" in self.stderr_tail:
            broken.append("traceback on stderr")
        if self.exit_code != 0 and len(self.error_lines) < 1:
            broken.append("failed without an error line")
        if self.exit_code == 2 and len(self.error_lines) != 1:
            broken.append(f"bad input reported in {len(self.error_lines)} error lines")
        if self.exit_code == 2 and self.output_written:
            broken.append("exit 2 but an output was written")
        if not self.input_unchanged:
            broken.append("the input files changed")
        if self.leftovers:
            broken.append(f"files left behind: {self.leftovers}")
        valid_input = self.input_full_check or self.input_valid_once_sorted
        if self.output_written and valid_input and self.output_full_check is False:
            broken.append(f"exit {self.exit_code} output fails the full check, its input passed it")
        if self.output_written and self.input_loads and self.output_loads is False:
            broken.append(f"exit {self.exit_code} output does not load in onnxruntime, its input did")
        return broken

    @property
    def outcome(self) -> str:
        """A short class for counting: the exit code, and for exit 0 whether onnx's full check accepts the input."""
        if self.uncaught:
            return "uncaught"
        if self.exit_code == 0:
            if self.input_full_check:
                return "0 (input valid)"
            return "0 (input valid once sorted)" if self.input_valid_once_sorted else "0 (input invalid)"
        return str(self.exit_code)

    def as_dict(self) -> dict:
        result = asdict(self)
        result["outcome"] = self.outcome
        result["violations"] = self.violations()
        return result


def run_case(mutant: Mutant, command: str, folder: Path) -> Outcome:
    """Write ``mutant`` into ``folder``/in, run ``command`` on it through the real CLI, and judge the result."""
    source_dir, output_dir = folder / "in", folder / "out"
    source = mutant.write(source_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    output = output_dir / "model.onnx"
    input_full_check = passes_full_check(source)
    valid_once_sorted = not input_full_check and passes_full_check_once_sorted(source)
    # onnxruntime runs onnx's shape inference on load, uncapped: ask it only about inputs onnx accepts.
    input_loads = (input_full_check or valid_once_sorted) and loads_in_onnxruntime(source)
    before = _snapshot(source_dir)
    args = [part.format(input=source, output=output) for part in COMMANDS[command]]
    uncaught = ""
    try:
        result = CliRunner().invoke(cli, args, catch_exceptions=False)
        exit_code, stderr = result.exit_code, result.stderr
    except BaseException as error:
        exit_code, stderr = -1, ""
        uncaught = f"{type(error).__name__}: {str(error)[:200]} at {traceback.format_exc().splitlines()[-3].strip()}"
    written = output.exists()
    leftovers = sorted(path.name for path in output_dir.iterdir() if path.name not in ("model.onnx", "model.onnx.data"))
    leftovers += sorted(name for name in _snapshot(source_dir) if name not in before)
    outcome = Outcome(
        source=mutant.source,
        kind=mutant.kind,
        description=mutant.description,
        command=command,
        exit_code=exit_code,
        error_lines=[line for line in stderr.splitlines() if line.startswith("error:")],
        output_written=written,
        input_unchanged=_snapshot(source_dir) == before if source_dir.exists() else False,
        leftovers=leftovers,
        input_full_check=input_full_check,
        input_loads=input_loads,
        input_valid_once_sorted=valid_once_sorted,
        uncaught=uncaught,
        stderr_tail=stderr[-2000:],
    )
    if written:
        outcome.output_full_check = passes_full_check(output)
        outcome.output_loads = loads_in_onnxruntime(output)
    return outcome
