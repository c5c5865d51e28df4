"""The pass registry: an explicit list, plus third-party passes from entry points.

Passes live in one folder per family, each with a docstring that says how the family works:

* ``cleanup/``      exact rewrites looped to a fixed point (dedup, dead code, identity, folding, CSE);
* ``fusion/``       Conv+BatchNormalization and MatMul+Add fusions (tolerance 1e-5);
* ``precision/``    the fp16/bf16 pass with its plan, range measurement and rewrite;
* ``quantization/`` int8 Q/DQ (static, dynamic), int8 embeddings, int4/binary/ternary weight-only;
* ``fastconv/``     Winograd/FFT convolution and Strassen MatMul as custom ops with native kernels;
* ``sharing/``      transposed/reshaped twin weights stored once (exact), k-means weight clustering (lossy);
* ``pruning/``      structured pruning (neurons, channels, heads, layers) refitted against the original, N:M sparsity.

A family imports only from the framework (``onnxopt.*``), never from another family.
Third parties register a ``Pass`` subclass under the ``onnxopt.passes`` entry-point group.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from importlib.metadata import entry_points

from onnxopt.errors import BadInputError
from onnxopt.pass_api import Pass

logger = logging.getLogger(__name__)

# Each pass module adds its class here, in the order `onnxopt passes` lists them.
BUILTIN_PASSES: list[type[Pass]] = []

# Presets: named pass lists. "default" is what `onnxopt optimize` runs without options.
PRESETS: dict[str, list[str]] = {}
# The exact cleanup passes, looped to a fixed point by the pass manager.
PRESETS["default"] = [
    "eliminate-identity",
    "fold-constants",
    "dedup-initializers",
    "share-twins",
    "cse",
    "fuse-conv-bn",
    "fuse-matmul-add",
    "eliminate-dead",
]
# The exact cleanups without twin sharing, before passes that rewrite weights (quantize, palettize, sparsify):
# those only rewrite a weight whose every reader they rewrite, and a shared twin is also read by the
# Transpose/Reshape that rebuilds the other one, so sharing first would leave a tied weight as it was (GPT-2
# small, head tied to the embedding table: int8 65.8 MiB with sharing against 30.9 MiB without; int4 52.0
# against 18.3; palettize 51.7 against 18.4; sparsify skipped the head as "read by several nodes").
CLEANUP_BEFORE_WEIGHT_QUANTIZATION = [name for name in PRESETS["default"] if name != "share-twins"]
WEIGHT_REWRITING_PASSES = frozenset({"qdq", "weight-only", "quantize-embeddings", "cluster-weights", "sparsify"})


def cleanup_before(pass_names: Iterable[str]) -> list[str]:
    """The exact cleanups to run before these passes (the tuner's trials follow the presets' rule)."""
    if WEIGHT_REWRITING_PASSES & {name.split(":", 1)[0] for name in pass_names}:
        return list(CLEANUP_BEFORE_WEIGHT_QUANTIZATION)
    return list(PRESETS["default"])


# Weight-only int4 after the exact cleanups: GPTQ with --calib DATA, else round-to-nearest; MatMulNBits for
# onnxruntime targets, DequantizeLinear(block_size) at opset 21 for the others (weight-only's format=auto).
PRESETS["int4"] = [*CLEANUP_BEFORE_WEIGHT_QUANTIZATION, "weight-only:scheme=int4"]
# Half precision after the exact cleanups (folding and Conv+BN fusion first leave fewer, simpler nodes to decide).
PRESETS["fp16"] = [*PRESETS["default"], "fp16"]
PRESETS["bf16"] = [*PRESETS["default"], "fp16:bf16=true"]
# int8 after the exact cleanups (Conv+BN folded first, so the int8 Conv has no float BN after it).
# qdq is static (calibrated Q/DQ) with --calib DATA, dynamic (MatMul/Gemm, onnxruntime CPU) without.
# Embedding tables then go int8 too (GatherBlockQuantized; onnxruntime targets only, a no-op elsewhere).
PRESETS["int8"] = [*CLEANUP_BEFORE_WEIGHT_QUANTIZATION, "qdq", "quantize-embeddings"]
# TensorRT: static symmetric int8 Q/DQ; needs --calib DATA (TensorRT has no dynamic int8).
PRESETS["int8-tensorrt"] = [*CLEANUP_BEFORE_WEIGHT_QUANTIZATION, "qdq:target=tensorrt"]
# Palettization after the exact cleanups: 4-bit k-means codebooks (16 int8 entries with a float16 scale) per output
# channel and 64 rows of each MatMul/Gemm weight, per channel(s) of tables and Conv kernels; rebuilt by standard ONNX
# ops that onnxruntime folds at load (float speed; MiniLM 0.16x file). With --calib DATA: importance-weighted
# k-means and error feedback (MiniLM: mean cosine 0.994 to the PyTorch reference on held-out sentences).
PRESETS["palettize"] = [*CLEANUP_BEFORE_WEIGHT_QUANTIZATION,
                        "cluster-weights:bits=4:group_channels=1:group_rows=64:codebook_dtype=int8"]


# "family.module:Class" of each built-in pass, one per line, in listing order. Each family is a folder of
# this package (cleanup/, fusion/, precision/, quantization/, fastconv/, sharing/, pruning/) whose __init__
# docstring says how it works.
_BUILTIN_MODULES: list[str] = [
    "cleanup.dedup_initializers:DedupInitializers",
    "cleanup.eliminate_dead:EliminateDead",
    "cleanup.eliminate_identity:EliminateIdentity",
    "cleanup.fold_constants:FoldConstants",
    "cleanup.cse:CommonSubexpressionElimination",
    "sharing.share_twins:ShareTwins",
    "sharing.cluster_weights:ClusterWeights",
    "fusion.fuse_conv_bn:FuseConvBatchNorm",
    "fusion.fuse_matmul_add:FuseMatMulAdd",
    "quantization.weight_only:WeightOnly",
    "precision.fp16:Fp16Pass",
    "quantization.qdq:QdqPass",
    "quantization.quantize_embeddings:QuantizeEmbeddings",
    "fastconv.fast_conv:FastConv",
    "fastconv.strassen:StrassenMatMul",
    "pruning.prune_neurons:PruneNeurons",
    "pruning.prune_heads:PruneHeads",
    "pruning.prune_layers:PruneLayers",
    "pruning.sparsify:Sparsify",
]


def _register_builtins() -> None:
    # Imported lazily so each pass module can import from onnxopt without import cycles.
    import importlib

    for spec in _BUILTIN_MODULES:
        module_name, _, class_name = spec.partition(":")
        module = importlib.import_module(f"{__name__}.{module_name}")
        BUILTIN_PASSES.append(getattr(module, class_name))


def all_passes() -> dict[str, type[Pass]]:
    """Every known pass by CLI name: built-ins first, then entry points."""
    if not BUILTIN_PASSES:
        _register_builtins()
    registry = {cls.name: cls for cls in BUILTIN_PASSES}
    for entry in entry_points(group="onnxopt.passes"):
        try:
            cls = entry.load()
        except Exception as error:  # a broken plugin must not take the tool down
            logger.warning("cannot load pass plugin %s: %s", entry.name, error)
            continue
        registry.setdefault(cls.name, cls)
    return registry


def get_pass(name: str) -> type[Pass]:
    """The pass class for a CLI name, or a BadInputError listing the known names."""
    registry = all_passes()
    if name not in registry:
        raise BadInputError(f"unknown pass {name!r} (known: {', '.join(registry)})")
    return registry[name]
