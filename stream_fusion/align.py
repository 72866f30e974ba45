"""Alignment check between pairing and fusion, and the calibration warp that registers a two-camera rig.

Real rigs have parallax, different lenses and drifting mounts; a misregistered pair ghosts every edge of the fused
frame. ``AlignmentMonitor.process`` measures each pair's residual shift (cheaply, on every Nth pair), turns it into a
status with hysteresis, and applies the stream's policy: ``warn`` only reports, ``correct`` shifts the IR by the
smoothed measured shift, ``drop`` skips misaligned pairs. ``load_calibration`` reads the fixed warp written by
``python -m stream_fusion.calibrate`` that maps the IR camera onto the visible camera's pixel grid. Neither warps
the IR frame that is fused: the calibration and the correction are composed into one :class:`IrWarp` that the
fusion engine applies once, on the GPU when it runs there (``stream_fusion.warp``).

How the shift is measured, and why: IR and visible intensities are unrelated (a hot road is bright in IR and dark in
the visible), but both sensors see the same *edges*, so we correlate gradient-magnitude maps. Plain phase correlation
(``cv2.phaseCorrelate``) whitens the spectrum completely, which lets the texture one sensor sees and the other does
not (foliage, sensor noise) vote as loudly as shared edges: the measured shift followed injected shifts within 1 px
on 26 of the 75 eval pairs. Partial whitening (cross-power spectrum divided by its magnitude to the power 0.3), a
slight blur and local contrast normalisation of the gradient maps follow them on 67 of 75 (docs/alignment.md); the
rest (smoke, night scenes with one sensor nearly blind) mostly get a low confidence and status ``unknown``.

Phase correlation on a 192 px grid finds the shift robustly but only to ~1 px of the frame; the peak's position there
is where the two sensors' edges agree on average at that coarse scale, which is not where they agree at finer
scales. A few Gauss-Newton (Lucas-Kanade) steps on gradient maps at 320 px, started from the coarse estimate,
bring the shift within 0.15 px of an affine ECC calibration (median over 70 eval pairs) for little more cost
(docs/alignment.md has both).

This module must not import torch: it runs on deployment boxes.
"""
from __future__ import annotations

import collections
import dataclasses
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

import cv2
import numpy as np

from stream_fusion.config import load_yaml
from stream_fusion.engine.frames import to_gray
from stream_fusion.errors import StreamFusionError
from stream_fusion.evaluate.metrics import correlation
from stream_fusion.warp import IrWarp, scale_matrix

POLICIES = ("warn", "correct", "drop")
MODELS = ("affine", "homography")
REFINE_WIDTH = 320  # grid the coarse shift is refined on: 256 px agreed with calibration half as often (docs)
REFINE_STEPS = 6  # Gauss-Newton steps at most; most pairs converge (step < 0.01 px) in 3-5
CORRECT_FROM_PX = 1.0  # policy "correct" shifts the IR once the smoothed shift reaches this (and is not "unknown")
MIN_COVERAGE = 0.1  # a calibration whose IR view covers less of the visible frame is for another rig (or broken)
MAX_SIDE = 32767  # OpenCV's warps take frame sides up to SHRT_MAX; a larger size in a calibration is corrupt
VIEW_CROP = 0.9  # a calibrated IR view covering less of the frame than this is measured on its bounding box alone
VIEW_MARGIN = 2  # px (at the check's resolution) the box keeps clear of the view's black edge
REFINE_BAND = 0.03  # share of the grid width left out at each border: border pixels have half a Sobel/blur window


@dataclass(frozen=True)
class Alignment:
    """Residual misalignment of one pair: IR shift (px) that would register it to the visible frame (``dx``, ``dy``,
    ``confidence``: this pair's measurement), and the stream's state: ``status``, decided on ``shift``, the median of
    the recent confident measurements, against ``threshold_px`` (so the state and the shift it shows always agree)."""

    dx: float
    dy: float
    confidence: float
    status: str  # "ok" | "misaligned" | "unknown"
    measured: bool  # False when this pair was not measured (the check runs on every Nth pair)
    shift: tuple[float, float] | None = None  # what ``status`` was decided on; None while it is "unknown"
    threshold_px: float = 2.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def label(self) -> str:
        """The state in a few words with the shift and threshold it was decided on, for the HUD."""
        if self.shift is None:
            return "unknown: too few edges both cameras see"
        sign = ">=" if self.status == "misaligned" else "<"
        return f"{self.status} ({self.shift[0]:+.1f}, {self.shift[1]:+.1f}) px {sign} {self.threshold_px:g} px"


def gradient_map(gray: np.ndarray, size: tuple[int, int], blur: float = 1.0, norm_sigma: float = 4.0) -> np.ndarray:
    """Edge-strength map of a frame at ``size`` (w, h), normalised by its local mean.

    The local normalisation makes a faint IR edge count as much as a strong visible one: the two sensors agree on
    where edges are, not on how strong they are.
    """
    small = cv2.resize(_reduce(gray, size), size, interpolation=cv2.INTER_AREA).astype(np.float32)
    if blur > 0:
        small = cv2.GaussianBlur(small, (0, 0), blur)
    gx = cv2.Sobel(small, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(small, cv2.CV_32F, 0, 1, ksize=3)
    magnitude = cv2.magnitude(gx, gy)
    if norm_sigma > 0:
        side = 2 * round(2 * norm_sigma) + 1  # a box as wide as a Gaussian's +-2 sigma: same effect, a third the cost
        magnitude /= cv2.blur(magnitude, (side, side)) + 0.5 * float(magnitude.mean()) + 1e-3
    return magnitude


def _subpixel(minus: float, centre: float, plus: float) -> float:
    """Parabola vertex through three samples around a peak: sub-pixel precision on a small grid."""
    curvature = minus - 2.0 * centre + plus
    return 0.0 if curvature >= 0 else 0.5 * (minus - plus) / curvature


class ShiftEstimator:
    """Translation between the IR and visible frames of a pair: found on a small grid (``width`` px wide) by phase
    correlation, then refined to sub-pixel precision on a finer one (``refine_width``) by Gauss-Newton steps.

    Keeps the Hanning window of the last grid size, so a stream computes it once.
    """

    def __init__(self, width: int = 192, whitening: float = 0.3, refine_width: int = REFINE_WIDTH) -> None:
        if width < 32:
            raise StreamFusionError(f"align.width must be at least 32 px, got {width}")
        self.width = width
        self.whitening = whitening
        self.refine_width = refine_width  # 0 (or <= width): coarse phase correlation only
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
        fine = self._fine_grid(vis_gray.shape)
        full = vis_gray.shape
        # Halve once for both grids: gradient_map would halve the full frames again for each.
        ir_gray, vis_gray = _reduce(ir_gray, fine or size), _reduce(vis_gray, fine or size)
        a = gradient_map(vis_gray, size)
        b = gradient_map(ir_gray, size)
        a = (a - a.mean()) * self._window
        b = (b - b.mean()) * self._window
        # Zero-padding to sizes with small prime factors keeps the FFTs cheap for any frame aspect ratio.
        padded = (cv2.getOptimalDFTSize(a.shape[0]), cv2.getOptimalDFTSize(a.shape[1]))
        fa = cv2.dft(_pad(a, padded), flags=cv2.DFT_COMPLEX_OUTPUT)
        fb = cv2.dft(_pad(b, padded), flags=cv2.DFT_COMPLEX_OUTPUT)
        spectrum = cv2.mulSpectrums(fb, fa, 0, conjB=True)
        magnitude = cv2.magnitude(spectrum[..., 0], spectrum[..., 1])
        spectrum /= (magnitude ** self.whitening + 1e-9)[..., None]
        surface = cv2.idft(spectrum, flags=cv2.DFT_REAL_OUTPUT)
        h, w = surface.shape
        iy, ix = np.unravel_index(int(np.argmax(surface)), surface.shape)
        sx = ix + _subpixel(surface[iy, (ix - 1) % w], surface[iy, ix], surface[iy, (ix + 1) % w])
        sy = iy + _subpixel(surface[(iy - 1) % h, ix], surface[iy, ix], surface[(iy + 1) % h, ix])
        sx = sx - w if sx > w / 2 else sx
        sy = sy - h if sy > h / 2 else sy
        confidence = _registered_correlation(a, b, sx, sy)
        # The surface peaks at the IR content's displacement; registering it means moving it back.
        dx, dy = -float(sx) * full[1] / size[0], -float(sy) * full[0] / size[1]
        if fine is not None:
            dx, dy = self._refine(ir_gray, vis_gray, fine, full, dx, dy) or (dx, dy)
        return dx, dy, confidence

    def measure_warped(self, ir: np.ndarray, vis: np.ndarray, warp: IrWarp) -> tuple[float, float, float]:
        """:meth:`measure` of the IR registered by ``warp`` (a calibration), warping at the resolution the shift is
        measured at, not the frame's: both frames are first halved as :meth:`measure` halves them, and the IR is
        resampled onto the halved visible grid: at 640x512 a 320x256 warp instead of a full one, a fraction of its
        cost (docs/alignment.md)."""
        vis_gray = to_gray(vis)
        full = vis_gray.shape
        small_vis = _reduce(vis_gray, self._fine_grid(full) or self._grid(full))
        (sh, sw), (ih, iw) = small_vis.shape, warp.ir_size[::-1]
        small_ir = _reduce(to_gray(ir), (round(sw * iw / full[1]), round(sh * ih / full[0])))
        to_small = scale_matrix(sw / full[1], sh / full[0])
        from_small_ir = np.linalg.inv(scale_matrix(small_ir.shape[1] / iw, small_ir.shape[0] / ih))
        small = IrWarp(to_small @ warp.matrix @ from_small_ir, (small_ir.shape[1], small_ir.shape[0]), (sw, sh),
                       warp.replicate)
        registered = small.apply(small_ir)
        # A narrower IR lens sees part of the frame: measured on the whole, the black surround dilutes the edge
        # correlation to "unknown" (a 4:3 IR seeing 35 % of the demo clip read unknown on all 32 frames). Measure
        # where it sees; the shift is the same in the crop's pixels.
        x0, y0, x1, y1 = small.view_box(VIEW_MARGIN)
        if (x1 - x0) * (y1 - y0) < VIEW_CROP * sw * sh and min(x1 - x0, y1 - y0) >= 32:
            registered, small_vis = registered[y0:y1, x0:x1], small_vis[y0:y1, x0:x1]
        dx, dy, confidence = self.measure(registered, small_vis)
        return dx * full[1] / sw, dy * full[0] / sh, confidence

    def _fine_grid(self, shape: tuple[int, int]) -> tuple[int, int] | None:
        """The refinement grid (w, h) for frames of ``shape``; None where it would be no finer than the coarse one."""
        h, w = shape
        width = min(self.refine_width, w)
        return (width, round(h * width / w)) if width > self.width else None

    def _refine(
        self, ir_gray: np.ndarray, vis_gray: np.ndarray, size: tuple[int, int], full: tuple[int, int], dx: float, dy: float
    ) -> tuple[float, float] | None:
        """The coarse shift (full-frame px) refined on the grid ``size``; None where the refinement fails or leaves
        the coarse estimate's basin (more than one coarse grid cell away: then trust the robust coarse estimate)."""
        scale_x, scale_y = full[1] / size[0], full[0] / size[1]
        found = refine_shift(
            gradient_map(vis_gray, size), gradient_map(ir_gray, size), (dx / scale_x, dy / scale_y),
            max(2, round(REFINE_BAND * size[0])),
        )
        if found is None or math.hypot(found[0] * scale_x - dx, found[1] * scale_y - dy) > full[1] / self.width:
            return None
        return found[0] * scale_x, found[1] * scale_y


def refine_shift(
    fixed: np.ndarray, moving: np.ndarray, start: tuple[float, float], band: int
) -> tuple[float, float] | None:
    """Shift (dx, dy) with ``fixed(x) ~ moving(x - d)``, by inverse-compositional Lucas-Kanade from ``start``.

    Why this and not ``cv2.findTransformECC``: the same least squares on zero-mean maps with ECC's gain (so a gain
    between the sensors' edge strengths does not matter), but the template's gradients and Hessian are computed once
    and each step is one sub-pixel crop of the moving map and four dot products, where an ECC iteration re-warps
    the image and its gradients (docs/alignment.md has the costs of both).
    The template is the part of ``fixed`` (less ``band`` px at each border) whose partner stays inside ``moving``;
    None when that is under a third of the frame either way, or the system is singular (no structure).
    """
    h, w = fixed.shape
    x0, x1 = max(band, math.ceil(start[0]) + band), min(w - band, math.floor(w - 1 + start[0]) - band)
    y0, y1 = max(band, math.ceil(start[1]) + band), min(h - band, math.floor(h - 1 + start[1]) - band)
    if x1 - x0 < w // 3 or y1 - y0 < h // 3:
        return None
    # Gradients over the rectangle grown by one px, so the template keeps full Sobel support.
    grown = fixed[y0 - 1:y1 + 1, x0 - 1:x1 + 1]
    tx = cv2.Sobel(grown, cv2.CV_32F, 1, 0, ksize=3, scale=0.125)[1:-1, 1:-1].ravel()
    ty = cv2.Sobel(grown, cv2.CV_32F, 0, 1, ksize=3, scale=0.125)[1:-1, 1:-1].ravel()
    template = fixed[y0:y1, x0:x1].ravel()
    template = template - float(template.mean())
    txy = float(np.dot(tx, ty))
    hessian = np.array([[float(np.dot(tx, tx)), txy], [txy, float(np.dot(ty, ty))]])
    if np.linalg.det(hessian) <= 1e-9 * hessian.trace() ** 2:
        return None
    inverse = np.linalg.inv(hessian)
    # Each step solves for the residual gain * sample - template with the sample zero-meaned and the gain that makes
    # its projection onto the template equal the template (ECC's choice). A plain norm-matched gain would shrink every
    # step by the pair's correlation (0.2-0.7 across sensors), converging in tens of steps instead of a few. Expanded
    # into dot products with the raw sample, so a step allocates nothing but the crop.
    energy = float(np.dot(template, template))
    sums = np.array([float(tx.sum()), float(ty.sum())])
    template_terms = np.array([float(np.dot(tx, template)), float(np.dot(ty, template))])
    size = (x1 - x0, y1 - y0)
    centre = (x0 + (size[0] - 1) / 2, y0 + (size[1] - 1) / 2)
    p = np.array([-start[0], -start[1]])  # where the template's pixels sit in ``moving``, relative to themselves
    for _ in range(REFINE_STEPS):
        sample = cv2.getRectSubPix(moving, size, (centre[0] + p[0], centre[1] + p[1])).ravel()
        agreement = float(np.dot(template, sample))  # the template is zero-mean: the sample's mean drops out
        if agreement <= 0:
            return None
        mean = float(sample.sum()) / sample.size
        sample_terms = np.array([float(np.dot(tx, sample)), float(np.dot(ty, sample))]) - mean * sums
        step = inverse @ (sample_terms * (energy / agreement) - template_terms)
        p -= np.clip(step, -1.0, 1.0)  # at most 1 px a step: far from the optimum the linear model overshoots
        if abs(step[0]) + abs(step[1]) < 0.01:
            break
    return float(-p[0]), float(-p[1])


def _reduce(gray: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``gray`` halved while it stays at least twice ``size`` (w, h): anti-aliased, and several times cheaper than one
    INTER_AREA resize over the whole way."""
    while gray.shape[1] >= 2 * size[0] and gray.shape[0] >= 2 * size[1]:
        gray = cv2.pyrDown(gray)
    return gray


def _pad(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    return cv2.copyMakeBorder(image, 0, shape[0] - image.shape[0], 0, shape[1] - image.shape[1], cv2.BORDER_CONSTANT)


def _registered_correlation(a: np.ndarray, b: np.ndarray, sx: float, sy: float) -> float:
    """Pearson correlation of the two windowed gradient maps once ``b`` is moved back by (sx, sy); 0 when negative."""
    moved = cv2.warpAffine(b, np.float32([[1, 0, -sx], [0, 1, -sy]]), (b.shape[1], b.shape[0]))
    return max(0.0, correlation(a, moved))


class AlignmentMonitor:
    """Per-stream alignment check with a policy: ``warn`` reports, ``correct`` shifts the IR, ``drop`` skips the pair.

    The status is decided on the last ``2 * hysteresis - 1`` measurements: ``unknown`` while fewer than
    ``hysteresis`` of them are confident (confidence at least ``min_confidence``: a blank sky, smoke, a blind sensor
    leave nothing to measure on), else ``misaligned`` when the median of the confident shifts is at least
    ``threshold_px`` and ``ok`` below it. So ``hysteresis`` measurements change it, one bad frame (a person walking
    past, a flash) neither raises nor clears the alarm, and the shift the state is reported with is the one it was
    decided on (a stream starts ``unknown``). Under ``correct``, while the status is not ``unknown`` and the shift reaches
    ``CORRECT_FROM_PX``, the IR is shifted by an exponential moving average of the confident measurements (weight
    ``smoothing`` for the newest), so measurement noise does not shake the image. The record always describes the
    incoming pair, before any correction.
    """

    def __init__(
        self,
        policy: str = "warn",
        every_n: int = 2,
        threshold_px: float = 2.0,
        min_confidence: float = 0.13,
        hysteresis: int = 3,
        smoothing: float = 0.3,
        width: int = 192,
        refine_width: int = REFINE_WIDTH,
    ) -> None:
        if policy not in POLICIES:
            raise StreamFusionError(f"align.policy must be one of {', '.join(POLICIES)}, got {policy!r}")
        if every_n < 1 or hysteresis < 1:
            raise StreamFusionError(f"align.every_n and align.hysteresis must be >= 1, got {every_n} and {hysteresis}")
        if not 0.0 < smoothing <= 1.0:
            raise StreamFusionError(f"align.smoothing must be in (0, 1], got {smoothing}")
        if width < 16 or refine_width < 0:
            raise StreamFusionError(f"align.width must be >= 16 and align.refine_width >= 0, got {width} and {refine_width}")
        self.policy = policy
        self.every_n = every_n
        self.threshold_px = threshold_px
        self.min_confidence = min_confidence
        self.hysteresis = hysteresis
        self.smoothing = smoothing
        self.estimator = ShiftEstimator(width, refine_width=refine_width)
        self._count = 0
        self._last = Alignment(0.0, 0.0, 0.0, "unknown", False, None, threshold_px)
        self._status = "unknown"
        self._state_shift: tuple[float, float] | None = None  # the median the status was decided on
        self._recent: collections.deque[tuple[float, float] | None] = collections.deque(maxlen=2 * hysteresis - 1)
        self._shift: tuple[float, float] | None = None  # smoothed (dx, dy) for policy "correct"

    @classmethod
    def from_config(cls, align_cfg: dict[str, Any]) -> AlignmentMonitor:
        """Build from the ``align:`` config section; ``calibration`` is the pipeline's (see ``load_calibration``)."""
        keys = ("policy", "every_n", "threshold_px", "min_confidence", "hysteresis", "smoothing", "width", "refine_width")
        return cls(**{key: align_cfg[key] for key in keys if key in align_cfg})

    @property
    def correction(self) -> tuple[float, float]:
        """The smoothed (dx, dy) that policy ``correct`` applies to the IR (0, 0 before any confident measurement)."""
        return (float(self._shift[0]), float(self._shift[1])) if self._shift else (0.0, 0.0)

    def _update(self, dx: float, dy: float, confidence: float) -> str:
        confident = confidence >= self.min_confidence
        self._recent.append((dx, dy) if confident else None)
        shifts = [shift for shift in self._recent if shift is not None]
        if len(shifts) >= self.hysteresis:  # a majority of the window measured: decide on its median
            median = np.median(np.array(shifts), axis=0)
            self._state_shift = (round(float(median[0]), 2), round(float(median[1]), 2))
            self._status = "misaligned" if math.hypot(*self._state_shift) >= self.threshold_px else "ok"
        elif len(self._recent) - len(shifts) >= self.hysteresis:  # a majority with nothing to measure on
            self._status, self._state_shift = "unknown", None
        if confident:
            if self._shift is None:
                self._shift = (dx, dy)
            else:
                a = self.smoothing
                self._shift = (self._shift[0] + a * (dx - self._shift[0]), self._shift[1] + a * (dy - self._shift[1]))
        return self._status

    def process(self, ir: np.ndarray, vis: np.ndarray, warp: IrWarp | None = None) -> Verdict:
        """Whether to fuse this pair, the warp to fuse its IR with, and the alignment record. ``warp``: the one that
        brings ``ir`` onto the visible grid (a calibration), None when it is there already. The check measures the
        IR so warped (resampled here on the host at the check's own resolution, on measured pairs only); the returned
        warp is ``warp`` followed by the policy's correction, for the engine to apply in one resampling."""
        if self._count % self.every_n == 0:
            if warp is None:
                dx, dy, confidence = self.estimator.measure(ir, vis)
            else:
                dx, dy, confidence = self.estimator.measure_warped(ir, vis, warp)
            status = self._update(dx, dy, confidence)
            self._last = Alignment(round(float(dx), 2), round(float(dy), 2), round(float(confidence), 3), status, True,
                                   self._state_shift, self.threshold_px)
            record = self._last
        else:
            record = dataclasses.replace(self._last, measured=False)
        self._count += 1
        if self.policy == "drop" and record.status == "misaligned":
            return Verdict(False, warp, record)
        if self.policy == "correct" and record.status != "unknown" and math.hypot(*self.correction) >= CORRECT_FROM_PX:
            # Also below the alarm threshold: a 1-2 px offset already costs a fifth of Qabf (docs/alignment.md), and the
            # refined estimate is good to ~0.2 px. Not below 1 px: resampling blurs, and there the estimate's own
            # error on cross-modal pairs is as large as the offset.
            base = warp or IrWarp.resize((ir.shape[1], ir.shape[0]), (vis.shape[1], vis.shape[0]))
            return Verdict(True, base.shifted(*self.correction), record)
        return Verdict(True, warp, record)


class Verdict(NamedTuple):
    """What :meth:`AlignmentMonitor.process` decided for one pair."""

    fuse: bool  # False: policy ``drop`` skips this misaligned pair
    warp: IrWarp | None  # brings the IR onto the visible grid, correction included; None: it is there already
    alignment: Alignment


def shift_image(image: np.ndarray, dx: float, dy: float, min_shift: float = 0.25) -> np.ndarray:
    """``image`` moved by (dx, dy) px, edges replicated; unchanged (not resampled) below ``min_shift`` px."""
    if np.hypot(dx, dy) < min_shift:
        return image
    h, w = image.shape[:2]
    matrix = np.float32([[1, 0, dx], [0, 1, dy]])
    return cv2.warpAffine(image, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


@dataclass(frozen=True)
class Calibration:
    """A rig's fixed IR -> visible warp: ``matrix`` (3x3) maps IR pixel coordinates to visible pixel coordinates,
    for frames of ``ir_size`` and ``vis_size`` (w, h) as calibrated."""

    model: str  # "affine" | "homography"
    matrix: np.ndarray
    ir_size: tuple[int, int]
    vis_size: tuple[int, int]
    residual_px: float
    correlation: float

    def warp(self, ir_size: tuple[int, int], size: tuple[int, int]) -> IrWarp:
        """The warp of ``ir_size`` (w, h) IR frames onto the visible grid of ``size`` (w, h); areas the IR camera
        does not see are black in :meth:`IrWarp.apply` (the fusion shows the visible frame there).

        Frames of another size than calibrated (a camera switched to a lower mode, a pipeline that resized first)
        are handled by scaling the warp, since the lenses, not the pixel counts, fix the geometry.
        """
        into = scale_matrix(ir_size[0] / self.ir_size[0], ir_size[1] / self.ir_size[1])
        out = scale_matrix(size[0] / self.vis_size[0], size[1] / self.vis_size[1])
        matrix = out @ self.matrix @ np.linalg.inv(into)
        if self.model == "affine":
            matrix[2] = (0, 0, 1)  # exactly, so the host warp takes OpenCV's affine path
        return IrWarp(matrix, ir_size, size)

    def apply(self, ir: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        """The IR frame warped onto the visible grid of ``size`` (w, h) on the host (see :meth:`warp`)."""
        return self.warp((ir.shape[1], ir.shape[0]), size).apply(ir)

    def coverage(self, samples: int = 64) -> float:
        """Share of the visible frame (0..1) the IR camera sees through this warp, on a grid of ``samples`` x
        ``samples`` points: each is mapped back into the IR frame, so a homography's far side (points that would
        lie behind the camera) counts as unseen too. Independent of the frame sizes the warp is scaled to."""
        (w, h), (iw, ih) = self.vis_size, self.ir_size
        xs, ys = np.meshgrid((np.arange(samples) + 0.5) * w / samples, (np.arange(samples) + 0.5) * h / samples)
        points = np.linalg.inv(self.matrix) @ np.stack([xs.ravel(), ys.ravel(), np.ones(xs.size)])
        ahead = points[2] > 1e-12
        x, y = points[0] / np.where(ahead, points[2], 1.0), points[1] / np.where(ahead, points[2], 1.0)
        return float(np.mean(ahead & (x >= 0) & (x <= iw) & (y >= 0) & (y <= ih)))


def load_calibration(path: str | Path) -> Calibration:
    """Read a calibration YAML written by ``python -m stream_fusion.calibrate``, with one-line errors."""
    data = load_yaml(path, "calibration")
    try:
        model = data["model"]
        matrix = np.array(data["matrix"], np.float64)
        ir_size = (int(data["ir_size"][0]), int(data["ir_size"][1]))
        vis_size = (int(data["vis_size"][0]), int(data["vis_size"][1]))
        residual = float(data.get("residual_px", 0.0))
        correlation = float(data.get("correlation", 0.0))
    except (KeyError, TypeError, ValueError, IndexError, OverflowError) as error:  # OverflowError: .inf, 1e400
        raise StreamFusionError(
            f"malformed calibration {path}: needs model, matrix, ir_size [w, h], vis_size [w, h] ({error})"
        ) from None
    if model not in MODELS:
        raise StreamFusionError(f"malformed calibration {path}: model must be one of {', '.join(MODELS)}, got {model!r}")
    expected = (3, 3) if model == "homography" else (2, 3)
    if matrix.shape != expected or not np.isfinite(matrix).all():
        raise StreamFusionError(f"malformed calibration {path}: a {model} matrix is {expected[0]}x{expected[1]} numbers")
    if model == "affine":
        matrix = np.vstack([matrix, [0, 0, 1]])
    if abs(np.linalg.det(matrix)) < 1e-9 or min(ir_size + vis_size) < 1 or max(ir_size + vis_size) > MAX_SIDE:
        raise StreamFusionError(f"malformed calibration {path}: the matrix is singular or a size is not 1-{MAX_SIDE} px")
    calibration = Calibration(model, matrix, ir_size, vis_size, residual, correlation)
    seen = calibration.coverage()
    if seen < MIN_COVERAGE:
        raise StreamFusionError(
            f"calibration {path} puts the IR view on {seen:.0%} of the visible frame (at least {MIN_COVERAGE:.0%} "
            "expected): it is for another rig or its matrix is wrong; calibrate again with python -m "
            "stream_fusion.calibrate"
        )
    return calibration
