"""`onnxopt bench`: side-by-side timing and memory of real models on disk, through click and a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnx.numpy_helper
import onnx.parser
import pytest
from click.testing import CliRunner

from onnxopt.benchmark import BenchConfig, _interleaved_timing
from onnxopt.cli.bench import bench
from onnxopt.model_io import from_proto, save

PROJECT_ROOT = Path(__file__).resolve().parents[2]
FAST = ["--warmup", "2", "--runs", "15"]
BIG_WEIGHT_FLOATS = 1024 * 4096  # 16 MiB of fp32: large enough to show in the memory probe


def _mlp(path: Path, hidden: int, input_name: str = "x") -> Path:
    """x[N,1024] -> MatMul(W[1024,hidden]) -> Relu, with seeded weights, saved to ``path``."""
    proto = onnx.parser.parse_model(f"""
        <ir_version: 8, opset_import: ["": 17]>
        mlp (float[N, 1024] {input_name}) => (float[N, {hidden}] y) {{
            h = MatMul({input_name}, W)
            y = Relu(h)
        }}
    """)
    weights = np.random.default_rng(0).standard_normal((1024, hidden)).astype(np.float32)
    proto.graph.initializer.append(onnx.numpy_helper.from_array(weights, "W"))
    save(from_proto(proto), path)
    return path


@pytest.fixture(scope="module")
def two_models(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("bench")
    small = _mlp(folder / "small.onnx", 16)
    big = _mlp(folder / "big.onnx", BIG_WEIGHT_FLOATS // 1024)
    return small, big


def _one_line_error(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: "), stderr
    assert "Traceback" not in stderr
    return lines[0]


def test_bench_two_models_table_and_json(two_models, tmp_path):
    small, big = two_models
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(bench, [str(small), str(big), "--batch-size", "2", *FAST, "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "small.onnx" in result.stdout and "big.onnx" in result.stdout
    report = json.loads(out.read_text())
    assert report["config"]["batch_size"] == 2 and report["config"]["inputs"] == "random"
    # Timings are facts about one CPU: its architecture and flags go with them, in the JSON and the table.
    from onnxopt.cpu_features import host_cpu
    assert report["machine"]["cpu"] == host_cpu().describe()
    assert host_cpu().describe() in " ".join(result.stdout.split())
    first, second = report["models"]
    assert [first["name"], second["name"]] == ["small.onnx", "big.onnx"]
    for model in report["models"]:
        latency = model["latency"]
        assert 0 < latency["min_ms"] <= latency["p50_ms"] <= latency["p90_ms"] <= latency["max_ms"]
        assert latency["min_ms"] <= latency["mean_ms"] <= latency["max_ms"]
        assert model["runs"] == 15 and model["samples_per_run"] == 2
        # Throughput is samples over time spent: with a constant batch it is batch / mean latency.
        assert model["throughput_samples_per_s"] == pytest.approx(2 * 1000 / latency["mean_ms"], rel=1e-9)
        assert model["memory"]["error"] is None
        assert model["memory"]["peak_rss_bytes"] > 0
        assert model["memory"]["process_peak_rss_bytes"] >= model["memory"]["baseline_rss_bytes"]
        assert model["file_bytes"] == Path(model["path"]).stat().st_size
        assert model["providers"] == ["CPUExecutionProvider"]
    # The big model's 16 MiB of weights must show in its own peak memory and file size.
    big_weight_bytes = BIG_WEIGHT_FLOATS * 4
    assert second["memory"]["peak_rss_bytes"] - first["memory"]["peak_rss_bytes"] >= 0.9 * big_weight_bytes
    assert second["file_bytes"] > big_weight_bytes
    assert first["ratio_to_first"] == {"latency_p50": 1.0, "latency_mean": 1.0, "throughput": 1.0,
                                       "peak_rss": 1.0, "file_bytes": 1.0}
    ratios = second["ratio_to_first"]
    assert ratios["latency_p50"] == pytest.approx(second["latency"]["p50_ms"] / first["latency"]["p50_ms"])
    assert ratios["throughput"] == pytest.approx(second["throughput_samples_per_s"] / first["throughput_samples_per_s"])
    assert ratios["peak_rss"] == pytest.approx(second["memory"]["peak_rss_bytes"] / first["memory"]["peak_rss_bytes"])
    # 256x the multiply-adds: the big model is slower, whatever the noise.
    assert ratios["latency_p50"] > 1.5


def test_bench_with_data_batches_and_different_input_names(tmp_path):
    """DATA holding arrays for both models lets models with different input names run side by side."""
    first = _mlp(tmp_path / "first.onnx", 8, input_name="x")
    other = _mlp(tmp_path / "other.onnx", 8, input_name="features")
    rng = np.random.default_rng(1)
    data = tmp_path / "data.npz"
    np.savez(data, x=rng.standard_normal((6, 1024)).astype(np.float32),
             features=rng.standard_normal((6, 1024)).astype(np.float32))
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(bench, [str(first), str(other), "--inputs", str(data), "--batch-size", "3",
                                        "--no-memory", *FAST, "--json", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["config"]["inputs"] == str(data)
    assert [m["samples_per_run"] for m in report["models"]] == [3, 3]
    assert all(m["memory"] is None and m["ratio_to_first"]["peak_rss"] is None for m in report["models"])


def test_bench_model_with_external_data(tmp_path):
    """Size counts the external data file; the session and the memory probe read the weights from it."""
    proto = onnx.parser.parse_model("""
        <ir_version: 8, opset_import: ["": 17]>
        mlp (float[N, 1024] x) => (float[N, 4096] y) { y = MatMul(x, W) }
    """)
    weights = np.random.default_rng(0).standard_normal((1024, 4096)).astype(np.float32)  # 16 MiB
    proto.graph.initializer.append(onnx.numpy_helper.from_array(weights, "W"))
    info = save(from_proto(proto), tmp_path / "external.onnx", external_data=True)
    assert info.external_data_path is not None and info.external_data_path.stat().st_size >= weights.nbytes
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(bench, [*FAST, str(tmp_path / "external.onnx"), "--json", str(out)])
    assert result.exit_code == 0, result.output
    model = json.loads(out.read_text())["models"][0]
    assert model["file_bytes"] == (tmp_path / "external.onnx").stat().st_size + info.external_data_path.stat().st_size
    # A session over 16 MiB of weights cannot cost less than them (an empty session costs ~6 MiB).
    assert model["memory"]["error"] is None and model["memory"]["peak_rss_bytes"] >= weights.nbytes


@pytest.mark.parametrize(
    ("make_args", "expected"),
    [
        (lambda small, tmp: [str(tmp / "missing.onnx")], "no such file"),
        (lambda small, tmp: [str(tmp / "junk.onnx")], "not a valid ONNX model"),
        (lambda small, tmp: [str(small), str(tmp / "renamed.onnx")], "takes inputs"),
        (lambda small, tmp: [str(small), "--shape", "nope=1,2"], "unknown input"),
        (lambda small, tmp: [str(small), "--inputs", str(tmp / "wrong.npz")], "missing input"),
        (lambda small, tmp: [str(small), "--runs", "0"], "--runs"),
    ],
    ids=["missing-file", "not-onnx", "different-inputs", "unknown-shape", "data-lacks-input", "zero-runs"],
)
def test_bench_bad_input_exits_2_with_one_line(two_models, tmp_path, make_args, expected):
    small, _ = two_models
    (tmp_path / "junk.onnx").write_bytes(b"this is not a protobuf at all" * 10)
    _mlp(tmp_path / "renamed.onnx", 8, input_name="other")
    np.savez(tmp_path / "wrong.npz", unrelated=np.zeros((2, 1024), np.float32))
    result = CliRunner().invoke(bench, [*FAST, "--no-memory", *make_args(small, tmp_path)])
    assert result.exit_code == 2, result.output
    assert expected in _one_line_error(result.stderr)
    assert result.stdout == ""


def test_bench_gpu_provider_never_falls_back_silently(two_models, tmp_path):
    """onnxruntime quietly runs on the CPU when CUDA cannot start; bench must either run on CUDA or refuse."""
    small, _ = two_models
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(bench, [*FAST, "--no-memory", "--provider", "cuda", str(small), "--json", str(out)])
    if result.exit_code == 0:
        assert json.loads(out.read_text())["models"][0]["providers"][0] == "CUDAExecutionProvider"
    else:
        assert result.exit_code == 2, result.output
        assert "cuda" in _one_line_error(result.stderr).lower()  # names what could not start
        assert not out.exists()


def _run_bench_subprocess(*args: str) -> subprocess.CompletedProcess[str]:
    code = "from onnxopt.cli.bench import bench; bench(prog_name='onnxopt bench')"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          cwd=PROJECT_ROOT, timeout=120, check=False)


def test_bench_as_subprocess(two_models, tmp_path):
    small, big = two_models
    out = tmp_path / "bench.json"
    completed = _run_bench_subprocess(str(small), str(big), *FAST, "--json", str(out))
    assert completed.returncode == 0, completed.stderr
    assert "small.onnx" in completed.stdout and "big.onnx" in completed.stdout
    models = json.loads(out.read_text())["models"]
    assert [m["name"] for m in models] == ["small.onnx", "big.onnx"]

    bad = _run_bench_subprocess(str(tmp_path / "missing.onnx"))
    assert bad.returncode == 2
    assert "no such file" in _one_line_error(bad.stderr)
    assert not out.with_name("missing.json").exists()


class _RecordingSession:
    """Stands in for an InferenceSession to record the order of runs."""

    def __init__(self, index: int, log: list[int]) -> None:
        self.index, self.log = index, log

    def get_outputs(self) -> list:
        return []

    def run(self, names, feed) -> list:
        self.log.append(self.index)
        return []


def test_runs_are_interleaved_round_robin():
    log: list[int] = []
    sessions = [_RecordingSession(i, log) for i in range(3)]
    feeds = [[{"x": np.zeros((2, 1), np.float32)}] for _ in sessions]
    seconds, samples = _interleaved_timing(sessions, feeds, BenchConfig(warmup_runs=2, timed_runs=4))
    rounds = [log[i : i + 3] for i in range(0, len(log), 3)]
    assert len(rounds) == 6
    assert all(sorted(r) == [0, 1, 2] for r in rounds)  # one run of each model per round
    assert [r[0] for r in rounds] == [0, 1, 2, 0, 1, 2]  # the starting model rotates
    assert [len(s) for s in seconds] == [4, 4, 4] and samples == [[2] * 4] * 3
