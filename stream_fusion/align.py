"""Alignment check between pairing and fusion, and the calibration warp that registers a two-camera rig.

Real rigs have parallax, different lenses and drifting mounts; a misregistered pair ghosts every edge of the fused
frame. ``AlignmentMonitor.process`` measures each pair's residual shift (cheaply, on every Nth pair), turns it into a
status with hysteresis, and applies the stream's policy: ``warn`` only reports, ``correct`` shifts the IR by the
smoothed measured shift, ``drop`` skips misaligned pairs. ``load_calibration`` reads the fixed warp written by
``python -m stream_fusion.calibrate`` that maps the IR camera onto the visible camera's pixel grid.

How the shift is measured, and why: IR and visible intensities are unrelated (a hot road is bright in IR and dark in
the visible), but both sensors see the same *edges*, so we correlate gradient-magnitude maps. Plain phase correlation
(``cv2.phaseCorrelate``) whitens the spectrum completely, which lets the texture one sensor sees and the other does
not (foliage, sensor noise) vote as loudly as shared edges: on the 75 eval pairs it tracked injected shifts within
1 px on only 11 pairs. Partial whitening (cross-power spectrum divided by its magnitude to the power 0.3), a slight
blur and local contrast normalisation of the gradient maps track 65 of 75 (measured in docs/alignment.md); the rest
(smoke, night scenes with one sensor nearly blind) get a low confidence and status ``unknown`` instead of a guess.

This module must not import torch: it runs on deployment boxes.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from stream_fusion.config import load_yaml
from stream_fusion.engine import to_gray
from stream_fusion.errors import StreamFusionError

POLICIES = ("warn", "correct", "drop")
MODELS = ("affine", "homography")


@dataclass(frozen=True)
class Alignment:
    """Residual misalignment of one pair: IR shift (px) that would register it to the visible frame."""

    dx: float
    dy: float
    confidence: float
    status: str  # "ok" | "misaligned" | "unknown"
    measured: bool  # False when this pair was not measured (the check runs on every Nth pair)

    def as_dict(self) -> dict[str, float | str | bool]:
        return asdict(self)


def gradient_map(gray: np.ndarray, size: tuple[int, int], blur: float = 1.0, norm_sigma: float = 4.0) -> np.ndarray:
    """Edge-strength map of a frame at ``size`` (w, h), normalised by its local mean.

    The local normalisation makes a faint IR edge count as much as a strong visible one: the two sensors agree on
    where edges are, not on how strong they are.
    """
    small = cv2.resize(gray, size, interpolation=cv2.INTER_AREA).astype(np.float32)
    if blur > 0:
        small = cv2.GaussianBlur(small, (0, 0), blur)
    gx = cv2.Sobel(small, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(small, cv2.CV_32F, 0, 1, ksize=3)
    magnitude = cv2.magnitude(gx, gy)
    if norm_sigma > 0:
        magnitude /= cv2.GaussianBlur(magnitude, (0, 0), norm_sigma) + 0.5 * float(magnitude.mean()) + 1e-3
    return magnitude


def _subpixel(minus: float, centre: float, plus: float) -> float:
    """Parabola vertex through three samples around a peak: sub-pixel precision for a 160 px wide grid."""
    curvature = minus - 2.0 * centre + plus
    return 0.0 if curvature >= 0 else 0.5 * (minus - plus) / curvature


class ShiftEstimator:
    """Translation between the IR and visible frames of a pair, on a small grid (``width`` px wide).

    Keeps the window and the spectrum buffers of the last frame size, so a stream pays for them once.
    """

    def __init__(self, width: int = 160, whitening: float = 0.3) -> None:
        if width < 32:
            raise StreamFusionError(f"align.width must be at least 32 px, got {width}")
        self.width = width
        self.whitening = whitening
        self._size: tuple[int, int] | None = None
        self._window = np.empty(0, np.float32)

    def _grid(self, shape: tuple[int, int]) -> tuple[int, int]:
        h, w = shape
        width = min(self.width, w)
        size = (width, max(16, round(h * width / w)))
        if size != self._size:
            self._size = size
            self._window = cv2.createHanningWindow(size, cv2.CV_32F)
        return size

    def measure(self, ir: np.ndarray, vis: np.ndarray) -> tuple[float, float, float]:
        """``(dx, dy, confidence)``: the shift (full-resolution px) to apply to the IR to register it, and how much
        to trust it (normalised correlation of the registered gradient maps, 0..1)."""
        ir_gray, vis_gray = to_gray(ir), to_gray(vis)
        if ir_gray.shape != vis_gray.shape:
            raise ValueError(f"alignment check needs same-size frames, got IR {ir_gray.shape} and visible {vis_gray.shape}")
        size = self._grid(vis_gray.shape)
        a = gradient_map(vis_gray, size)
        b = gradient_map(ir_gray, size)
        a = (a - a.mean()) * self._window
        b = (b - b.mean()) * self._window
        spectrum = np.fft.rfft2(b) * np.conj(np.fft.rfft2(a))
        spectrum /= np.abs(spectrum) ** self.whitening + 1e-9
        surface = np.fft.irfft2(spectrum, s=a.shape)
        h, w = surface.shape
        iy, ix = np.unravel_index(int(np.argmax(surface)), surface.shape)
        sx = ix + _subpixel(surface[iy, (ix - 1) % w], surface[iy, ix], surface[iy, (ix + 1) % w])
        sy = iy + _subpixel(surface[(iy - 1) % h, ix], surface[iy, ix], surface[(iy + 1) % h, ix])
        sx = sx - w if sx > w / 2 else sx
        sy = sy - h if sy > h / 2 else sy
        confidence = _registered_correlation(a, b, sx, sy)
        scale = vis_gray.shape[1] / size[0]
        # The surface peaks at the IR content's displacement; registering it means moving it back.
        return -sx * scale, -sy * scale, confidence


def _registered_correlation(a: np.ndarray, b: np.ndarray, sx: float, sy: float) -> float:
    """Pearson correlation of the two windowed gradient maps once ``b`` is moved back by (sx, sy); 0 when negative."""
    moved = cv2.warpAffine(b, np.float32([[1, 0, -sx], [0, 1, -sy]]), (b.shape[1], b.shape[0]))
    a0, b0 = a - a.mean(), moved - moved.mean()
    denominator = float(np.sqrt((a0 * a0).sum() * (b0 * b0).sum()))
    return max(0.0, float((a0 * b0).sum()) / denominator) if denominator > 0 else 0.0


class AlignmentMonitor:
    """Per-stream alignment check with a policy: ``warn`` reports, ``correct`` shifts the IR, ``drop`` skips the pair.

    Status needs ``hysteresis`` consecutive agreeing measurements to change, so one bad frame (a person walking past,
    a flash) neither raises nor clears the alarm. A measurement is ``misaligned`` when its shift is at least
    ``threshold_px``, and ``unknown`` when its confidence is below ``min_confidence`` (a blank sky, smoke, a blind
    sensor: nothing to measure on). The IR shift applied under ``correct`` is an exponential moving average of the
    confident measurements (weight ``smoothing`` for the newest), so measurement noise does not shake the image.
    """

    def __init__(
        self,
        policy: str = "warn",
        every_n: int = 2,
        threshold_px: float = 2.0,
        min_confidence: float = 0.2,
        hysteresis: int = 3,
        smoothing: float = 0.3,
        width: int = 160,
    ) -> None:
        if policy not in POLICIES:
            raise StreamFusionError(f"align.policy must be one of {', '.join(POLICIES)}, got {policy!r}")
        if every_n < 1 or hysteresis < 1:
            raise StreamFusionError(f"align.every_n and align.hysteresis must be >= 1, got {every_n} and {hysteresis}")
        if not 0.0 < smoothing <= 1.0:
            raise StreamFusionError(f"align.smoothing must be in (0, 1], got {smoothing}")
        self.policy = policy
        self.every_n = every_n
        self.threshold_px = threshold_px
        self.min_confidence = min_confidence
        self.hysteresis = hysteresis
        self.smoothing = smoothing
        self.estimator = ShiftEstimator(width)
        self._count = 0
        self._last = Alignment(0.0, 0.0, 0.0, "unknown", False)
        self._status = "unknown"
        self._streak_verdict = ""
        self._streak = 0
        self._shift: tuple[float, float] | None = None  # smoothed (dx, dy) for policy "correct"

    @classmethod
    def from_config(cls, align_cfg: dict[str, Any]) -> AlignmentMonitor:
        """Build from the ``align:`` config section; ``calibration`` is the pipeline's (see ``load_calibration``)."""
        keys = ("policy", "every_n", "threshold_px", "min_confidence", "hysteresis", "smoothing", "width")
        return cls(**{key: align_cfg[key] for key in keys if key in align_cfg})

    @property
    def correction(self) -> tuple[float, float]:
        """The smoothed (dx, dy) that policy ``correct`` applies to the IR (0, 0 before any confident measurement)."""
        return self._shift or (0.0, 0.0)

    def _verdict(self, dx: float, dy: float, confidence: float) -> str:
        if confidence < self.min_confidence:
            return "unknown"
        return "misaligned" if np.hypot(dx, dy) >= self.threshold_px else "ok"

    def _update(self, dx: float, dy: float, confidence: float) -> str:
        verdict = self._verdict(dx, dy, confidence)
        self._streak = self._streak + 1 if verdict == self._streak_verdict else 1
        self._streak_verdict = verdict
        if self._streak >= self.hysteresis:
            self._status = verdict
        if verdict != "unknown":
            if self._shift is None:
                self._shift = (dx, dy)
            else:
                a = self.smoothing
                self._shift = (self._shift[0] + a * (dx - self._shift[0]), self._shift[1] + a * (dy - self._shift[1]))
        return self._status

    def process(self, ir: np.ndarray, vis: np.ndarray) -> tuple[np.ndarray | None, Alignment]:
        """The IR to fuse (None: drop this pair) and the alignment record."""
        if self._count % self.every_n == 0:
            dx, dy, confidence = self.estimator.measure(ir, vis)
            status = self._update(dx, dy, confidence)
            self._last = Alignment(round(float(dx), 2), round(float(dy), 2), round(float(confidence), 3), status, True)
            record = self._last
        else:
            record = Alignment(self._last.dx, self._last.dy, self._last.confidence, self._last.status, False)
        self._count += 1
        if self.policy == "drop" and record.status == "misaligned":
            return None, record
        if self.policy == "correct":
            return shift_image(ir, *self.correction), record
        return ir, record


def shift_image(image: np.ndarray, dx: float, dy: float, min_shift: float = 0.25) -> np.ndarray:
    """``image`` moved by (dx, dy) px, edges replicated; unchanged (not resampled) below ``min_shift`` px."""
    if np.hypot(dx, dy) < min_shift:
        return image
    h, w = image.shape[:2]
    matrix = np.float32([[1, 0, dx], [0, 1, dy]])
    return cv2.warpAffine(image, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
