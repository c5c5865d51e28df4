"""The real CLI, through click's CliRunner and as a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnx.helper as oh
import pytest
from click.testing import CliRunner

from onnxopt.cli import cli
from onnxopt.examples import EXAMPLE_INPUTS, EXAMPLE_MODEL
from tests.util import assert_bit_exact, outputs

ONNXOPT = [sys.executable, "-m", "onnxopt.cli"]

DUPLICATED = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[4, 32] x) => (float[4, 32] y) {
    i = Identity(x)
    a = MatMul(i, w1)
    b = MatMul(i, w2)
    y = Add(a, b)
}
"""


def duplicated_model(path: Path) -> Path:
    proto = onnx.parser.parse_model(DUPLICATED)
    weight = np.random.default_rng(0).standard_normal((32, 32)).astype(np.float32)
    proto.graph.initializer.extend(
        [onnx.numpy_helper.from_array(weight, "w1"), onnx.numpy_helper.from_array(weight, "w2")]
    )
    path.write_bytes(proto.SerializeToString())
    return path


def invoke(*args: str) -> object:
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def assert_one_line_error(result: object, code: int, fragment: str) -> None:
    assert result.exit_code == code, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error:") and fragment in lines[0], lines[0]
    assert "Traceback" not in result.output


def test_optimize_default_dedups_and_is_exact(tmp_path: Path) -> None:
    source = duplicated_model(tmp_path / "in.onnx")
    result = invoke("optimize", source, "-o", tmp_path / "out.onnx", "--verify")
    assert result.exit_code == 0, result.output
    assert "before / after" in result.stdout
    written = onnx.load(str(tmp_path / "out.onnx"))
    assert len(written.graph.initializer) == 1
    assert [n.op_type for n in written.graph.node] == ["MatMul", "Add"], "dedup then cse merge the MatMuls"
    feed = {"x": np.random.default_rng(1).standard_normal((4, 32)).astype(np.float32)}
    assert_bit_exact(outputs(source, feed), outputs(tmp_path / "out.onnx", feed))


def test_example_runs_as_a_subprocess(tmp_path: Path) -> None:
    target = tmp_path / "example.onnx"
    done = subprocess.run(
        [*ONNXOPT, "optimize", "--example", "-o", str(target)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert "before / after" in done.stdout and "verified" in done.stdout
    assert target.stat().st_size <= 0.51 * EXAMPLE_MODEL.stat().st_size, "the example runs the fp16 preset"
    feed = dict(np.load(EXAMPLE_INPUTS))
    before, after = outputs(EXAMPLE_MODEL, feed)["logits"], outputs(target, feed)["logits"]
    assert after.dtype == np.float32, "model I/O stays fp32"
    np.testing.assert_array_equal(after.argmax(axis=1), before.argmax(axis=1))
    assert float(np.max(np.abs(after - before))) <= 1e-2 * float(np.max(np.abs(before)))


def test_json_and_reports(tmp_path: Path) -> None:
    source = duplicated_model(tmp_path / "in.onnx")
    result = invoke("optimize", source, "-o", tmp_path / "out.onnx", "--json", "--report", tmp_path / "r.md")
    assert result.exit_code == 0
    summary = json.loads(result.stdout)
    assert summary["before"]["initializers"] == 2 and summary["after"]["initializers"] == 1
    assert summary["output_bytes"] < summary["input_bytes"]
    assert any(p["name"] == "dedup-initializers" and p["status"] == "ok" for p in summary["passes"])
    assert "| file size |" in (tmp_path / "r.md").read_text()
    for suffix in ("json", "html"):
        assert (
            invoke("optimize", source, "-o", tmp_path / "o2.onnx", "--report", tmp_path / f"r.{suffix}").exit_code == 0
        )
    assert json.loads((tmp_path / "r.json").read_text())["pipeline"]
    assert "<table>" in (tmp_path / "r.html").read_text()


def test_pipeline_options_from_flags_and_toml(tmp_path: Path) -> None:
    source = duplicated_model(tmp_path / "in.onnx")
    result = invoke("optimize", source, "-o", tmp_path / "a.onnx", "--passes", "eliminate-identity", "--json")
    assert result.exit_code == 0
    summary = json.loads(result.stdout)
    assert summary["pipeline"] == ["eliminate-identity"] and summary["after"]["initializers"] == 2
    config = tmp_path / "pipeline.toml"
    config.write_text('[[pass]]\nname = "dedup-initializers"\n\n[[pass]]\nname = "eliminate-dead"\n')
    result = invoke("optimize", source, "-o", tmp_path / "b.onnx", "--config", config, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["after"]["initializers"] == 1
    bad = invoke("optimize", source, "-o", tmp_path / "c.onnx", "--passes", "dedup-initializers:no_such=1")
    assert_one_line_error(bad, 2, "no_such")
    bad = invoke("optimize", source, "-o", tmp_path / "c.onnx", "--passes", "no-such-pass")
    assert_one_line_error(bad, 2, "unknown pass")
    bad = invoke("optimize", source, "-o", tmp_path / "c.onnx", "--preset", "no-such-preset")
    assert_one_line_error(bad, 2, "unknown preset")
    assert not (tmp_path / "c.onnx").exists()


def _external_model(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    proto = onnx.parser.parse_model(DUPLICATED)
    weight = np.random.default_rng(0).standard_normal((32, 32)).astype(np.float32)
    proto.graph.initializer.extend(
        [onnx.numpy_helper.from_array(weight, "w1"), onnx.numpy_helper.from_array(weight, "w2")]
    )
    path = folder / "model.onnx"
    onnx.save_model(proto, str(path), save_as_external_data=True, location="model.bin", size_threshold=0)
    return path


def _cycle(path: Path) -> Path:
    graph = oh.make_graph(
        [oh.make_node("Add", ["x", "b"], ["a"]), oh.make_node("Relu", ["a"], ["b"])],
        "cycle",
        [oh.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2])],
        [oh.make_tensor_value_info("b", onnx.TensorProto.FLOAT, [2])],
    )
    path.write_bytes(oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)], ir_version=8).SerializeToString())
    return path


def _bad_input(kind: str, tmp_path: Path) -> tuple[Path, str]:
    if kind == "not-onnx":
        path = tmp_path / "notes.onnx"
        path.write_text("this is not a model\n" * 20)
        return path, "not a valid ONNX model"
    if kind == "truncated":
        path = tmp_path / "trunc.onnx"
        path.write_bytes(EXAMPLE_MODEL.read_bytes()[:30_000])
        return path, "not a valid ONNX model"
    if kind == "missing-external":
        path = _external_model(tmp_path / "m")
        (tmp_path / "m" / "model.bin").unlink()
        return path, "not found"
    if kind == "external-outside":
        path = _external_model(tmp_path / "m")
        proto = onnx.load(str(path), load_external_data=False)
        for tensor in proto.graph.initializer:
            for entry in tensor.external_data:
                if entry.key == "location":
                    entry.value = "../model.bin"
        os.replace(tmp_path / "m" / "model.bin", tmp_path / "model.bin")
        path.write_bytes(proto.SerializeToString())
        return path, "outside the model folder"
    if kind == "cycle":
        return _cycle(tmp_path / "cycle.onnx"), "cycle"
    if kind == "unknown-op":
        path = tmp_path / "unknown.onnx"
        proto = onnx.parser.parse_model(
            '<ir_version: 8, opset_import: ["" : 13]> g (float[2] x) => (float[2] y) { y = Gelu(x) }'
        )
        path.write_bytes(proto.SerializeToString())
        return path, "Gelu"
    if kind == "undefined-read":
        path = tmp_path / "undefined.onnx"
        proto = onnx.parser.parse_model(DUPLICATED)
        proto.graph.node[1].input[0] = "nowhere_673"
        path.write_bytes(proto.SerializeToString())
        return path, "reads 'nowhere_673', which nothing defines"
    if kind == "short-weight":
        path = duplicated_model(tmp_path / "short.onnx")
        proto = onnx.load(str(path))
        proto.graph.initializer[1].raw_data = proto.graph.initializer[1].raw_data[:216]
        path.write_bytes(proto.SerializeToString())
        return path, "initializer 'w2': raw_data holds 216 bytes, but dims [32, 32] of FLOAT need 4096"
    if kind == "not-utf8":
        path = tmp_path / "flipped.onnx"
        data = duplicated_model(tmp_path / "source.onnx").read_bytes()
        path.write_bytes(data.replace(b"MatMul", b"Mat\xc3ul", 1))
        return path, "is not valid UTF-8"
    raise AssertionError(kind)


BAD_KINDS = ["not-onnx", "truncated", "missing-external", "external-outside", "cycle", "unknown-op", "undefined-read",
             "short-weight", "not-utf8"]


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_bad_input_exits_2_with_one_line_and_touches_nothing(kind: str, tmp_path: Path) -> None:
    source, fragment = _bad_input(kind, tmp_path)
    before = (source.read_bytes(), os.stat(source).st_mtime_ns)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    result = invoke("optimize", source, "-o", out_dir / "out.onnx")
    assert_one_line_error(result, 2, fragment)
    assert (source.read_bytes(), os.stat(source).st_mtime_ns) == before
    assert list(out_dir.iterdir()) == [], "no partial output may be left"


def _matmul_model(path: Path, rows: str) -> Path:
    proto = onnx.parser.parse_model(DUPLICATED.replace("[4, 32]", f"[{rows}, 32]"))
    weight = np.random.default_rng(0).standard_normal((32, 32)).astype(np.float32)
    proto.graph.initializer.extend([onnx.numpy_helper.from_array(weight, name) for name in ("w1", "w2")])
    path.write_bytes(proto.SerializeToString())
    return path


@pytest.mark.parametrize("options", [["--verify"], ["--preset", "fp16"]])
def test_random_feeds_too_large_for_memory_exit_2_before_any_allocation(options: list[str], tmp_path: Path) -> None:
    source = _matmul_model(tmp_path / "rows.onnx", "rows")
    result = invoke("optimize", source, "-o", tmp_path / "out.onnx", *options, "--shape", "x=1099511627776,32")
    assert_one_line_error(result, 2, "input 'x': a random feed of shape [1099511627776, 32] (float32) needs 128.0 TiB")
    assert "give smaller sizes with --shape x=d0,d1,..." in result.stderr
    assert not (tmp_path / "out.onnx").exists()
    fixed = invoke("optimize", source, "-o", tmp_path / "out.onnx", *options, "--shape", "x=4,32")
    assert fixed.exit_code == 0, fixed.output
    declared = _matmul_model(tmp_path / "huge.onnx", "1099511627776")
    result = invoke("optimize", declared, "-o", tmp_path / "out2.onnx", *options)
    assert_one_line_error(result, 2, "the model declares this shape as fixed")
    assert not (tmp_path / "out2.onnx").exists()
    assert invoke("optimize", declared, "-o", tmp_path / "out2.onnx").exit_code == 0, "no random feed, no limit"


def test_bad_input_as_subprocess_has_no_traceback(tmp_path: Path) -> None:
    source, _ = _bad_input("truncated", tmp_path)
    done = subprocess.run(
        [*ONNXOPT, "optimize", str(source), "-o", str(tmp_path / "o.onnx")], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_refuses_to_overwrite_its_input(tmp_path: Path) -> None:
    source = duplicated_model(tmp_path / "in.onnx")
    before = source.read_bytes()
    assert_one_line_error(invoke("optimize", source, "-o", source), 2, "never overwrites its input")
    assert source.read_bytes() == before


def test_custom_domain_ops_are_optimized_around(tmp_path: Path) -> None:
    proto = onnx.parser.parse_model(
        '<ir_version: 8, opset_import: ["" : 17, "com.example" : 1]> g (float[2] x) => (float[2] y) '
        "{ a = Identity(x) \n b = com.example.Fancy(a) \n y = Identity(b) }"
    )
    source = tmp_path / "custom.onnx"
    source.write_bytes(proto.SerializeToString())
    result = invoke("optimize", source, "-o", tmp_path / "out.onnx")
    assert result.exit_code == 0, result.output
    written = onnx.load(str(tmp_path / "out.onnx"))
    assert [(n.domain, n.op_type) for n in written.graph.node] == [("com.example", "Fancy")]
    assert [o.name for o in written.graph.output] == ["y"]


def test_external_data_model_through_cli(tmp_path: Path) -> None:
    source = _external_model(tmp_path / "m")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    result = invoke("optimize", source, "-o", out_dir / "opt.onnx", "--verify")
    assert result.exit_code == 0, result.output
    assert (out_dir / "opt.onnx.data").stat().st_size == 32 * 32 * 4
    feed = {"x": np.ones((4, 32), np.float32)}
    assert_bit_exact(outputs(source, feed), outputs(out_dir / "opt.onnx", feed))


def test_bad_data_exits_2(tmp_path: Path) -> None:
    source = duplicated_model(tmp_path / "in.onnx")
    wrong_name = tmp_path / "wrong.npz"
    np.savez(wrong_name, y=np.ones((3, 4, 32), np.float32))
    assert_one_line_error(
        invoke("optimize", source, "-o", tmp_path / "o.onnx", "--verify", "--inputs", wrong_name), 2, "missing input"
    )
    wrong_rank = tmp_path / "rank.npz"
    np.savez(wrong_rank, x=np.ones((3, 32), np.float32))
    assert_one_line_error(
        invoke("optimize", source, "-o", tmp_path / "o.onnx", "--verify", "--inputs", wrong_rank), 2, "rank"
    )
    damaged = tmp_path / "damaged.npz"
    damaged.write_bytes(wrong_rank.read_bytes()[:100])
    assert_one_line_error(
        invoke("optimize", source, "-o", tmp_path / "o.onnx", "--verify", "--inputs", damaged), 2, "not a readable .npz"
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_one_line_error(
        invoke("optimize", source, "-o", tmp_path / "o.onnx", "--verify", "--inputs", empty), 2, "no .npz"
    )


def test_inspect_compare_and_passes(tmp_path: Path) -> None:
    source = duplicated_model(tmp_path / "in.onnx")
    info = json.loads(invoke("inspect", source, "--json").stdout)
    assert info["ops"] == {"MatMul": 2, "Identity": 1, "Add": 1}
    assert info["duplicate_bytes"] == 32 * 32 * 4 and info["parameters"] == 2 * 32 * 32
    assert info["opsets"] == {"ai.onnx": 17} and info["inputs"][0]["name"] == "x"
    assert "duplicate weights: 1 groups" in invoke("inspect", source).stdout
    invoke("optimize", source, "-o", tmp_path / "out.onnx")
    compared = json.loads(invoke("compare", source, tmp_path / "out.onnx", "--json").stdout)
    assert compared["identical"] is True and compared["max_abs_error"] == 0.0
    listed = json.loads(invoke("passes", "--json").stdout)
    names = {p["name"] for p in listed["passes"]}
    assert {
        "dedup-initializers",
        "eliminate-dead",
        "eliminate-identity",
        "fold-constants",
        "cse",
        "fuse-conv-bn",
        "fuse-matmul-add",
    } <= names
    assert all(p["contract"] in ("exact", "tolerance", "lossy") for p in listed["passes"])
    assert "default" in listed["presets"]
    assert_one_line_error(invoke("inspect", tmp_path / "missing.onnx"), 2, "no such file")


@pytest.mark.parametrize("command", ["compare", "bench", "inspect", "check"])
def test_every_command_that_reads_a_model_refuses_a_damaged_one(command: str, tmp_path: Path) -> None:
    source, fragment = _bad_input("not-utf8", tmp_path)
    good = duplicated_model(tmp_path / "good.onnx")
    args = {"compare": [source, good], "bench": [source], "inspect": [source],
            "check": ["--target", "tensorrt", source]}[command]
    assert_one_line_error(invoke(command, *args), 2, fragment)
