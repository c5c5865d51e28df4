"""Small graphs in ONNX text syntax for the pruning tests, and the helpers they share."""

from __future__ import annotations

import numpy as np
import onnx

from onnxopt.model_io import Model, to_proto
from onnxopt.pass_api import PassContext
from tests.util import model_from_text, outputs


def tensor_text(name: str, values: np.ndarray) -> str:
    """An initializer in ONNX text syntax, values printed exactly (repr of float32)."""
    dims = ",".join(str(d) for d in values.shape)
    numbers = ", ".join(repr(float(v)) for v in np.asarray(values, np.float32).reshape(-1).tolist())
    return f"float[{dims}] {name} = {{{numbers}}}"


def initializers(**arrays: np.ndarray) -> str:
    return ", ".join(tensor_text(name, value) for name, value in arrays.items())


def mlp(w1: np.ndarray, b1: np.ndarray, w2: np.ndarray, b2: np.ndarray, activation: str = "Relu") -> Model:
    """``y = act(x W1 + b1) W2 + b2`` on ``[N, 6, K]`` inputs (an FFN as exporters write it)."""
    k = w1.shape[0]
    n = w2.shape[1]
    text = f"""
    <ir_version: 8, opset_import: ["" : 17]>
    mlp (float[N, 6, {k}] x) => (float[N, 6, {n}] y)
    <{initializers(w1=w1, b1=b1, w2=w2, b2=b2)}>
    {{
        [up] h = MatMul(x, w1)
        hb = Add(h, b1)
        a = {activation}(hb)
        [down] o = MatMul(a, w2)
        y = Add(o, b2)
    }}
    """
    return model_from_text(text)


def random_mlp(seed: int = 0, k: int = 8, hidden: int = 16, n: int = 8, zero_units: tuple[int, ...] = ()) -> Model:
    """An MLP whose hidden units ``zero_units`` have all-zero rows in the second weight."""
    rng = np.random.default_rng(seed)
    w2 = (rng.standard_normal((hidden, n)) * 0.3).astype(np.float32)
    w2[list(zero_units)] = 0.0
    return mlp((rng.standard_normal((k, hidden)) * 0.5).astype(np.float32),
               (rng.standard_normal(hidden) * 0.1).astype(np.float32), w2,
               (rng.standard_normal(n) * 0.1).astype(np.float32))


def token_feeds(model: Model, count: int, seed: int = 0, batch: int = 2) -> list[dict[str, np.ndarray]]:
    """Correlated float feeds for ``model``'s single input ``x`` (a fixed mixing, like real hidden states)."""
    shape = [dim if isinstance(dim, int) else batch for dim in model.graph.inputs[0].shape]
    features = shape[-1]
    mixing = np.random.default_rng(1234).standard_normal((features, features)) / np.sqrt(features) + np.eye(features)
    rng = np.random.default_rng(seed)
    return [{"x": (rng.standard_normal(shape) @ mixing).astype(np.float32)} for _ in range(count)]


def context(feeds: list[dict[str, np.ndarray]] | None, original: Model | None = None) -> PassContext:
    return PassContext(data=feeds, original=original)


def run(pass_cls, model: Model, feeds: list[dict[str, np.ndarray]] | None = None, **options):
    """Run one pass on a copy; returns (new model, PassResult)."""
    work = model.copy()
    instance = pass_cls(pass_cls.make_options({"measure_latency": False, **options})
                        if "measure_latency" in {f.name for f in pass_cls.option_fields()} else
                        pass_cls.make_options(options))
    result = instance.run(work, context(feeds))
    return work, result


def check_full(model: Model) -> onnx.ModelProto:
    """onnx.checker with full shape inference on the exported model (small models: weights inline)."""
    proto = to_proto(model)
    onnx.checker.check_model(proto, full_check=True)
    return proto


def relative_error(reference: Model, candidate: Model, feeds: list[dict[str, np.ndarray]]) -> float:
    """Largest output's ``‖Δ‖ / ‖y‖`` over the feeds (onnxruntime, graph optimizations off)."""
    total, energy = 0.0, 0.0
    for feed in feeds:
        expected, actual = outputs(reference, feed), outputs(candidate, feed)
        for name in expected:
            total += float(np.sum((actual[name].astype(np.float64) - expected[name]) ** 2))
            energy += float(np.sum(expected[name].astype(np.float64) ** 2))
    return float(np.sqrt(total / max(energy, 1e-30)))


def decisions(result, decision: str | None = None) -> list[dict]:
    found = result.stats.get("decisions", [])
    return [entry for entry in found if decision is None or entry.get("decision") == decision]
