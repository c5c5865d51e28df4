"""Errors against a float64 reference: how far a fast algorithm's output is from exact arithmetic.

The reference is the convolution computed in float64 with numpy (tap by tap, so it holds for any kernel
size), then the bias, residual and activation. Each candidate's error is reported next to the error of
onnxruntime's own float32 Conv on the same input, as the relative max error max|y - ref| / max|ref|
(the measure the pass manager's verification uses).
"""

from __future__ import annotations

import numpy as np

from .match import ConvPattern


def reference_output(pattern: ConvPattern, feed: dict[str, np.ndarray]) -> np.ndarray:
    """The pattern's output in float64."""
    x = feed["x"].astype(np.float64)
    weight = pattern.weight.astype(np.float64)
    dims = pattern.dims
    pads = pattern.pads
    padding = [(0, 0), (0, 0)] + [(pads[i], pads[i + dims]) for i in range(dims)]
    padded = np.pad(x, padding)
    n, channels = x.shape[:2]
    out_channels = weight.shape[0]
    out_spatial = pattern.out_shape[2:]
    y = np.zeros((n, out_channels, *out_spatial), dtype=np.float64)
    group = pattern.group
    per_group_in = channels // group
    per_group_out = out_channels // group
    for tap in np.ndindex(*pattern.kernel):
        window = tuple(slice(t, t + size) for t, size in zip(tap, out_spatial, strict=True))
        part = padded[(slice(None), slice(None), *window)]
        taps = weight[(slice(None), slice(None), *tap)]  # [K, C / group]
        if pattern.depthwise:
            y += part * taps[:, 0].reshape((1, out_channels) + (1,) * dims)
            continue
        for g in range(group):
            block = part[:, g * per_group_in:(g + 1) * per_group_in]
            w = taps[g * per_group_out:(g + 1) * per_group_out]
            y[:, g * per_group_out:(g + 1) * per_group_out] += np.einsum("nc...,kc->nk...", block, w)
    if pattern.bias is not None:
        y += pattern.bias.astype(np.float64).reshape((1, out_channels) + (1,) * dims)
    if pattern.add is not None:
        y += feed["r"].astype(np.float64)
    if pattern.activation == "Relu":
        y = np.maximum(y, 0.0)
    elif pattern.activation == "Clip":
        low, high = pattern.clip or (-np.inf, np.inf)
        y = np.clip(y, low, high)
    return y


def relative_error(output: np.ndarray, reference: np.ndarray) -> float:
    """max |output - reference| / max |reference| (inf when the output is not finite)."""
    output = np.asarray(output, dtype=np.float64)
    if not np.all(np.isfinite(output)):
        return float("inf")
    scale = float(np.max(np.abs(reference))) if reference.size else 0.0
    error = float(np.max(np.abs(output - reference))) if reference.size else 0.0
    if scale == 0.0:
        return 0.0 if error == 0.0 else float("inf")
    return error / scale
