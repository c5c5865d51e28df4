"""Thousands of damaged real models through the CLI: does every run keep the bad-input promises?

Each case is one mutant (``tests/model_mutations.py``: one defect in a copy of a real
model) run through one command (``optimize``, ``optimize --preset fp16``, ``inspect``) of the
real CLI, in a forked child process so that a crash of onnx's or onnxruntime's native code
would show up as a crash instead of ending the run, and under an address-space cap so
that a runaway allocation fails as "out of memory" instead of taking the machine's memory.
``tests/bad_input_cases.py`` judges each run against the CLI's promises (exit codes, one
error line, nothing written on exit 2, input unchanged, valid output whenever the input
was valid).

    python -m bench.bad_input_fuzz --seeds 1,2,3 --cases 1000
    python -m bench.bad_input_fuzz --seeds 7 --cases 50          # a quick look

Writes ``bench/results/bad_input_fuzz.md`` and ``.json`` (counts per outcome, per kind and
per command, every violation in full, the machine and its CPU flags).
"""

from __future__ import annotations

import argparse
import collections
import datetime
import json
import logging
import os
import pickle
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from onnxopt.benchmark import machine_info
from onnxopt.cpu_features import host_cpu
from onnxopt.onnx_check import memory_ceiling
from tests.bad_input_cases import COMMANDS, Outcome, run_case
from tests.model_mutations import Mutant, Source, backend_sources, derived_sources, mutants, sample_sources

logger = logging.getLogger("bench.bad_input_fuzz")

RESULTS = Path(__file__).resolve().parent / "results"
# Each case runs under this much address space beyond the driver's: a case that would take the
# machine's memory fails with MemoryError (the CLI's "out of memory", exit 1) instead.
CASE_MEMORY_BYTES = 3 << 30


def cpu_flags() -> list[str]:
    """The SIMD flags of this CPU that matter to onnxruntime's kernels (``onnxopt.cpu_features.host_cpu``)."""
    wanted = ("avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx_vnni",
              "avx512_bf16", "amx_tile", "asimd", "asimddp", "sve")
    return [flag for flag in wanted if flag in host_cpu().flags]


def _run_isolated(mutant: Mutant, command: str, folder: Path) -> Outcome:
    """Run one case in a forked child; a child killed by a signal becomes an "uncaught" outcome."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: run, send the pickled outcome, leave without cleanup handlers
        os.close(read_end)
        quiet = os.open(os.devnull, os.O_WRONLY)  # onnxruntime prints its fallbacks; the outcome says enough
        os.dup2(quiet, 1)
        os.dup2(quiet, 2)
        code = 0
        try:
            with memory_ceiling(CASE_MEMORY_BYTES):
                payload = pickle.dumps(run_case(mutant, command, folder))
            with os.fdopen(write_end, "wb") as pipe:
                pipe.write(payload)
        except BaseException:
            code = 3
        os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        payload = pipe.read()
    _pid, status = os.waitpid(pid, 0)
    if payload:
        return pickle.loads(payload)
    signal_number = os.WTERMSIG(status) if os.WIFSIGNALED(status) else 0
    return Outcome(mutant.source, mutant.kind, mutant.description, command, -1, [], False, True, [], False, False,
                   uncaught=f"child died (signal {signal_number}, status {status})")


def _sources(folder: Path, sizes: tuple[str, ...]) -> list[Source]:
    backend = backend_sources()
    samples = sample_sources(sizes)
    wrap_bases = [source for source in backend if "light" in source.name or "pytorch-converted" in source.name][::4]
    derived = derived_sources(folder / "derived", wrap_bases + samples[:1])
    return backend + samples + derived


def _unmutated(source: Source) -> Mutant:
    return Mutant(source.name, "none (unmutated source)", "the source model as it is", source.path.read_bytes(),
                  {path.name: path.read_bytes() for path in source.data_files})


def run(seeds: list[int], cases: int, commands: list[str], sizes: tuple[str, ...],
        unmutated: bool = True) -> dict[str, Any]:
    """Run ``cases`` mutants per seed, each through one command (cycling), and collect outcomes.

    With ``unmutated`` every source also goes through every command as it is: valid
    inputs, whose outputs must pass onnx's full check.
    """
    started = time.perf_counter()
    outcomes: list[Outcome] = []
    with tempfile.TemporaryDirectory(prefix="onnxopt-fuzz-") as work:
        sources = _sources(Path(work), sizes)
        logger.info("%d source models", len(sources))
        for index, source in enumerate(sources if unmutated else []):
            for command in commands:
                folder = Path(work) / f"source-{index}-{command}"
                outcome = _run_isolated(_unmutated(source), command, folder)
                outcomes.append(outcome)
                if outcome.violations():
                    logger.warning("source %s %s: %s", source.name, command, outcome.violations())
                _remove_tree(folder)
        for seed in seeds:
            for index, mutant in enumerate(mutants(sources, cases, seed)):
                command = commands[index % len(commands)]
                folder = Path(work) / f"s{seed}-{index}"
                outcome = _run_isolated(mutant, command, folder)
                outcomes.append(outcome)
                if outcome.violations():
                    logger.warning("seed %d case %d %s %s %s: %s", seed, index, mutant.source, mutant.kind, command,
                                   outcome.violations())
                if index % 100 == 0:
                    logger.info("seed %d: %d/%d cases", seed, index, cases)
                _remove_tree(folder)
    return summarize(outcomes, seeds, cases, commands, time.perf_counter() - started, len(sources))


def _remove_tree(folder: Path) -> None:
    for path in sorted(folder.rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    folder.rmdir()


# Which step refused a model, recognised from the words of its one-line message. The random
# feed guard first (a pass quotes its message), then a pass's own refusals, then validation's steps.
REFUSAL_STEPS = (
    ("random feed size", ("a random feed of shape",)),
    ("a pass refused the model", ("error: fp16", "error: qdq", "error: weight-only", "error: pass ")),
    ("protobuf parse", ("not a valid ONNX model", "empty file")),
    ("UTF-8 text", ("not valid UTF-8",)),
    ("element types and dims", ("element type", "dimension", "more than any machine can address", "output's rank")),
    ("stored data lengths", ("raw_data holds", "entries, but", "external data", "holds no data", "cannot hold them",
                             "cannot use raw_data", "stores its data twice", "external location",
                             "outside the model folder", "absolute path", "not found beside", "stored in segments")),
    ("scopes and cycles", ("which nothing defines", "defined twice", "cycle", "redefines a value",
                           "not produced by anything", "does not import", "listed twice", "calls itself")),
    ("onnx checker and shape inference", ("invalid ONNX model", "value_info annotations", "shape inference needs")),
    ("graph import", ("cannot import graph",)),
)


def refusal_step(line: str) -> str:
    """The validation step (or later stage) a one-line error message comes from."""
    for step, fragments in REFUSAL_STEPS:
        if any(fragment in line for fragment in fragments):
            return step
    return "other: " + line.split(": ", 2)[-1][:60]


def summarize(outcomes: list[Outcome], seeds: list[int], cases: int, commands: list[str], seconds: float,
              source_count: int) -> dict[str, Any]:
    """Counts per outcome, per kind and per command, and every violation."""
    by_outcome = collections.Counter(outcome.outcome for outcome in outcomes)
    by_kind: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    by_command: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for outcome in outcomes:
        by_kind[outcome.kind][outcome.outcome] += 1
        by_command[outcome.command][outcome.outcome] += 1
    violations = [dict(outcome.as_dict(), stderr_tail=outcome.stderr_tail[-500:])
                  for outcome in outcomes if outcome.violations()]
    exit0_invalid = sum(1 for outcome in outcomes if outcome.outcome == "0 (input invalid)")
    # Refused although onnx accepts the input: legitimate (a dim too large for a random feed) or too strict.
    refusals = collections.Counter(refusal_step(o.error_lines[-1]) for o in outcomes
                                   if o.exit_code == 2 and o.error_lines)
    refused_valid = [
        {"source": o.source, "kind": o.kind, "description": o.description, "command": o.command,
         "loads_in_onnxruntime": o.input_loads, "error": o.error_lines[-1] if o.error_lines else ""}
        for o in outcomes if o.exit_code == 2 and (o.input_full_check or o.input_valid_once_sorted)
    ]
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join(["python -m bench.bad_input_fuzz", *sys.argv[1:]]),
        "machine": machine_info("cpu"),
        "cpu_flags": cpu_flags(),
        "python": platform.python_version(),
        "seeds": seeds,
        "cases_per_seed": cases,
        "commands": commands,
        "sources": source_count,
        "total_runs": len(outcomes),
        "seconds": round(seconds, 1),
        "by_outcome": dict(sorted(by_outcome.items())),
        "by_kind": {kind: dict(sorted(counts.items())) for kind, counts in sorted(by_kind.items())},
        "by_command": {command: dict(sorted(counts.items())) for command, counts in sorted(by_command.items())},
        "exit0_with_invalid_input": exit0_invalid,
        "exit2_by_step": dict(refusals.most_common()),
        "refused_valid_inputs": refused_valid,
        "exit1_runs": [{"source": o.source, "kind": o.kind, "command": o.command, "errors": o.error_lines}
                       for o in outcomes if o.exit_code == 1],
        "violations": violations,
    }


def markdown(summary: dict[str, Any]) -> str:
    """The results as a Markdown report."""
    outcomes = sorted({key for counts in summary["by_kind"].values() for key in counts})
    lines = [
        "# Bad input: damaged real models through the CLI",
        "",
        f"Command: `{summary['command']}`  ",
        f"Date: {summary['date']}  ",
        f"Machine: {summary['machine']['platform']}, {summary['machine']['cpu_count']} cores, onnxruntime "
        f"{summary['machine']['onnxruntime']}; CPU flags: {', '.join(summary['cpu_flags']) or 'unknown'}  ",
        f"Seeds {summary['seeds']}, {summary['cases_per_seed']} mutants each, {summary['sources']} source models, "
        f"commands {', '.join(summary['commands'])} in turn, plus every source unmutated through every command: "
        f"{summary['total_runs']} runs in {summary['seconds']} s.",
        "",
        "Outcome: the exit code; `0 (input valid)` / `0 (input valid once sorted)` / `0 (input invalid)` say "
        "whether onnx's full check accepts the mutated input (as it is, or with its nodes in dependency order).",
        "",
        f"**Violations of the CLI's promises: {len(summary['violations'])}**; exit 0 with an input that fails "
        f"onnx's full check: {summary['exit0_with_invalid_input']}.",
        "",
        "| outcome | runs |",
        "|---|---:|",
    ]
    lines += [f"| {key} | {value} |" for key, value in summary["by_outcome"].items()]
    lines += ["", "| mutation | " + " | ".join(outcomes) + " |", "|---|" + "---:|" * len(outcomes)]
    for kind, counts in summary["by_kind"].items():
        lines.append(f"| {kind} | " + " | ".join(str(counts.get(key, 0)) for key in outcomes) + " |")
    lines += ["", "| exit 2 raised by | runs |", "|---|---:|"]
    lines += [f"| {step} | {count} |" for step, count in summary["exit2_by_step"].items()]
    lines += ["", "| command | " + " | ".join(outcomes) + " |", "|---|" + "---:|" * len(outcomes)]
    for command, counts in summary["by_command"].items():
        lines.append(f"| {command} | " + " | ".join(str(counts.get(key, 0)) for key in outcomes) + " |")
    if summary["refused_valid_inputs"]:
        lines += ["", "## Exit 2 on inputs that onnx's full check accepts", "",
                  "Not promises broken by themselves; each line says why onnxopt refused.", ""]
        for refused in summary["refused_valid_inputs"]:
            lines.append(f"- {refused['source']} / {refused['kind']} ({refused['description']}) / {refused['command']}"
                         f" (onnxruntime {'loads' if refused['loads_in_onnxruntime'] else 'refuses'} it): "
                         f"`{refused['error']}`")
    if summary["exit1_runs"]:
        lines += ["", "## Exit 1 (a pass rolled back or failed; the output is the model from before it)", ""]
        for run in summary["exit1_runs"]:
            lines.append(f"- {run['source']} / {run['kind']} / {run['command']}: `{' | '.join(run['errors'])[:300]}`")
    if summary["violations"]:
        lines += ["", "## Violations", ""]
        for violation in summary["violations"]:
            lines.append(f"- {violation['source']} / {violation['kind']} ({violation['description']}) / "
                         f"{violation['command']}: {'; '.join(violation['violations'])}")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="1,2,3", help="comma-separated seeds")
    parser.add_argument("--cases", type=int, default=1000, help="mutants per seed")
    parser.add_argument("--commands", default=",".join(COMMANDS), help="commands to cycle through")
    parser.add_argument("--sizes", default="tiny", help="sizes of the sample models (tiny, small)")
    parser.add_argument("--no-unmutated", action="store_true", help="skip the runs of the unmutated sources")
    parser.add_argument("--out", type=Path, default=RESULTS / "bad_input_fuzz", help="results path without suffix")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    summary = run([int(s) for s in args.seeds.split(",")], args.cases, args.commands.split(","),
                  tuple(args.sizes.split(",")), unmutated=not args.no_unmutated)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(summary, indent=2, default=str))
    args.out.with_suffix(".md").write_text(markdown(summary))
    print(markdown(summary))


if __name__ == "__main__":
    main()
