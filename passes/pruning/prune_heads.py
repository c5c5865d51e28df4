"""``prune-heads``: remove whole attention heads and every constant that counts them.

What: a head's query, key and value columns (and biases; in a fused QKV weight all three
slices), its rows of the output projection, and every shape constant and attribute that
encodes the head count — the Reshape targets ``[.., H, D]`` and ``[.., H·D]``, Split sizes,
per-head biases or masks with a head axis, ``num_heads`` of com.microsoft
MultiHeadAttention. With ``--calib DATA`` the heads whose loss the refitted output
projection absorbs best go first (optimal-brain-surgeon over each head's ``D`` rows), and
the output projection is refitted against the original model's outputs.

Why: attention's projections and score matrices shrink with the head count (Kwon et al.
2022 remove heads and FFN units without retraining).

When unsafe: lossy. Heads read by anything the tracer does not know (a rotary embedding
written with Slice/Gather, a cache concat) are skipped with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass

from onnxopt.errors import BadInputError
from onnxopt.model_io import Model
from onnxopt.pass_api import Contract, Pass, PassContext, PassResult
from onnxopt.passes.pruning.candidates import Candidate, head_candidates
from onnxopt.passes.pruning.coupling import Group
from onnxopt.passes.pruning.decide import ratio_count, units_to_remove
from onnxopt.passes.pruning.structured import StructuredOptions, StructuredPruning, infos_of, validate


@dataclass(frozen=True)
class PruneHeadsOptions(StructuredOptions):
    """``StructuredOptions`` plus ``count``: heads removed per layer (overrides ``ratio`` when > 0)."""

    count: int = 0


def find_heads(model: Model) -> list[Candidate]:
    return head_candidates(model.graph, infos_of(model))


class PruneHeads(Pass):
    """Remove whole attention heads (Q/K/V, output projection, Reshape/Split constants, num_heads)."""

    name = "prune-heads"
    contract = Contract.LOSSY
    cleanup = False
    walks_subgraphs = False
    walks_functions = False
    Options = PruneHeadsOptions

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        options: PruneHeadsOptions = self.options  # type: ignore[assignment]
        validate(options, self.name)
        if options.count < 0:
            raise BadInputError(f"{self.name}: count must be >= 0")

        def removal_count(group: Group, ratio: float) -> int:
            wanted = options.count if options.count > 0 else ratio_count(group.units, ratio)
            return units_to_remove(group.units, wanted, options.round_to)

        return StructuredPruning(self.name, options, find_heads, removal_count, "heads").run(model, ctx)
