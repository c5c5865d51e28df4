"""``weight-only``: low-bit weights (int4 blockwise, binary, ternary), activations stay float.

What: the constant weights of MatMul, Gemm (``transB`` or not) and Conv, and embedding
tables read by Gather, are stored as packed 4-bit (or 2-bit) codes with per-block (int4)
or per-output-channel (binary/ternary) scales, and dequantized where they are used. Int4
codes are fitted round-to-nearest (``rtn``) or with GPTQ (``gptq``: each row's rounding
error is pushed onto the rows still to be quantized, weighted by the layer's input
statistics ``XᵀX`` streamed from DATA); ``auto`` picks GPTQ when DATA is given.

Why: file size (int4: about 1/7 of fp32 with block 32, binary/ternary about 1/8 or 1/16)
and memory bandwidth, without calibrating activation ranges.

Forms (``format``; ``auto`` takes ``matmulnbits`` for onnxruntime targets, ``dq`` for the
others): ``dq`` writes standard ONNX (``DequantizeLinear`` with ``block_size``, INT4
storage, opset 21 — older models are upgraded with onnx's version converter, and the
result says so); ``matmulnbits`` writes onnxruntime's contrib ``MatMulNBits`` and
``GatherBlockQuantized`` (no opset change; only onnxruntime runs them); weights they do
not cover (Conv kernels, Gemm with transA, tied embeddings) take the ``dq`` form.
What onnxruntime 1.31 CPU makes of them (measured in bench/weight_only.py): MatMulNBits
runs at about fp32 speed (0.9–1.0× on MiniLM and BERT-base, batch 1); with its graph
optimizations on, onnxruntime fuses ``dq`` MatMuls into the same kernel itself, but an
embedding ``DequantizeLinear → Gather`` dequantizes the whole table every run (1.1–1.3×)
and Conv kernels are dequantized every run (1.4–4.5× on CNNs) unless the session sets
``session.disable_quant_qdq=1``, which folds them at load (fp32 speed and memory, small
file). Binary/ternary codes take 2 bits in MatMulNBits (its 2-bit kernel is 1.5–1.9×
slower than fp32) and INT4 in ``dq`` unless the model is at opset ≥ 25 or
``storage_bits=2`` (INT2 needs opset 25 and IR 13, which onnxruntime 1.31 loads).

When unsafe: it is lossy. Int4 costs some accuracy (MiniLM sentence-embedding cosine
0.969 with RTN, 0.985 with GPTQ, block 32); binary and ternary weights destroy the
accuracy of a model trained in float (they need quantization-aware retraining) — the
pass does what is asked and the report shows the damage. Embedding tables are always int4
(binary embeddings are not a thing). Weights also read by other ops, by subgraphs, or
smaller than ``min_weight_elements`` stay float.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass

import numpy as np
import onnx
import onnx.version_converter

from onnxopt.decisions import decision
from onnxopt.errors import BadInputError
from onnxopt.input_statistics import HessianAccumulator, collect_hessians, padding_mask_input
from onnxopt.model_io import Model, constant_nbytes, from_proto, read_constant, to_proto
from onnxopt.pass_api import Contract, Pass, PassContext, PassOptions, PassResult, SearchSpec, check_choice
from onnxopt.passes.quantization.common import NameScope
from onnxopt.passes.quantization.gptq import DEFAULT_DAMP_RATIO, output_error, quantize_gptq
from onnxopt.passes.quantization.lowbit import SCHEMES, QuantizedMatrix, make_quantizer, quantize_rtn
from onnxopt.passes.quantization.weight_only_emit import (
    DQ_OPSET_FOR_BITS,
    emit_dq,
    emit_gather_block,
    emit_matmulnbits,
    stored_bytes,
)
from onnxopt.passes.quantization.weight_only_plan import (
    WEIGHT_SLOT,
    PlanRequest,
    WeightPlan,
    compile_patterns,
    plan_weights,
)

logger = logging.getLogger(__name__)

METHODS = ("auto", "rtn", "gptq")
FORMATS = ("auto", "dq", "matmulnbits")
# Targets that run onnxruntime's contrib ops; "auto" picks MatMulNBits for them.
ORT_TARGETS = ("ort-cpu", "ort-cuda")


@dataclass(frozen=True)
class WeightOnlyOptions(PassOptions):
    """Options of the weight-only pass (the single source of truth for CLI, pipelines and API).

    ``scheme``: int4 | binary | ternary. ``method``: auto (gptq with DATA, else rtn) | rtn | gptq.
    ``block_size``: rows of the reduction axis sharing one int4 scale (matmulnbits: a power
    of two ≥ 16). ``symmetric``: int4 codes in [-8, 7] without zero point, else uint4 with
    zero points. ``format``: auto (matmulnbits for onnxruntime targets when block_size
    allows, else dq) | dq | matmulnbits. ``op_types``: compute ops whose weights are
    quantized (MatMul, Gemm, Conv). ``quantize_embeddings``: int4 for Gather tables too.
    ``exclude``: node or weight names / regular expressions (full match) to keep float.
    ``min_weight_elements``: smaller weights stay float. ``storage_bits``: for binary/ternary,
    2 or 4 (0 = 2 where it needs no opset upgrade: matmulnbits, or a model at opset ≥ 25).
    ``accuracy_level``: MatMulNBits compute precision (4 = int8 activations, what
    onnxruntime itself picks when it fuses DequantizeLinear→MatMul: 0.89–0.92× fp32 latency
    on GPT-2/BERT-base vs 1.02–1.12× for 0 = fp32 compute, same cosine to 4 digits).
    ``gptq_damp_ratio``: diagonal damping as a fraction of mean(diag H).
    ``calib_max_batches``: batches of DATA read (0 = all).
    ``stats_memory_bytes``: most bytes of ``XᵀX`` sums held at once (more passes over DATA
    beyond it). ``calib_mask_input``: model input ``[batch, sequence]`` whose zeros mark
    padded positions left out of GPTQ's statistics ("auto": an input named like
    ``attention_mask``; "" = none). ``clip_search``: per int4 block, try shrinking the range
    (clipping outliers for a finer grid) and keep the lowest squared error.
    ``gptq_act_order``: GPTQ quantizes the inputs with the most energy first (blocks keep
    their stored rows; helps little on the models measured, so off by default).
    """

    scheme: str = "int4"
    method: str = "auto"
    block_size: int = 32
    symmetric: bool = True
    format: str = "auto"
    op_types: tuple[str, ...] = ("MatMul", "Gemm", "Conv")
    quantize_embeddings: bool = True
    exclude: tuple[str, ...] = ()
    min_weight_elements: int = 1024
    storage_bits: int = 0
    accuracy_level: int = 4
    gptq_damp_ratio: float = DEFAULT_DAMP_RATIO
    calib_max_batches: int = 0
    stats_memory_bytes: int = 1 << 30
    calib_mask_input: str = "auto"
    clip_search: bool = True
    gptq_act_order: bool = False


def validate_options(options: WeightOnlyOptions) -> None:
    """One-line BadInputErrors for options that cannot work."""
    check_choice("weight-only", "scheme", options.scheme, SCHEMES)
    check_choice("weight-only", "method", options.method, METHODS)
    check_choice("weight-only", "format", options.format, FORMATS)
    unknown_ops = sorted(set(options.op_types) - (set(WEIGHT_SLOT) - {"Gather"}))
    if unknown_ops:
        raise BadInputError(f"weight-only: op_types {', '.join(unknown_ops)} not supported (MatMul, Gemm, Conv)")
    if options.block_size < 1:
        raise BadInputError("weight-only: block_size must be positive")
    if options.format == "matmulnbits" and not _mnb_block_ok(options.block_size):
        raise BadInputError("weight-only: matmulnbits needs block_size to be a power of two ≥ 16")
    if options.storage_bits not in (0, 2, 4):
        raise BadInputError("weight-only: storage_bits must be 0 (auto), 2 or 4")
    if options.storage_bits == 2 and options.scheme == "int4":
        raise BadInputError("weight-only: int4 codes need storage_bits 4")
    if options.accuracy_level not in (0, 1, 2, 3, 4):
        raise BadInputError("weight-only: accuracy_level must be 0..4")
    try:
        compile_patterns(options.exclude)
    except Exception as error:  # re.error: a user's regex
        raise BadInputError(f"weight-only: bad exclude pattern ({error})") from None


def _mnb_block_ok(block_size: int) -> bool:
    return block_size >= 16 and not block_size & (block_size - 1)


def resolve_format(options: WeightOnlyOptions, target: str) -> str:
    """``dq`` or ``matmulnbits``: "auto" takes onnxruntime's fast kernels where the target runs them."""
    if options.format != "auto":
        return options.format
    return "matmulnbits" if target in ORT_TARGETS and _mnb_block_ok(options.block_size) else "dq"


def storage_bits_for(options: WeightOnlyOptions, scheme: str, form: str, opset: int) -> int:
    """Bits per stored code: 4 for int4; 2 for binary/ternary where the form reads it without an upgrade."""
    if scheme == "int4":
        return 4
    if options.storage_bits:
        return options.storage_bits
    if form == "dq" and opset < DQ_OPSET_FOR_BITS[2]:
        return 4
    return 2


class OpsetUpgradeRefused(Exception):
    """onnx's version converter cannot bring this model to the opset the DequantizeLinear form needs."""


def upgrade_opset(model: Model, version: int) -> None:
    """Convert ``model`` in place to default-domain opset ``version`` with onnx's converter.

    A converter without an adapter for one of the model's ops is neither the user's fault nor
    a bug of the pass: the pass then leaves the model as it is and says why (OpsetUpgradeRefused).
    """
    proto = to_proto(model)
    try:
        converted = onnx.version_converter.convert_version(proto, version)
    except Exception as error:  # the converter raises bare RuntimeErrors/ValidationErrors
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise OpsetUpgradeRefused(
            f"onnx's version converter cannot bring the model to opset {version} for DequantizeLinear "
            f"({first}); format=matmulnbits with op_types=MatMul,Gemm needs no upgrade") from None
    upgraded = from_proto(converted, base_dir=model.base_dir, path=model.path)
    model.graph = upgraded.graph


class WeightOnly(Pass):
    """Weight-only int4 (blockwise, RTN or GPTQ), binary or ternary weights, stored packed."""

    name = "weight-only"
    contract = Contract.LOSSY
    cleanup = False
    walks_subgraphs = False  # weights inside If/Loop/Scan bodies stay float (declared, not forgotten)
    walks_functions = False
    Options = WeightOnlyOptions

    @classmethod
    def search_space(cls) -> SearchSpec:
        """For ``onnxopt tune``: int4 (block size, GPTQ or RTN, symmetric, compute precision), ternary, binary."""
        int4 = {"scheme": ("int4",)}
        return SearchSpec(
            group="precision", stage=60,
            options={"scheme": ("int4", "ternary", "binary"), "block_size": (32, 64, 128, 16),
                     "method": ("auto", "rtn"), "accuracy_level": (4, 0), "symmetric": (True, False),
                     "quantize_embeddings": (True, False)},
            conditions={"block_size": int4, "symmetric": int4},
        )

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        options: WeightOnlyOptions = self.options  # type: ignore[assignment]
        validate_options(options)
        method = options.method
        if method == "auto":
            method = "gptq" if ctx.data is not None else "rtn"
        if method == "gptq" and ctx.data is None:
            raise BadInputError("weight-only: method=gptq needs calibration data (--calib DATA)")
        form = resolve_format(options, ctx.target)
        request = PlanRequest(scheme=options.scheme, block_size=options.block_size, form=form,
                              op_types=tuple(options.op_types), quantize_embeddings=options.quantize_embeddings,
                              exclude=tuple(options.exclude), min_weight_elements=options.min_weight_elements)
        plans, skipped = plan_weights(model.graph, request)
        notes = [f"kept float: {name} ({reason})" for name, reason in sorted(skipped.items())]
        notes += [note for plan in plans for note in plan.notes]
        stats: dict[str, object] = {"scheme": options.scheme, "method": method, "format": form,
                                    "skipped": dict(Counter(skipped.values())),
                                    "decisions": _float_rows(model, skipped)}
        if not plans:
            return PassResult(modified=False, stats=stats, notes=notes)

        needed = max((DQ_OPSET_FOR_BITS[storage_bits_for(options, p.scheme, p.form, model.opset)]
                      for p in plans if p.form == "dq"), default=0)
        if needed > model.opset:
            source = model.opset
            try:
                upgrade_opset(model, needed)
            except OpsetUpgradeRefused as refusal:
                logger.warning("weight-only left the model unchanged: %s", refusal)
                stats["refused"] = str(refusal)
                return PassResult(modified=False, stats=stats, notes=[*notes, f"left unchanged: {refusal}"])
            notes.append(f"opset upgraded from {source} to {needed} for DequantizeLinear (block_size / sub-byte types)")
            stats["opset_upgraded"] = f"{source}->{needed}"
            logger.info("weight-only: converted the model from opset %d to %d", source, needed)
            plans, skipped = plan_weights(model.graph, request)

        hessians = self._statistics(model, plans, ctx, options) if method == "gptq" else {}
        names = NameScope(model.graph)
        float_bytes = quantized_bytes = 0
        errors: list[float] = []
        by_op: Counter[str] = Counter()
        by_form: Counter[str] = Counter()
        rows: list[dict[str, object]] = []
        for plan in plans:
            row = decision(plan.uses[0].node.name, "/".join(sorted(plan.ops)), plan.scheme, plan.form,
                           weight=plan.constant.name)
            weight_bytes = constant_nbytes(plan.constant)
            weights = plan.view.to_kn(np.asarray(read_constant(plan.constant), dtype=np.float64))
            quantized, hessian = self._quantize(plan, weights, hessians, options)
            if hessian is not None:
                errors.append(output_error(weights, quantized, hessian))
            created = self._emit(model, names, plan, quantized, options)
            float_bytes += weight_bytes
            quantized_bytes += stored_bytes(created)
            rows.append({**row, "reason": f"{plan.form}, {'gptq' if hessian is not None else 'rtn'}",
                         "float_bytes": weight_bytes, "quantized_bytes": stored_bytes(created),
                         **({"error": errors[-1]} if hessian is not None else {})})
            by_op.update(use.node.op for use in plan.uses)
            by_form[plan.form] += 1
        model.graph.cleanup(remove_unused_graph_inputs=False)
        model.graph.toposort()
        stats.update({
            "weights_quantized": len(plans),
            "nodes_by_op": dict(by_op),
            "weights_by_form": dict(by_form),
            "float_weight_bytes": float_bytes,
            "quantized_weight_bytes": quantized_bytes,
            "decisions": _float_rows(model, skipped) + rows,
        })
        if errors:
            stats["gptq_relative_output_error_mean"] = float(np.mean(errors))
            stats["gptq_relative_output_error_max"] = float(np.max(errors))
        logger.info("weight-only: %d weights, %d -> %d bytes", len(plans), float_bytes, quantized_bytes)
        return PassResult(modified=True, stats=stats, notes=notes)

    @staticmethod
    def _statistics(model: Model, plans: list[WeightPlan], ctx: PassContext,
                    options: WeightOnlyOptions) -> dict[tuple[str, bool], HessianAccumulator]:
        requests: dict[tuple[str, bool], int] = {}
        for plan in plans:
            if plan.gptq_capable:
                for use in plan.uses:
                    requests[(use.activation.name, use.activation_transposed)] = plan.view.k
        if not requests:
            return {}
        return collect_hessians(model, requests, ctx.data, options.stats_memory_bytes, options.calib_max_batches,
                                mask_input=padding_mask_input(model, options.calib_mask_input))

    @staticmethod
    def _quantize(plan: WeightPlan, weights: np.ndarray, hessians: dict[tuple[str, bool], HessianAccumulator],
                  options: WeightOnlyOptions) -> tuple[QuantizedMatrix, np.ndarray | None]:
        """Codes of ``weights [K, N]``: GPTQ when the plan's input statistics exist, else RTN."""
        quantizer = make_quantizer(plan.scheme, symmetric=options.symmetric or plan.scheme != "int4",
                                   storage_dtype=np.dtype(plan.constant.dtype), clip_search=options.clip_search)
        group_rows = options.block_size if plan.view.blocked else plan.view.k
        keys = [(use.activation.name, use.activation_transposed) for use in plan.uses if use.activation is not None]
        if plan.gptq_capable and keys and all(key in hessians for key in keys):
            total = HessianAccumulator(plan.view.k)
            for key in dict.fromkeys(keys):
                total.merge(hessians[key])
            if total.rows:
                return quantize_gptq(weights, total.sum, quantizer, group_rows, options.gptq_damp_ratio,
                                     act_order=options.gptq_act_order), total.sum
        return quantize_rtn(weights, quantizer, group_rows), None

    @staticmethod
    def _emit(model: Model, names: NameScope, plan: WeightPlan, quantized: QuantizedMatrix,
              options: WeightOnlyOptions) -> list:
        bits = storage_bits_for(options, plan.scheme, plan.form, model.opset)
        if plan.form == "dq":
            return emit_dq(model.graph, names, plan, quantized, options.block_size, bits)
        if plan.form == "matmulnbits":
            return emit_matmulnbits(model.graph, names, plan, quantized, options.block_size, bits,
                                    options.accuracy_level)
        return emit_gather_block(model.graph, names, plan, quantized, options.block_size)


def _float_rows(model: Model, skipped: dict[str, str]) -> list[dict[str, object]]:
    """Report rows for the weights left float: the first node reading each, and why."""
    readers: dict[str, tuple[str, str]] = {}
    for node in model.graph.nodes:
        for tensor in node.inputs:
            readers.setdefault(tensor.name, (node.name, node.op))
    return [decision(*readers.get(name, (name, "?")), "float", reason, weight=name)
            for name, reason in sorted(skipped.items())]
