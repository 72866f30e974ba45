"""Photometric and geometric augmentation that imitates what real camera pairs do and the 205 training pairs show
too rarely (issue 15, 4b). Each transform works on one aligned crop pair, float32 in 0..1 (IR H x W, visible H x W
or H x W x 3 BGR), takes its random numbers from the caller's generator (so a resumed run repeats its data), and is
applied with the probability its config key gives (``augment:`` in the training YAML; 0 switches it off, and the
shipped recipe before issue 15 had them all off):

- ``day_ir``: a daytime thermal camera: the IR frame darkened and flattened (low gain, low offset), the visible frame
  bright. Where the training data had bright IR, the network learned to average; by day that dims the scene.
- ``night_vis``: an underexposed visible camera at night: dark, with the sensor noise that the camera's gain lifts.
- ``glare``: a headlight or street lamp in the visible frame, a saturated blob with a soft halo.
- ``gain_gamma``: auto-exposure and gamma differences, drawn per source.
- ``misregister``: a small residual misregistration (up to ``MAX_SHIFT`` pixels and half a degree) of the IR frame,
  what a calibration leaves at other depths.
- ``colour_cast``: a white-balance cast (per-channel gains) of a colour visible frame (the colour network).
"""
from __future__ import annotations

from typing import Any

import cv2
import numpy as np

MAX_SHIFT = 2.0  # pixels of residual IR misregistration
KEYS = ("day_ir", "night_vis", "glare", "gain_gamma", "misregister", "colour_cast")
DEFAULTS = dict.fromkeys(KEYS, 0.0)


# day_ir's ranges: IR gain and new mean, visible gamma (the validation's fixed copies take their mildest ends).
DAY_IR_GAIN, DAY_IR_MEAN, DAY_IR_GAMMA = (0.15, 0.5), (0.1, 0.3), (0.6, 0.9)


def dark_flat_ir(ir: np.ndarray, vis: np.ndarray, gain: float, mean: float,
                 gamma: float) -> tuple[np.ndarray, np.ndarray]:
    """``day_ir`` at given settings (frames 0..1): IR contrast times ``gain`` around a new ``mean``; visible ** gamma."""
    ir = (ir - float(ir.mean())) * gain + mean
    return np.clip(ir, 0, 1), np.power(np.clip(vis, 0, 1), gamma)


def day_ir(ir: np.ndarray, vis: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """IR to a dark, low-contrast frame (gain 0.15-0.5 around a mean of 0.1-0.3); visible brightened (gamma 0.6-0.9)."""
    return dark_flat_ir(ir, vis, rng.uniform(*DAY_IR_GAIN), rng.uniform(*DAY_IR_MEAN), rng.uniform(*DAY_IR_GAMMA))


def night_vis(ir: np.ndarray, vis: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Visible frame at 15-50 % of its exposure plus gain noise (sigma 1-4 % of full scale), re-quantised."""
    dark = vis * rng.uniform(0.15, 0.5) + rng.normal(0.0, rng.uniform(0.01, 0.04), vis.shape)
    return ir, np.round(np.clip(dark, 0, 1) * 255.0) / 255.0


def glare(ir: np.ndarray, vis: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A lamp in the visible frame: a Gaussian blob (radius 3-15 % of the crop) that saturates at its core."""
    h, w = vis.shape[:2]
    cy, cx = rng.uniform(0, h), rng.uniform(0, w)
    sigma = rng.uniform(0.03, 0.15) * max(h, w)
    yy, xx = np.mgrid[0:h, 0:w]
    blob = rng.uniform(0.7, 1.5) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2))
    if vis.ndim == 3:
        blob = blob[:, :, None]
    return ir, np.clip(vis + blob.astype(np.float32), 0, 1)


def gain_gamma(ir: np.ndarray, vis: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Each source its own gain (0.7-1.3) and gamma (0.7-1.4)."""
    out = []
    for x in (ir, vis):
        out.append(np.clip(np.power(np.clip(x, 0, 1), rng.uniform(0.7, 1.4)) * rng.uniform(0.7, 1.3), 0, 1))
    return out[0], out[1]


def misregister(ir: np.ndarray, vis: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The IR frame shifted by up to :data:`MAX_SHIFT` pixels and rotated by up to 0.5 degree (reflected border)."""
    h, w = ir.shape
    matrix = cv2.getRotationMatrix2D((w / 2, h / 2), rng.uniform(-0.5, 0.5), 1.0)
    matrix[:, 2] += rng.uniform(-MAX_SHIFT, MAX_SHIFT, 2)
    moved = cv2.warpAffine(ir, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    return moved, vis


def colour_cast(ir: np.ndarray, vis: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel gains 0.85-1.15 on a colour visible frame (a gray one is returned as it is)."""
    if vis.ndim != 3:
        return ir, vis
    return ir, np.clip(vis * rng.uniform(0.85, 1.15, 3).astype(np.float32), 0, 1)


TRANSFORMS = {"day_ir": day_ir, "night_vis": night_vis, "glare": glare, "gain_gamma": gain_gamma,
              "misregister": misregister, "colour_cast": colour_cast}


def check(config: dict[str, Any] | None) -> dict[str, float]:
    """The probabilities, every key known and in [0, 1] (a typo must not silently switch a transform off)."""
    config = dict(config or {})
    unknown = sorted(set(config) - set(KEYS))
    if unknown:
        raise ValueError(f"unknown augment key '{unknown[0]}' (known: {', '.join(KEYS)})")
    probabilities = {**DEFAULTS, **{k: float(v) for k, v in config.items()}}
    bad = [k for k, p in probabilities.items() if not 0.0 <= p <= 1.0]
    if bad:
        raise ValueError(f"augment.{bad[0]} must be a probability in [0, 1], got {probabilities[bad[0]]}")
    return probabilities


def augment(ir: np.ndarray, vis: np.ndarray, probabilities: dict[str, float],
            rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Apply each transform with its probability, in a fixed order (scene first, then camera, then registration);
    ``day_ir`` and ``night_vis`` exclude each other (a frame is not day and night at once)."""
    ir, vis = ir.astype(np.float32), vis.astype(np.float32)
    draws = {k: rng.random() for k in KEYS}  # always draw all: the random stream does not depend on the settings
    daytime = draws["day_ir"] < probabilities["day_ir"]
    for key in KEYS:
        if key == "night_vis" and daytime:
            continue
        if draws[key] < probabilities[key]:
            ir, vis = TRANSFORMS[key](ir, vis, rng)
    return ir.astype(np.float32), vis.astype(np.float32)
