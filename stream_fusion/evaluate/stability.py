"""Two measures the nine fusion metrics miss, both seen on real cameras (issue 15).

**Daylight kept** (:func:`luma_ratio`, :func:`daylight_summary`): by day the IR frame is often dark and flat and the
visible frame bright; a fusion that averages them halves the scene's brightness, which VIF, Qabf and SSIM barely
notice (they compare structure). The measure is the fused frame's mean luma over the visible frame's, on the pairs
where the visible frame is the brighter source (its mean luma above the IR's); 0.8 is the bar a viewer tolerates.

**Steady video** (:func:`temporal_change`): on a sequence, in *static* regions (pixels where both inputs change by
less than ``STATIC_LEVELS`` gray levels from one frame to the next) the fused frame should change no more than the
inputs do. The inputs' change at a pixel is the larger of the two sources' changes: a fusion that takes each pixel
from one source or blends them cannot change more than that, so a ratio above 1 is flicker the fusion added
(amplified noise, a weight map that jumps). All on 0..255 gray levels; colour frames are scored on their luma by
the caller.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

DAYLIGHT_BAR = 0.8  # fused / visible mean luma a viewer still reads as "the same brightness"
STATIC_LEVELS = 2.0  # a pixel is static where both inputs change by less than this many gray levels


def luma_ratio(fused: np.ndarray, vis: np.ndarray) -> float:
    """Mean luma of the fused frame over the visible frame's (2-D gray arrays on 0..255)."""
    return float(np.mean(fused, dtype=np.float64) / max(float(np.mean(vis, dtype=np.float64)), 1e-6))


def visible_is_brighter(ir: np.ndarray, vis: np.ndarray) -> bool:
    """True where the visible frame is the brighter source: the pairs the daylight measure is about."""
    return float(np.mean(vis, dtype=np.float64)) > float(np.mean(ir, dtype=np.float64))


def daylight_summary(ratios: Sequence[float]) -> dict[str, float]:
    """``pairs``, ``min``, ``median`` and ``kept`` (the fraction at or above :data:`DAYLIGHT_BAR`) of the luma
    ratios of the pairs where the visible frame is brighter; an empty dict when there are none."""
    if not ratios:
        return {}
    values = np.asarray(ratios, dtype=np.float64)
    return {"pairs": float(len(values)), "min": float(values.min()), "median": float(np.median(values)),
            "kept": float(np.mean(values >= DAYLIGHT_BAR))}


def frame_change(prev: tuple[np.ndarray, ...], cur: tuple[np.ndarray, ...]) -> tuple[float, float, int]:
    """One step of a sequence: ``(fused change, inputs' change, static pixels)`` between two ``(fused, ir, vis)``
    triplets of 2-D gray frames; the changes are mean absolute differences over the static pixels."""
    fused_d, ir_d, vis_d = (np.abs(c.astype(np.float64) - p.astype(np.float64)) for p, c in zip(prev, cur))
    static = (ir_d < STATIC_LEVELS) & (vis_d < STATIC_LEVELS)
    count = int(static.sum())
    if count == 0:
        return 0.0, 0.0, 0
    return float(fused_d[static].mean()), float(np.maximum(ir_d, vis_d)[static].mean()), count


def temporal_change(frames: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> dict[str, float]:
    """Static-region frame-to-frame change of a fused sequence of ``(fused, ir, vis)`` gray frames in time order.

    ``fused`` and ``inputs``: mean change per step (gray levels), weighted by each step's static pixels; ``ratio``:
    ``fused / inputs`` (the number with the bar: at most 1.0); ``ratio_min`` / ``ratio_max`` over the steps;
    ``static``: the mean fraction of the frame that is static; ``steps``: frame pairs scored."""
    if len(frames) < 2:
        raise ValueError(f"a temporal measure needs at least 2 frames, got {len(frames)}")
    fused_sum = input_sum = 0.0
    pixels, per_step, static = 0, [], []
    for prev, cur in zip(frames, frames[1:]):
        fused_d, input_d, count = frame_change(prev, cur)
        static.append(count / prev[0].size)
        if count:
            fused_sum, input_sum, pixels = fused_sum + fused_d * count, input_sum + input_d * count, pixels + count
            per_step.append(fused_d / max(input_d, 1e-9))
    if not pixels:
        raise ValueError("no static pixels in the sequence: every pixel changes by 2 levels or more each step")
    fused, inputs = fused_sum / pixels, input_sum / pixels
    return {"fused": fused, "inputs": inputs, "ratio": fused / max(inputs, 1e-9), "ratio_min": min(per_step),
            "ratio_max": max(per_step), "static": float(np.mean(static)), "steps": float(len(frames) - 1)}
