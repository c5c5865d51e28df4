"""Pass manager: checks after each pass, rollback, verification by contract, fixed point."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest

from onnxopt.errors import BadInputError, PassError
from onnxopt.model_io import Model
from onnxopt.pass_api import Contract, Pass, PassContext, PassResult
from onnxopt.pass_manager import PassManager
from tests.util import model_from_text, op_types, outputs

TEXT = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[4, 8] x) => (float[4, 8] y) {
    a = Relu(x)
    b = Neg(a)
    y = Abs(b)
}
"""


class SwapReluForSigmoid(Pass):
    """Claims to be exact but changes what the model computes."""

    name: ClassVar[str] = "bad-exact"
    contract: ClassVar[Contract] = Contract.EXACT

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        model.graph.nodes[0].op = "Sigmoid"
        return PassResult(True)


class DanglingInput(Pass):
    """Leaves a node reading a tensor nobody produces."""

    name: ClassVar[str] = "dangling"

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        model.graph.nodes[1].inputs[0] = gs.Variable("nowhere", dtype=np.float32)
        return PassResult(True)


class Crashes(Pass):
    """Raises halfway through a rewrite."""

    name: ClassVar[str] = "crashes"

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        model.graph.nodes.pop()
        raise RuntimeError("boom")


class RemovesOneNegPerRun(Pass):
    """Removes one Neg pair per run, so reaching a fixed point takes several iterations."""

    name: ClassVar[str] = "neg-pairs"

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        for node in model.graph.nodes:
            if node.op == "Neg" and node.o().op == "Neg":
                second = node.o()
                consumers = list(second.outputs[0].outputs)
                for consumer in consumers:
                    for index, tensor in enumerate(consumer.inputs):
                        if tensor is second.outputs[0]:
                            consumer.inputs[index] = node.inputs[0]
                node.outputs.clear()
                second.outputs.clear()
                model.graph.cleanup()
                return PassResult(True, {"pairs_removed": 1})
        return PassResult(False)


class ScalesSlightly(Pass):
    """A tolerance pass whose error stays inside (or outside) its declared bound."""

    name: ClassVar[str] = "scales"
    contract: ClassVar[Contract] = Contract.TOLERANCE
    tolerance_rel: ClassVar[float] = 1e-5
    factor: float = 1.0 + 1e-7

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        last = model.graph.nodes[-1]
        scaled = gs.Variable("scaled_in", dtype=np.float32)
        factor = gs.Constant("factor", np.array(self.factor, dtype=np.float32))
        model.graph.nodes.insert(
            len(model.graph.nodes) - 1, gs.Node("Mul", inputs=[last.inputs[0], factor], outputs=[scaled])
        )
        last.inputs[0] = scaled
        return PassResult(True)


class ScalesTooMuch(ScalesSlightly):
    name: ClassVar[str] = "scales-too-much"
    factor: float = 1.01


FEED = {"x": np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)}


def test_exact_pass_that_changes_outputs_is_rolled_back() -> None:
    model = model_from_text(TEXT)
    result, report = PassManager([SwapReluForSigmoid()], verify=True).run(model)
    assert op_types(result) == ["Relu", "Neg", "Abs"]
    assert report.records[0].status == "rolled back"
    assert "not bit-identical" in report.records[0].reason
    np.testing.assert_array_equal(outputs(result, FEED)["y"], outputs(model_from_text(TEXT), FEED)["y"])


def test_structurally_broken_pass_is_rolled_back_even_without_verification() -> None:
    result, report = PassManager([DanglingInput()]).run(model_from_text(TEXT))
    assert report.records[0].status == "rolled back"
    assert "structural check failed" in report.records[0].reason
    assert "nowhere" in report.records[0].reason
    assert [t.name for t in result.graph.nodes[1].inputs] == ["a"]


def test_pass_exception_names_pass_and_predecessors_and_dumps(tmp_path: Path) -> None:
    manager = PassManager([RemovesOneNegPerRun(), Crashes()], dump_dir=tmp_path)
    result, report = manager.run(model_from_text(TEXT))
    failure = report.records[-1]
    assert failure.status == "error"
    assert "'crashes'" in failure.reason and "boom" in failure.reason and "neg-pairs" in failure.reason
    assert len(result.graph.nodes) == 3, "the crashed pass's partial edit must be rolled back"
    dumped = sorted(p.name for p in tmp_path.iterdir())
    assert any(name.endswith("crashes_before.onnx") for name in dumped)
    with pytest.raises(PassError, match="crashes"):
        PassManager([Crashes()], strict=True).run(model_from_text(TEXT))


def test_cleanup_passes_run_to_a_fixed_point() -> None:
    text = TEXT.replace("b = Neg(a)", "n1 = Neg(a)\n n2 = Neg(n1)\n n3 = Neg(n2)\n n4 = Neg(n3)\n b = Neg(n4)")
    model = model_from_text(text)
    expected = outputs(model_from_text(text), FEED)
    result, report = PassManager([RemovesOneNegPerRun()], verify=True).run(model)
    assert op_types(result) == ["Relu", "Neg", "Abs"]
    statuses = [r.status for r in report.records]
    assert statuses == ["ok", "ok", "unchanged"]
    np.testing.assert_array_equal(outputs(result, FEED)["y"], expected["y"])
    _, capped = PassManager([RemovesOneNegPerRun()], max_iterations=1).run(model_from_text(text))
    assert capped.iteration_cap_hit == ["neg-pairs"]


def test_tolerance_contract_is_enforced() -> None:
    kept, report = PassManager([ScalesSlightly()], verify=True).run(model_from_text(TEXT))
    assert report.records[0].status == "ok"
    assert 0 < report.records[0].max_rel_error <= 1e-5
    assert "Mul" in op_types(kept)
    rolled, report = PassManager([ScalesTooMuch()], verify=True).run(model_from_text(TEXT))
    assert report.records[0].status == "rolled back"
    assert "relative error" in report.records[0].reason
    assert "Mul" not in op_types(rolled)


class MakesUnloadableModel(Pass):
    """Writes an op onnxruntime has no kernel for, then asks onnxruntime to load the result."""

    name: ClassVar[str] = "unloadable"
    contract: ClassVar[Contract] = Contract.LOSSY
    cleanup: ClassVar[bool] = False

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        from onnxopt.runtime import create_session

        model.graph.nodes[0].op = "NoSuchKernel"
        model.graph.nodes[0].domain = "com.example"
        model.graph.import_domains.append(onnx.helper.make_opsetid("com.example", 1))
        create_session(model)
        return PassResult(True)


def test_a_pass_whose_output_onnxruntime_refuses_is_rolled_back_not_called_bad_input() -> None:
    result, report = PassManager([MakesUnloadableModel()]).run(model_from_text(TEXT))
    assert report.records[0].status == "error" and "onnxruntime cannot load" in report.records[0].reason
    assert op_types(result) == ["Relu", "Neg", "Abs"]


def test_a_model_onnxruntime_cannot_run_at_all_is_bad_input() -> None:
    custom = TEXT.replace('["" : 17]', '["" : 17, "com.example" : 1]').replace("b = Neg(a)", "b = com.example.Other(a)")
    with pytest.raises(BadInputError, match="onnxruntime cannot load"):
        PassManager([MakesUnloadableModel()]).run(model_from_text(custom))


class ScalesOutputs(Pass):
    """A lossy pass that changes every output a little (as quantization does)."""

    name: ClassVar[str] = "scales-outputs"
    contract: ClassVar[Contract] = Contract.LOSSY
    cleanup: ClassVar[bool] = False

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        node = model.graph.nodes[0]
        factor = gs.Constant("factor_1p001", np.array(1.001, dtype=np.float32))
        scaled = gs.Variable("scaled_x", dtype=np.float32)
        model.graph.nodes.insert(0, gs.Node("Mul", inputs=[node.inputs[0], factor], outputs=[scaled]))
        node.inputs[0] = scaled
        return PassResult(True)


class RemovesIdentity(Pass):
    """An exact pass run after a lossy one: bypasses the Identity before the output."""

    name: ClassVar[str] = "removes-identity"
    contract: ClassVar[Contract] = Contract.EXACT

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        identity = next((n for n in model.graph.nodes if n.op == "Identity"), None)
        if identity is None:
            return PassResult(False)
        source = identity.inputs[0]
        producer = source.inputs[0]
        producer.outputs[0] = identity.outputs[0]
        identity.inputs.clear()
        identity.outputs.clear()
        model.graph.cleanup()
        return PassResult(True)


def test_an_exact_pass_after_a_lossy_one_is_judged_against_the_model_it_was_given():
    # The exact pass must be bit-identical to the model before it, not to the original that
    # the lossy pass already changed; the lossy pass's error is measured against the original.
    model = model_from_text("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[4, 8] x) => (float[4, 8] y) {
        a = Relu(x)
        b = Neg(a)
        y = Identity(b)
    }
    """)
    manager = PassManager([ScalesOutputs(), RemovesIdentity()], verify=True)
    optimized, report = manager.run(model)
    lossy = report.records[0]
    exact = next(record for record in report.records if record.name == "removes-identity")
    assert lossy.status == "ok" and lossy.max_abs_error > 0, "premise: the lossy pass changed the numbers"
    assert exact.status == "ok", exact.reason
    assert exact.max_abs_error == 0.0
    assert "Identity" not in op_types(optimized)
    assert report.verification.max_abs == pytest.approx(lossy.max_abs_error)


def test_an_exact_pass_that_changes_numbers_after_a_lossy_one_is_still_rolled_back():
    model = model_from_text(TEXT)
    manager = PassManager([ScalesOutputs(), SwapReluForSigmoid()], verify=True)
    optimized, report = manager.run(model)
    assert [record.status for record in report.records][:2] == ["ok", "rolled back"]
    assert "Relu" in op_types(optimized)
