"""How much each weight element's error costs, from activation statistics streamed over DATA.

For a layer ``y = x @ W``, an error ``δ`` in ``W[k, n]`` moves output ``n`` by ``x_k · δ``, so
its expected cost is ``E[x_k²] · δ²`` (plus cross terms between inputs). Clustering uses:

* the diagonal ``E[x_k²]`` as each element's weight in k-means (every reader of the weight
  adds its own; Conv inputs give one energy per input channel, spatial positions pooled);
* the full ``XᵀX`` of MatMul/Gemm inputs for error feedback (``onnxopt.error_feedback``),
  which also accounts for the cross terms.

Both are streamed by the framework (``onnxopt.input_statistics``): one pass over DATA for
the energies, memory ``K`` per input; ``K²`` per input for the full statistics, in as many
passes as a memory budget needs. Tables (Gather, Slice) get no data weighting: a calibration
set sees a sliver of the vocabulary, and weighting the rows it happens to contain would fit
the codebooks to those tokens at the expense of all others.
"""

from __future__ import annotations

import numpy as np

from onnxopt.input_statistics import ChannelEnergy, HessianAccumulator
from onnxopt.passes.sharing.cluster_plan import ClusterPlan

HessianKey = tuple[str, bool]
EnergyKey = tuple[str, int]


def _conv_groups(plan: ClusterPlan, use_index: int) -> int:
    return int(plan.uses[use_index].node.attrs.get("group", 1))


def energy_requests(plans: list[ClusterPlan]) -> dict[EnergyKey, int]:
    """Activations whose per-channel ``Σ x²`` weights the k-means of ``plans`` (channel axis -> channels)."""
    requests: dict[EnergyKey, int] = {}
    for plan in plans:
        for index, use in enumerate(plan.uses):
            if use.activation is None:
                continue
            shape = plan.layout.shape
            in_axis = 1 if use.node.op == "Conv" else plan.layout.in_axis
            channels = shape[in_axis] * (_conv_groups(plan, index) if use.node.op == "Conv" else 1)  # type: ignore[index]
            requests[(use.activation.name, use.activation_axis)] = channels
    return requests


def hessian_requests(plans: list[ClusterPlan]) -> dict[HessianKey, int]:
    """``XᵀX`` requests (activation, transposed) -> K of the plans that take error feedback."""
    requests: dict[HessianKey, int] = {}
    for plan in plans:
        if plan.error_feedback_capable:
            k_rows = plan.layout.shape[plan.layout.in_axis]  # type: ignore[index]
            for use in plan.uses:
                requests[(use.activation.name, use.activation_axis == 0)] = k_rows  # type: ignore[union-attr]
    return requests


def element_importance(plan: ClusterPlan, energies: dict[EnergyKey, ChannelEnergy]) -> np.ndarray | None:
    """``E[x²]`` of the input each element multiplies, summed over readers, in the weight's shape (None: no data).

    float32: it only weighs errors, and it is as large as the weight."""
    shape = plan.layout.shape
    total: np.ndarray | None = None
    for index, use in enumerate(plan.uses):
        if use.activation is None:
            continue
        energy = energies.get((use.activation.name, use.activation_axis))
        if energy is None or energy.count == 0:
            continue
        mean = energy.mean
        if use.node.op == "Conv":
            groups = _conv_groups(plan, index)
            per_group_in, per_group_out = shape[1], shape[0] // groups
            channel = (np.arange(shape[0])[:, None] // per_group_out) * per_group_in + np.arange(per_group_in)[None, :]
            part = np.broadcast_to(mean[channel].reshape(shape[0], shape[1], *([1] * (len(shape) - 2))), shape)
        else:
            axis = plan.layout.in_axis
            view = [1] * len(shape)
            view[axis] = shape[axis]  # type: ignore[index]
            part = np.broadcast_to(mean.reshape(view), shape)
        total = part.astype(np.float32) if total is None else total + part
    return total


def plan_hessian(plan: ClusterPlan, hessians: dict[HessianKey, HessianAccumulator]) -> np.ndarray | None:
    """The summed ``XᵀX`` over the plan's readers (None when any is missing or saw no rows)."""
    keys = [(use.activation.name, use.activation_axis == 0) for use in plan.uses if use.activation is not None]
    if not keys or any(key not in hessians for key in keys):
        return None
    k_rows = plan.layout.shape[plan.layout.in_axis]  # type: ignore[index]
    total = HessianAccumulator(k_rows)
    for key in dict.fromkeys(keys):
        total.merge(hessians[key])
    return total.sum if total.rows else None
