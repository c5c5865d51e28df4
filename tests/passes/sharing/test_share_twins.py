"""share-twins: golden graphs per rewrite form, negatives, subgraphs, external data, the real CLI."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.numpy_helper
import onnx.parser
import onnx_graphsurgeon as gs
import pytest

import onnxopt.external_data
import onnxopt.tensor_content
from onnxopt.external_data import ExternalLazyValues
from onnxopt.model_io import Model, from_proto, load, save
from onnxopt.passes import PRESETS
from onnxopt.passes.sharing import share_twins, twin_search
from onnxopt.passes.sharing.share_twins import ShareTwins
from onnxopt.passes.sharing.twin_search import Relation, SearchCounters, candidate_perms, find_relation
from onnxopt.runtime import create_session, run_session
from tests.util import assert_bit_exact, outputs, random_feed_for, run_pass

RNG = np.random.default_rng(11)


def _model(text: str, weights: dict[str, np.ndarray]) -> Model:
    proto = onnx.parser.parse_model(text)
    proto.graph.initializer.extend(onnx.numpy_helper.from_array(value, name) for name, value in weights.items())
    return from_proto(proto)


def _weights(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def _reads(graph: gs.Graph) -> dict[str, list[str]]:
    return {node.outputs[0].name: [t.name for t in node.inputs] for node in graph.nodes}


def _ops(graph: gs.Graph) -> list[str]:
    return sorted(node.op for node in graph.nodes)


def _exact(before: Model, after: Model, feeds: list[dict[str, np.ndarray]] | None = None) -> None:
    """Bit-identical under onnxruntime with its graph optimizations off (nothing folded) and on."""
    for feed in feeds or [random_feed_for(before, seed) for seed in range(2)]:
        assert_bit_exact(outputs(before, feed), outputs(after, feed))
        folded = [run_session(create_session(m, optimize=True), feed) for m in (before, after)]
        assert_bit_exact(*folded)


def test_gemm_reads_the_kept_tensor_through_transB():
    kept = _weights(8, 6)
    # wt [6, 8] holds kᵀ; x @ wtᵀ == x @ k: the Gemm can read k with transB = 0 (the 3-D MatMul cannot change).
    model = _model("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[2, 8] x, float[1, 3, 8] z) => (float[2, 6] y, float[1, 3, 6] w) {
            y = Gemm<transB = 1>(x, wt)
            w = MatMul(z, k)
        }
    """, {"k": kept, "wt": kept.T.copy()})
    new, result = run_pass(ShareTwins, model, min_tensor_bytes=16)
    assert result.modified and result.stats["gemm_flipped"] == 1 and result.stats["nodes_added"] == 0
    assert _reads(new.graph) == {"y": ["x", "k"], "w": ["z", "k"]}
    gemm = next(node for node in new.graph.nodes if node.op == "Gemm")
    assert gemm.attrs["transB"] == 0
    assert result.stats["bytes_saved"] == 8 * 6 * 4
    [decision] = result.stats["decisions"]
    assert decision == {"pass": "share-twins", "tensor": "wt", "kept": "k", "relation": "transpose[1, 0]",
                        "bytes_saved": 192, "nodes_added": 0}
    _exact(model, new)


def test_two_dimensional_matmul_becomes_gemm_with_transB():
    table = _weights(6, 8)
    model = _model("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[2, 8] x, float[6, 8] z) => (float[2, 6] y, float[6, 8] s) {
            y = MatMul(x, t)
            s = Add(z, k)
        }
    """, {"k": table, "t": table.T.copy()})
    new, result = run_pass(ShareTwins, model, min_tensor_bytes=16)
    # Keeping k costs nothing (the MatMul becomes Gemm(x, k, transB=1)); keeping t would add a Transpose.
    assert result.stats["matmul_to_gemm"] == 1 and result.stats["nodes_added"] == 0
    assert _ops(new.graph) == ["Add", "Gemm"]
    assert _reads(new.graph) == {"y": ["x", "k"], "s": ["z", "k"]}
    _exact(model, new)


def test_tied_head_keeps_the_matmul_weight_and_gathers_from_its_transpose():
    """GPT-2 as exported: the embedding table and, for the head's MatMul, the table transposed."""
    table = _weights(10, 4)
    model = _model("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (int64[1, 3] ids) => (float[1, 3, 10] logits) {
            h = Gather(wte, ids)
            logits = MatMul(h, lm_head)
        }
    """, {"wte": table, "lm_head": table.T.copy()})
    new, result = run_pass(ShareTwins, model, min_tensor_bytes=16)
    assert result.stats["twins_shared"] == 1 and result.stats["nodes_added"] == 1
    # The MatMul keeps reading an initializer (onnxruntime's constant-weight kernel, bit-exact even unfolded);
    # the Gather, which only copies rows, reads the transposed head under the table's old name.
    transpose = next(node for node in new.graph.nodes if node.op == "Transpose")
    assert transpose.attrs["perm"] == [1, 0] and transpose.inputs[0].name == "lm_head"
    assert _reads(new.graph)["logits"] == ["h", "lm_head"] and _reads(new.graph)["h"] == ["wte", "ids"]
    assert isinstance(transpose.inputs[0], gs.Constant) and not isinstance(transpose.outputs[0], gs.Constant)
    _exact(model, new, [{"ids": np.array([[0, 9, 4]], dtype=np.int64)}])


def test_consumer_transpose_composes_with_ours():
    kernel = _weights(3, 4, 5)
    model = _model("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[3, 4, 5] z, float[3, 4, 5] u) => (float[3, 4, 5] y, float[3, 4, 5] v) {
            r = Transpose<perm = [2, 0, 1]>(b)
            y = Add(z, r)
            v = Mul(u, a)
        }
    """, {"a": kernel, "b": np.ascontiguousarray(kernel.transpose(1, 2, 0))})
    new, result = run_pass(ShareTwins, model, min_tensor_bytes=16)
    assert result.stats["transposes_composed"] == 1 and result.stats["nodes_added"] == 0
    transpose = next(node for node in new.graph.nodes if node.op == "Transpose")
    # b = aᵀ(1,2,0); bᵀ(2,0,1) = aᵀ(0,1,2): the composed permutation is the identity (eliminate-identity's job).
    assert transpose.inputs[0].name == "a" and transpose.attrs["perm"] == [0, 1, 2]
    _exact(model, new)


def test_reshaped_twin_and_a_reshape_reader_of_it():
    values = _weights(4, 6)
    model = _model("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[4, 6] x, float[2, 12] z) => (float[4, 6] y, float[2, 12] s, float[24] f) {
            y = Mul(x, a)
            s = Add(z, b)
            f = Reshape(b, flat)
        }
    """, {"a": values, "b": values.reshape(2, 12).copy(), "flat": np.array([24], dtype=np.int64)})
    new, result = run_pass(ShareTwins, model, min_tensor_bytes=16)
    assert result.stats["twins_shared"] == 1 and result.stats["nodes_added"] == 1
    reads = _reads(new.graph)
    assert reads["f"] == ["a", "flat"]  # the Reshape reader takes a directly: same elements, same order
    reshape = next(node for node in new.graph.nodes if node.outputs[0].name == "b")
    assert reshape.op == "Reshape" and reshape.inputs[0].name == "a"
    assert onnxopt.model_io.read_constant(reshape.inputs[1]).tolist() == [2, 12]
    _exact(model, new)


def test_transposed_and_reshaped_twin_of_a_conv_kernel():
    kernel = _weights(6, 4, 1, 1)  # a 1x1 Conv kernel [O, I, 1, 1] and the same weights as an [I, O] table
    model = _model("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[1, 4, 3, 3] x, int64[2] ids) => (float[1, 6, 3, 3] y, float[2, 6] e) {
            y = Conv(x, k)
            e = Gather(t, ids)
        }
    """, {"k": kernel, "t": kernel[:, :, 0, 0].T.copy()})
    new, result = run_pass(ShareTwins, model, min_tensor_bytes=16)
    assert result.stats["decisions"][0]["relation"] == "transpose[1, 0, 2, 3] + reshape[4, 6]"
    assert _ops(new.graph) == ["Conv", "Gather", "Reshape", "Transpose"]
    _exact(model, new, [{"x": _weights(1, 4, 3, 3), "ids": np.array([3, 0], dtype=np.int64)}])


def test_a_twin_only_compute_ops_read_is_left_unless_asked():
    """Rebuilt weights feeding a MatMul/Conv are exact only where onnxruntime folds the rebuild."""
    kernel = _weights(6, 4, 1, 1)
    text = """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[1, 4, 3, 3] x, float[2, 3, 4] z) => (float[1, 6, 3, 3] y, float[2, 3, 6] m) {
            y = Conv(x, k)
            m = MatMul(z, t)
        }
    """
    model = _model(text, {"k": kernel, "t": kernel[:, :, 0, 0].T.copy()})
    _, result = run_pass(ShareTwins, model, min_tensor_bytes=16)
    assert not result.modified and result.stats["twins_left_for_compute_readers"] == 1
    assert any("rebuild_for_compute" in note for note in result.notes)
    shared, forced = run_pass(ShareTwins, model, min_tensor_bytes=16, rebuild_for_compute=True)
    assert forced.stats["twins_shared"] == 1
    feed = {"x": _weights(1, 4, 3, 3), "z": _weights(2, 3, 4)}
    folded = [run_session(create_session(m, optimize=True), feed) for m in (model, shared)]
    assert_bit_exact(*folded)  # the deployed setting: onnxruntime folds the rebuild at load


def test_near_twins_and_rearrangements_that_are_not_transposes_stay():
    values = _weights(16, 8)
    one_ulp = values.T.copy()
    one_ulp[5, 9] = np.nextafter(one_ulp[5, 9], np.float32(np.inf))
    # The same multiset of elements and the same first and last element, in no transposed order.
    flat = values.reshape(-1)
    shuffled = np.concatenate([flat[:1], RNG.permutation(flat[1:-1]), flat[-1:]]).reshape(8, 16)
    zeros = np.zeros((8, 16), np.float32)
    zeros.flat[[0, -1]] = 0.5
    negative_zeros = np.zeros((16, 8), np.float32)
    negative_zeros.flat[[0, -1]] = 0.5
    negative_zeros.flat[7] = -0.0  # -0.0 and 0.0 differ in bits
    model = _model("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[16, 8] x, float[8, 16] z) => (float[16, 8] a, float[8, 16] b, float[8, 16] c, float[8, 16] d,
                                               float[16, 8] e) {
            a = Add(x, w)
            b = Add(z, near)
            c = Add(z, shuffled)
            d = Add(z, zeros)
            e = Add(x, negative_zeros)
        }
    """, {"w": values, "near": one_ulp, "shuffled": shuffled, "zeros": zeros, "negative_zeros": negative_zeros})
    new, result = run_pass(ShareTwins, model, min_tensor_bytes=16)
    assert not result.modified
    assert result.stats["tensors_hashed"] >= 3 and result.stats["sample_rejections"] >= 1
    assert _reads(new.graph) == _reads(model.graph)


def test_a_hash_collision_never_shares(monkeypatch):
    """Same corners and digests for everything: only the comparison of the elements decides."""
    monkeypatch.setattr(share_twins, "multiset_digest", lambda constant: "same")
    monkeypatch.setattr(share_twins, "corner_key", lambda constant, count: b"same")
    monkeypatch.setattr(twin_search, "SAMPLE_ELEMENTS", 0)  # only first and last: the full compare must refuse
    values = _weights(4, 8)
    other = values.T.copy()
    other[1, 2] += 1.0
    model = _model("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[4, 8] x, float[8, 4] z) => (float[4, 8] a, float[8, 4] b) {
            a = Add(x, w)
            b = Add(z, v)
        }
    """, {"w": values, "v": other})
    new, result = run_pass(ShareTwins, model, min_tensor_bytes=16)
    assert not result.modified and result.stats["full_compare_failures"] >= 1
    assert _reads(new.graph) == _reads(model.graph)


def test_idempotent_and_in_the_default_preset():
    assert PRESETS["default"].index("share-twins") == PRESETS["default"].index("dedup-initializers") + 1
    table = _weights(12, 4)
    model = _model("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (int64[3] ids, float[5, 4] x) => (float[3, 4] e, float[5, 12] y) {
            e = Gather(wte, ids)
            y = MatMul(x, head)
        }
    """, {"wte": table, "head": table.T.copy()})
    once, first = run_pass(ShareTwins, model, min_tensor_bytes=16)
    twice, second = run_pass(ShareTwins, once, min_tensor_bytes=16)
    assert first.stats["twins_shared"] == 1
    assert not second.modified and _reads(twice.graph) == _reads(once.graph)


def test_graph_outputs_and_graph_input_defaults_are_never_replaced():
    values = _weights(4, 8)
    model = _model("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[4, 8] x, float[8, 4] z, float[4, 8] d) => (float[4, 8] a, float[8, 4] t, float[4, 8] c) {
            a = Add(x, w)
            c = Add(x, d)
        }
    """, {"w": values, "t": values.T.copy(), "d": values.copy()})
    assert model.initializer_inputs == ["d"]
    new, result = run_pass(ShareTwins, model, min_tensor_bytes=16)
    # t is a graph output (kept under its name); w may read it instead. d is overridable: untouched.
    assert [t.name for t in new.graph.outputs] == ["a", "t", "c"]
    reads = _reads(new.graph)
    assert reads["c"] == ["x", "d"]
    assert result.stats["twins_shared"] == 1 and result.stats["decisions"][0]["kept"] == "t"
    override = {"x": _weights(4, 8), "z": _weights(8, 4), "d": _weights(4, 8)}
    assert_bit_exact(outputs(model, override), outputs(new, override))


def _literal(values: np.ndarray) -> str:
    return "{" + ", ".join(repr(float(v)) for v in values.reshape(-1)) + "}"


def test_subgraph_twin_reads_the_outer_kept_tensor_and_sibling_branches_stay_apart():
    values = np.arange(32, dtype=np.float32).reshape(4, 8) / 8
    twin = _literal(values.T)
    model = _model(f"""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[4, 8] x, float[8, 4] z, bool c) => (float[4, 8] y, float[8, 4] r) {{
            y = Add(x, w)
            r = If (c) <
                then_branch = then_g () => (float[8, 4] t) <float[8, 4] wt = {twin}> {{ t = Add(z, wt) }},
                else_branch = else_g () => (float[8, 4] e) <float[8, 4] wt2 = {twin}> {{ e = Sub(z, wt2) }}
            >
        }}
    """, {"w": values})
    new, result = run_pass(ShareTwins, model, min_tensor_bytes=16)
    # Each branch's copy is a twin of the outer w; the two branch copies never share with each other.
    assert result.stats["twins_shared"] == 2
    if_node = next(node for node in new.graph.nodes if node.op == "If")
    for branch in ("then_branch", "else_branch"):
        transpose = next(node for node in if_node.attrs[branch].nodes if node.op == "Transpose")
        assert transpose.inputs[0].name == "w"  # rebuilt inside the branch from the outer tensor
    feeds = [{"x": _weights(4, 8), "z": _weights(8, 4), "c": np.array(flag)} for flag in (True, False)]
    _exact(model, new, feeds)
    assert not run_pass(ShareTwins, new, min_tensor_bytes=16)[1].modified


def test_twins_in_sibling_branches_only_are_not_shared():
    values = np.arange(32, dtype=np.float32).reshape(4, 8) / 8
    model = _model(f"""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[4, 8] x, float[8, 4] z, bool c) => (float[4, 8] r) {{
            r = If (c) <
                then_branch = then_g () => (float[4, 8] t) <float[4, 8] a = {_literal(values)}> {{ t = Add(x, a) }},
                else_branch = else_g () => (float[4, 8] e) <float[8, 4] b = {_literal(values.T)}> {{
                    bt = Transpose(z)
                    e = Sub(bt, b2)
                    b2 = Transpose(b)
                }}
            >
        }}
    """, {})
    _, result = run_pass(ShareTwins, model, min_tensor_bytes=16)
    assert not result.modified  # neither branch sees the other's tensor


def test_external_twins_are_streamed_and_stay_lazy(tmp_path, monkeypatch):
    # Tiny chunks force multi-chunk hashing and comparison with chunk borders that do not line up.
    for module in (onnxopt.external_data, onnxopt.tensor_content, twin_search):
        monkeypatch.setattr(module, "CHUNK_BYTES", 1000)
    table = _weights(300, 8)  # 9.6 KB: written as external data
    other = table.T.copy()
    other[7, 298] += 1.0  # the last-but-one element: a near-twin with the same corners (told apart by its digest)
    source = _model("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (int64[2] ids, float[1, 3, 8] x) => (float[2, 8] e, float[1, 3, 300] y, float[1, 3, 300] n) {
            e = Gather(wte, ids)
            y = MatMul(x, head)
            n = MatMul(x, near)
        }
    """, {"wte": table, "head": table.T.copy(), "near": other})
    save(source, tmp_path / "in.onnx", external_data=True)
    loaded = load(tmp_path / "in.onnx")
    new, result = run_pass(ShareTwins, loaded)
    assert result.stats["twins_shared"] == 1 and result.stats["decisions"][0]["tensor"] == "wte"
    assert result.stats["tensors_hashed"] == 3 and result.stats["full_compares"] == 1
    survivors = [t for node in new.graph.nodes for t in node.inputs if isinstance(t, gs.Constant)]
    assert {t.name for t in survivors} == {"head", "near"}
    assert all(isinstance(t._values, ExternalLazyValues) for t in survivors)  # nothing was loaded into the graph
    (tmp_path / "out").mkdir()
    save(new, tmp_path / "out" / "out.onnx")
    assert (tmp_path / "in.onnx.data").stat().st_size - (tmp_path / "out" / "out.onnx.data").stat().st_size >= 9600
    feed = {"ids": np.array([299, 0], dtype=np.int64), "x": _weights(1, 3, 8)}
    assert_bit_exact(outputs(tmp_path / "in.onnx", feed), outputs(tmp_path / "out" / "out.onnx", feed))


@pytest.mark.parametrize(("keeper_shape", "perm", "twin_shape"), [
    ((5, 7), (1, 0), (7, 5)),
    ((6, 4, 1, 1), (1, 0, 2, 3), (4, 6)),
    ((2, 3, 4), (2, 0, 1), (4, 2, 3)),
    ((2, 3, 4), (0, 1, 2), (6, 4)),
    ((2, 3, 4), (1, 2, 0), (12, 2)),
])
def test_find_relation_and_its_inverse(keeper_shape, perm, twin_shape):
    keeper = _weights(*keeper_shape)
    twin = np.ascontiguousarray(keeper.transpose(perm)).reshape(twin_shape)
    counters = SearchCounters()
    relation = find_relation(gs.Constant("k", keeper), gs.Constant("t", twin), counters)
    assert relation is not None and counters.full_compares == 1
    rebuilt = np.ascontiguousarray(keeper.transpose(relation.perm)).reshape(relation.twin_shape)
    np.testing.assert_array_equal(rebuilt, twin)
    reverse = relation.inverse()
    if reverse is None:  # a reshape that merges axes after a transpose: only searchable the other way
        assert relation.transposes and relation.reshapes
        reverse = find_relation(gs.Constant("t", twin), gs.Constant("k", keeper), counters)
    assert reverse is not None
    np.testing.assert_array_equal(np.ascontiguousarray(twin.transpose(reverse.perm)).reshape(keeper_shape), keeper)


def test_candidate_perms_skip_axes_of_size_one():
    assert list(candidate_perms((3, 1, 4))) == [(0, 1, 2), (2, 0, 1)]
    assert Relation((2, 0, 1), (3, 1, 4), (4, 3)).describe() == "transpose[2, 0, 1] + reshape[4, 3]"


def test_gpt2_tied_head_through_the_real_cli(tmp_path):
    """The GPT-2 builder stores the head as the embedding table transposed (as PyTorch's exporter
    does); the default `onnxopt optimize` drops exactly that copy, bit-exact."""
    from click.testing import CliRunner

    from models.cache import cached_model
    from models.gpt2 import sample_inputs
    from onnxopt.cli import cli
    from onnxopt.model_io import model_file_bytes, read_proto

    source = cached_model("gpt2", "tiny")
    tables = {t.name: onnx.numpy_helper.to_array(t) for t in read_proto(source).graph.initializer
              if t.name in ("wte.weight", "lm_head.weight")}
    np.testing.assert_array_equal(tables["lm_head.weight"], tables["wte.weight"].T)
    result = CliRunner().invoke(cli, ["optimize", str(source), "-o", str(tmp_path / "out.onnx"), "--verify"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    dropped = model_file_bytes(source) - model_file_bytes(tmp_path / "out.onnx")
    assert tables["wte.weight"].nbytes <= dropped < tables["wte.weight"].nbytes + 1024
    feed = sample_inputs("tiny", batch_size=2)
    for optimize in (False, True):
        assert_bit_exact(*(run_session(create_session(path, optimize=optimize), feed)
                           for path in (source, tmp_path / "out.onnx")))


@pytest.mark.parametrize("preset", ["int8", "int4", "palettize"])
def test_weight_quantizing_presets_leave_tied_tables_apart(tmp_path, preset):
    """Quantizers only rewrite a weight whose every reader they rewrite; had share-twins run first, the
    kept head would also be read by the Transpose that rebuilds the table and stay float. The presets
    that quantize weights leave twins apart, so no weight is refused for another reader; int4 and
    palettize (which decide by rules, not timing) leave no float table at all; int8 (whose MatMuls
    may stay float where that times faster) stores the table int8 (GatherBlockQuantized). ``--verify``
    runs onnxruntime after every pass; the logits stay within cosine 0.99 of the original's."""
    from click.testing import CliRunner

    from models.cache import cached_model
    from onnxopt.cli import cli
    from onnxopt.model_io import read_proto

    assert "share-twins" in PRESETS["default"] and "share-twins" not in PRESETS[preset]
    source = cached_model("gpt2", "tiny")
    table = max(int(np.prod(t.dims)) for t in read_proto(source).graph.initializer)
    report = tmp_path / "report.json"
    small_tables = ["-O", "quantize-embeddings.min_table_bytes=1024"] if preset == "int8" else []
    result = CliRunner().invoke(cli, ["optimize", str(source), "-o", str(tmp_path / "out.onnx"), "--preset", preset,
                                      "--verify", "--report", str(report), *small_tables], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "also read by" not in report.read_text()
    float_sizes = [int(np.prod(t.dims)) for t in read_proto(tmp_path / "out.onnx").graph.initializer
                   if t.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)]
    if preset == "int8":
        assert "GatherBlockQuantized" in {node.op_type for node in read_proto(tmp_path / "out.onnx").graph.node}
    else:
        assert max(float_sizes) < table
    # The quantized model still computes the original's logits (onnxruntime, seeded token ids).
    from models.gpt2 import sample_inputs

    feed = sample_inputs("tiny", batch_size=2)
    expected, got = (create_session(path).run(None, feed)[0].ravel().astype(np.float64)
                     for path in (source, tmp_path / "out.onnx"))
    assert expected @ got / (np.linalg.norm(expected) * np.linalg.norm(got)) > 0.99
