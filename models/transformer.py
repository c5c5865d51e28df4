"""Transformer graphs (BERT-style encoder, GPT-2-style decoder) built from a weights dict.

One graph builder, several weight sources: MiniLM feeds it its trained safetensors,
``bert`` and ``gpt2`` feed it seeded random weights of the same names. The graphs use the
op patterns an exporter emits at opset 17 (MatMul + Add for linear layers,
LayerNormalization, erf or tanh GELU written out in elementary ops, attention as
Reshape/Transpose/MatMul/Softmax), so fusion and quantization passes meet what they meet
in the wild.

Weight names follow Hugging Face's checkpoints; Linear weights (stored ``[out, in]``)
become MatMul initializers of the same name transposed to ``[in, out]``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto

from models.builder import GraphBuilder

Weights = Mapping[str, np.ndarray]

# The additive bias on masked attention scores. Hugging Face now uses float32's minimum;
# both give exactly zero attention after softmax in float32 (exp underflows past -104), and
# -10000 stays finite when a pass converts the graph to float16.
MASK_NEGATIVE = -10000.0
SQRT_HALF = 1.0 / math.sqrt(2.0)
GELU_TANH_SCALE = math.sqrt(2.0 / math.pi)


@dataclass(frozen=True)
class EncoderConfig:
    """Hyper-parameters of a BERT-style encoder (names as in Hugging Face's BertConfig)."""

    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    max_positions: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_heads


@dataclass(frozen=True)
class DecoderConfig:
    """Hyper-parameters of a GPT-2-style decoder (names as in Hugging Face's GPT2Config)."""

    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    max_positions: int = 1024
    layer_norm_eps: float = 1e-5

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def intermediate_size(self) -> int:
        return 4 * self.hidden_size


def _linear(b: GraphBuilder, x: str, weights: Weights, prefix: str, transpose: bool = True) -> str:
    """``x @ W + bias``; ``transpose`` for torch Linear weights stored ``[out, in]``."""
    weight = weights[f"{prefix}.weight"]
    if transpose:
        weight = weight.T
    scope = "/" + prefix.replace(".", "/")
    product = b.node("MatMul", [x, b.initializer(f"{prefix}.weight", weight.astype(np.float32, copy=False))],
                     f"{scope}/MatMul")
    bias = weights[f"{prefix}.bias"].astype(np.float32, copy=False)
    return b.node("Add", [b.initializer(f"{prefix}.bias", bias), product],
                  f"{scope}/Add")


def _layer_norm(b: GraphBuilder, x: str, weights: Weights, prefix: str, eps: float,
                gamma: str = "weight", beta: str = "bias") -> str:
    scale = b.initializer(f"{prefix}.{gamma}", weights[f"{prefix}.{gamma}"].astype(np.float32))
    bias = b.initializer(f"{prefix}.{beta}", weights[f"{prefix}.{beta}"].astype(np.float32))
    return b.node("LayerNormalization", [x, scale, bias], "/" + prefix.replace(".", "/") + "/LayerNormalization",
                  axis=-1, epsilon=eps)


def gelu_erf(b: GraphBuilder, x: str, scope: str) -> str:
    """BERT's exact GELU, ``x * 0.5 * (1 + erf(x / sqrt(2)))``, as torch exports it."""
    scaled = b.node("Mul", [x, b.const(SQRT_HALF)], f"{scope}/Mul")
    erf = b.node("Erf", [scaled], f"{scope}/Erf")
    shifted = b.node("Add", [erf, b.const(1.0)], f"{scope}/Add")
    product = b.node("Mul", [x, shifted], f"{scope}/Mul_1")
    return b.node("Mul", [product, b.const(0.5)], f"{scope}/Mul_2")


def gelu_tanh(b: GraphBuilder, x: str, scope: str) -> str:
    """GPT-2's ``gelu_new``: ``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``."""
    cube = b.node("Pow", [x, b.const(3.0)], f"{scope}/Pow")
    inner = b.node("Add", [x, b.node("Mul", [cube, b.const(0.044715)], f"{scope}/Mul")], f"{scope}/Add")
    tanh = b.node("Tanh", [b.node("Mul", [inner, b.const(GELU_TANH_SCALE)], f"{scope}/Mul_1")], f"{scope}/Tanh")
    shifted = b.node("Add", [tanh, b.const(1.0)], f"{scope}/Add_1")
    half = b.node("Mul", [x, b.const(0.5)], f"{scope}/Mul_2")
    return b.node("Mul", [half, shifted], f"{scope}/Mul_3")


def _split_heads(b: GraphBuilder, x: str, heads: int, head_size: int, scope: str, key: bool = False) -> str:
    """``[B, S, H*D] -> [B, H, S, D]`` (or ``[B, H, D, S]`` for keys, ready for Q @ K^T)."""
    shaped = b.node("Reshape", [x, b.const([0, 0, heads, head_size], np.int64)], f"{scope}/Reshape")
    return b.node("Transpose", [shaped], f"{scope}/Transpose", perm=[0, 2, 3, 1] if key else [0, 2, 1, 3])


def _attention_core(b: GraphBuilder, query: str, key: str, value: str, mask_bias: str, heads: int, head_size: int,
                    hidden: int, scope: str) -> str:
    """Scaled dot-product attention over already projected ``[B, S, hidden]`` tensors."""
    q = _split_heads(b, query, heads, head_size, f"{scope}/query")
    k = _split_heads(b, key, heads, head_size, f"{scope}/key", key=True)
    v = _split_heads(b, value, heads, head_size, f"{scope}/value")
    scores = b.node("MatMul", [q, k], f"{scope}/MatMul")
    scores = b.node("Div", [scores, b.const(math.sqrt(head_size))], f"{scope}/Div")
    scores = b.node("Add", [scores, mask_bias], f"{scope}/Add")
    probs = b.node("Softmax", [scores], f"{scope}/Softmax", axis=-1)
    context = b.node("MatMul", [probs, v], f"{scope}/MatMul_1")
    context = b.node("Transpose", [context], f"{scope}/Transpose", perm=[0, 2, 1, 3])
    return b.node("Reshape", [context, b.const([0, 0, hidden], np.int64)], f"{scope}/Reshape")


def _sequence_length(b: GraphBuilder, ids: str) -> str:
    return b.node("Shape", [ids], "/embeddings/Shape", start=1, end=2)


def _padding_bias(b: GraphBuilder, mask: str) -> str:
    """``(1 - mask) * MASK_NEGATIVE`` shaped ``[B, 1, 1, S]``: the extended attention mask."""
    mask_float = b.node("Cast", [mask], "/mask/Cast", to=TensorProto.FLOAT)
    expanded = b.node("Unsqueeze", [mask_float, b.const([1, 2], np.int64)], "/mask/Unsqueeze")
    inverted = b.node("Sub", [b.const(1.0), expanded], "/mask/Sub")
    return b.node("Mul", [inverted, b.const(MASK_NEGATIVE)], "/mask/Mul")


def _bert_layer(b: GraphBuilder, x: str, mask_bias: str, weights: Weights, config: EncoderConfig, index: int) -> str:
    prefix = f"encoder.layer.{index}"
    scope = f"/encoder/layer.{index}"
    query = _linear(b, x, weights, f"{prefix}.attention.self.query")
    key = _linear(b, x, weights, f"{prefix}.attention.self.key")
    value = _linear(b, x, weights, f"{prefix}.attention.self.value")
    context = _attention_core(b, query, key, value, mask_bias, config.num_heads, config.head_size,
                              config.hidden_size, f"{scope}/attention/self")
    attended = _linear(b, context, weights, f"{prefix}.attention.output.dense")
    attended = b.node("Add", [attended, x], f"{scope}/attention/output/Add")
    attended = _layer_norm(b, attended, weights, f"{prefix}.attention.output.LayerNorm", config.layer_norm_eps)
    hidden = _linear(b, attended, weights, f"{prefix}.intermediate.dense")
    hidden = gelu_erf(b, hidden, f"{scope}/intermediate/gelu")
    output = _linear(b, hidden, weights, f"{prefix}.output.dense")
    output = b.node("Add", [output, attended], f"{scope}/output/Add")
    return _layer_norm(b, output, weights, f"{prefix}.output.LayerNorm", config.layer_norm_eps)


def _mean_pool_normalize(b: GraphBuilder, hidden: str, mask: str) -> str:
    """sentence-transformers' pooling: mask-weighted mean over tokens, then L2 normalisation."""
    mask_float = b.node("Cast", [mask], "/pooling/Cast", to=TensorProto.FLOAT)
    mask_expanded = b.node("Unsqueeze", [mask_float, b.const([2], np.int64)], "/pooling/Unsqueeze")
    masked = b.node("Mul", [hidden, mask_expanded], "/pooling/Mul")
    axis = b.const([1], np.int64)
    summed = b.node("ReduceSum", [masked, axis], "/pooling/ReduceSum", keepdims=0)
    counts = b.node("ReduceSum", [mask_expanded, axis], "/pooling/ReduceSum_1", keepdims=0)
    counts = b.node("Max", [counts, b.const(1e-9)], "/pooling/Max")
    mean = b.node("Div", [summed, counts], "/pooling/Div")
    norm = b.node("ReduceL2", [mean], "/normalize/ReduceL2", axes=[1], keepdims=1)
    norm = b.node("Max", [norm, b.const(1e-12)], "/normalize/Max")
    return b.node("Div", [mean, norm], "/normalize/Div", outputs=["sentence_embedding"])


def bert_encoder(config: EncoderConfig, weights: Weights, name: str, pooled: bool = False,
                 doc_string: str = "") -> onnx.ModelProto:
    """A BERT encoder: ``input_ids, attention_mask, token_type_ids -> last_hidden_state``.

    ``pooled`` replaces the output by ``sentence_embedding`` (mean pooling + L2 norm).
    Weight names are those of a ``BertModel`` checkpoint without the ``bert.`` prefix.
    """
    b = GraphBuilder(name)
    dims = ["batch", "sequence"]
    ids = b.input("input_ids", TensorProto.INT64, dims)
    mask = b.input("attention_mask", TensorProto.INT64, dims)
    token_types = b.input("token_type_ids", TensorProto.INT64, dims)

    word_table = b.initializer("embeddings.word_embeddings.weight", weights["embeddings.word_embeddings.weight"])
    type_table = b.initializer("embeddings.token_type_embeddings.weight",
                               weights["embeddings.token_type_embeddings.weight"])
    position_table = b.initializer("embeddings.position_embeddings.weight",
                                   weights["embeddings.position_embeddings.weight"])
    words = b.node("Gather", [word_table, ids], "/embeddings/word_embeddings/Gather")
    types = b.node("Gather", [type_table, token_types], "/embeddings/token_type_embeddings/Gather")
    positions = b.node("Slice", [position_table, b.const([0], np.int64), _sequence_length(b, ids),
                                 b.const([0], np.int64)], "/embeddings/position_embeddings/Slice")
    x = b.node("Add", [words, types], "/embeddings/Add")
    x = b.node("Add", [x, positions], "/embeddings/Add_1")
    x = _layer_norm(b, x, weights, "embeddings.LayerNorm", config.layer_norm_eps)

    mask_bias = _padding_bias(b, mask)
    for index in range(config.num_layers):
        x = _bert_layer(b, x, mask_bias, weights, config, index)

    if pooled:
        _mean_pool_normalize(b, x, mask)
        b.output("sentence_embedding", TensorProto.FLOAT, ["batch", config.hidden_size])
    else:
        b.nodes[-1].output[0] = "last_hidden_state"  # rename the last LayerNorm output: nothing reads it yet
        b.output("last_hidden_state", TensorProto.FLOAT, ["batch", "sequence", config.hidden_size])
    return b.model(doc_string)


def _causal_padding_bias(b: GraphBuilder, ids: str, mask: str) -> str:
    """``[B, 1, S, S]`` bias: 0 where a token may attend (earlier, not padding), else MASK_NEGATIVE.

    The two masks are multiplied before scaling so the bias never adds two large
    negatives (which overflows to -inf when a pass halves the precision).
    """
    length = _sequence_length(b, ids)
    square = b.node("Concat", [length, length], "/mask/Concat", axis=0)
    ones = b.node("ConstantOfShape", [square], "/mask/ConstantOfShape",
                  value=onnx.helper.make_tensor("value", TensorProto.FLOAT, [1], [1.0]))
    causal = b.node("Trilu", [ones], "/mask/Trilu", upper=0)
    padding = b.node("Unsqueeze", [b.node("Cast", [mask], "/mask/Cast", to=TensorProto.FLOAT),
                                   b.const([1, 2], np.int64)], "/mask/Unsqueeze")
    allowed = b.node("Mul", [causal, padding], "/mask/Mul")
    blocked = b.node("Sub", [b.const(1.0), allowed], "/mask/Sub")
    return b.node("Mul", [blocked, b.const(MASK_NEGATIVE)], "/mask/Mul_1")


def _gpt2_block(b: GraphBuilder, x: str, mask_bias: str, weights: Weights, config: DecoderConfig, index: int) -> str:
    prefix = f"h.{index}"
    scope = f"/h.{index}"
    hidden = config.hidden_size
    normed = _layer_norm(b, x, weights, f"{prefix}.ln_1", config.layer_norm_eps)
    qkv = _linear(b, normed, weights, f"{prefix}.attn.c_attn", transpose=False)
    query, key, value = b.node("Split", [qkv, b.const([hidden] * 3, np.int64)], f"{scope}/attn/Split", outputs=3,
                               axis=2)
    context = _attention_core(b, query, key, value, mask_bias, config.num_heads, config.head_size, hidden,
                              f"{scope}/attn")
    attended = _linear(b, context, weights, f"{prefix}.attn.c_proj", transpose=False)
    x = b.node("Add", [x, attended], f"{scope}/Add")
    normed = _layer_norm(b, x, weights, f"{prefix}.ln_2", config.layer_norm_eps)
    inner = gelu_tanh(b, _linear(b, normed, weights, f"{prefix}.mlp.c_fc", transpose=False), f"{scope}/mlp/act")
    return b.node("Add", [x, _linear(b, inner, weights, f"{prefix}.mlp.c_proj", transpose=False)], f"{scope}/Add_1")


def gpt2_decoder(config: DecoderConfig, weights: Weights, name: str, doc_string: str = "") -> onnx.ModelProto:
    """A GPT-2 decoder stack: ``input_ids, attention_mask -> logits`` (causal, right padding).

    Weight names are those of a ``GPT2Model`` checkpoint (Conv1D weights already ``[in, out]``);
    the tied language-model head is stored as its own transposed initializer, as exporters do.
    """
    b = GraphBuilder(name)
    dims = ["batch", "sequence"]
    ids = b.input("input_ids", TensorProto.INT64, dims)
    mask = b.input("attention_mask", TensorProto.INT64, dims)
    token_table = b.initializer("wte.weight", weights["wte.weight"])
    position_table = b.initializer("wpe.weight", weights["wpe.weight"])
    tokens = b.node("Gather", [token_table, ids], "/wte/Gather")
    positions = b.node("Slice", [position_table, b.const([0], np.int64), _sequence_length(b, ids),
                                 b.const([0], np.int64)], "/wpe/Slice")
    x = b.node("Add", [tokens, positions], "/embeddings/Add")
    mask_bias = _causal_padding_bias(b, ids, mask)
    for index in range(config.num_layers):
        x = _gpt2_block(b, x, mask_bias, weights, config, index)
    x = _layer_norm(b, x, weights, "ln_f", config.layer_norm_eps)
    head = b.initializer("lm_head.weight", np.ascontiguousarray(weights["wte.weight"].T))
    b.node("MatMul", [x, head], "/lm_head/MatMul", outputs=["logits"])
    b.output("logits", TensorProto.FLOAT, ["batch", "sequence", config.vocab_size])
    return b.model(doc_string)
