"""Deterministic choices without timing (fast-conv's ``mode=rules``), and each algorithm's error bound.

The thresholds summarise side-by-side measurements on x86-64 with onnxruntime's CPU provider
(``bench/fastconv_layers.py``, ``bench/results/fastconv_layers.md``): Winograd F(4x4, 3x3) wins once
there are enough channels for its GEMMs to dominate its transforms; FFT wins once a kernel has enough
taps that direct convolution's work (proportional to the taps) exceeds the FFTs' (independent of them).
Rules cannot see the machine, so they are conservative: measure (the default mode) where it matters.

Error bounds: twice the worst relative max error each algorithm reached against a float64 reference
over the layers of ``bench/fastconv_errors.py`` on every instruction set (F(2,3) 6.7e-7, F(4,3) 1.1e-5,
F(6,3) 1.7e-5, FFT 3.3e-7; onnxruntime's own float32 Conv 5e-7 to 1.4e-6); a candidate whose bound
exceeds the pass's ``max_rel_error`` is not chosen by rules.
"""

from __future__ import annotations

from .match import ConvPattern

# Relative max error vs float64 per algorithm: twice the worst of bench/results/fastconv_errors.md.
ERROR_BOUNDS = {"winograd2": 1.5e-6, "winograd4": 2.5e-5, "winograd6": 3.5e-5, "fft": 1e-6}

WINOGRAD_MIN_CHANNELS = 32  # 32 channels at 56 x 56: F(4,3) about 1.8x
WINOGRAD_MIN_OUTPUT = 4  # output height and width
FFT_MIN_TAPS_1D = 31  # 16 channels, 16000 samples: about 5x at 31 taps
FFT_MIN_TAPS_2D_DEPTHWISE = 225  # 15 x 15 (13 x 13 broke even at 56 x 56 x 64, 7 x 7 was twice slower)
FFT_MIN_TAPS_2D_DENSE = 81  # 9 x 9, 32 channels at 56 x 56: about 2-3x


def rule_choice(pattern: ConvPattern, allowed: list[str], max_rel_error: float) -> tuple[str, str]:
    """(algorithm or "", reason) for ``pattern`` among ``allowed`` algorithms."""
    allowed = [name for name in allowed if ERROR_BOUNDS.get(name, 1.0) <= max_rel_error]
    channels, out_channels = pattern.x_shape[1], pattern.out_shape[1]
    taps = 1
    for size in pattern.kernel:
        taps *= size
    if pattern.kernel == (3, 3) and pattern.group == 1:
        if min(channels, out_channels) < WINOGRAD_MIN_CHANNELS:
            return "", f"rules: fewer than {WINOGRAD_MIN_CHANNELS} channels, Winograd's transforms dominate"
        if min(pattern.out_shape[2:]) < WINOGRAD_MIN_OUTPUT:
            return "", "rules: output smaller than one 4x4 tile"
        for name in ("winograd4", "winograd2"):
            if name in allowed:
                return name, f"rules: 3x3 with {channels}->{out_channels} channels"
        return "", "rules: no Winograd tile within the error bound"
    if "fft" in allowed:
        threshold = (FFT_MIN_TAPS_1D if pattern.dims == 1
                     else FFT_MIN_TAPS_2D_DEPTHWISE if pattern.depthwise else FFT_MIN_TAPS_2D_DENSE)
        if taps >= threshold:
            return "fft", f"rules: {taps} taps >= {threshold}"
        return "", f"rules: {taps} taps < {threshold}, FFT does not pay off"
    return "", "rules: no allowed algorithm fits"
