"""``prune-neurons``: remove hidden units of MLPs and inner channels of conv blocks, refit the next layer.

What: the hidden units of MatMul/Gemm → activation → MatMul/Gemm pairs (biases and any
elementwise ops between included) and the channels between convolutions (through
BatchNormalization, activations, Pad, pools and depthwise convolutions) are removed from
every tensor and weight that carries them, so the weights and the work really shrink.
With ``--calib DATA`` the units whose removal costs least after a least-squares refit go
first, and the layer that reads them is refitted against the original model's outputs.

Why: fewer FLOPs and a smaller file on every runtime, unlike masks or unstructured zeros.

When unsafe: it is lossy; the output error depends on the ratio and the data (the report
lists each layer's error before and after recovery, and ``max_error`` bounds the whole
model). Residual streams (channels added across blocks) are left alone unless
``residual_streams=true``; hidden sizes behind LayerNormalization, graph outputs or ops it
does not know are never touched, and the report says why.
"""

from __future__ import annotations

from dataclasses import dataclass

from onnxopt.model_io import Model
from onnxopt.pass_api import Contract, Pass, PassContext, PassResult
from onnxopt.passes.pruning.candidates import Candidate, neuron_candidates
from onnxopt.passes.pruning.coupling import Group
from onnxopt.passes.pruning.decide import ratio_count, units_to_remove
from onnxopt.passes.pruning.structured import StructuredOptions, StructuredPruning, infos_of, validate


@dataclass(frozen=True)
class PruneNeuronsOptions(StructuredOptions):
    """``StructuredOptions`` plus ``residual_streams``: also prune channels shared through residual Adds."""

    residual_streams: bool = False


def find_neurons(model: Model) -> list[Candidate]:
    return neuron_candidates(model.graph, infos_of(model))


class PruneNeurons(Pass):
    """Remove MLP hidden units and conv channels (weights really shrink); refit the next layer on DATA."""

    name = "prune-neurons"
    contract = Contract.LOSSY
    cleanup = False
    walks_subgraphs = False  # If/Loop/Scan bodies and local functions are left as they are
    walks_functions = False
    Options = PruneNeuronsOptions

    def run(self, model: Model, ctx: PassContext) -> PassResult:
        options: PruneNeuronsOptions = self.options  # type: ignore[assignment]
        validate(options, self.name)

        def eligible(group: Group) -> str:
            if group.residual and not options.residual_streams:
                return "residual stream (channels added across blocks); residual_streams=true prunes it"
            return ""

        pruning = StructuredPruning(self.name, options, find_neurons,
                                    lambda group, ratio: units_to_remove(group.units, ratio_count(group.units, ratio),
                                                                        options.round_to),
                                    "neurons")
        return pruning.run(model, ctx, eligible)
