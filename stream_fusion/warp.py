"""The one resampling that brings a raw IR frame onto the visible frame's grid.

A rig's calibration (a fixed IR -> visible warp) and the ``correct`` policy's live shift are composed into one
:class:`IrWarp` and the IR is resampled once, not once per step (two bilinear passes blur twice). Where the warp runs
is the fusion engine's choice: on the host with OpenCV (:meth:`IrWarp.apply`), or inside the ONNX Runtime session,
on the GPU under TensorRT or CUDA, as a ``GridSample`` fed by :meth:`IrWarp.session_inputs` (a 3x3 matrix and two
coordinate rows: bytes, not a per-pixel grid, cross the bus).

Where the IR camera does not see (a narrower lens, the strip a calibration or a shift moves in from outside its
frame) there is no thermal information, so the fused frame shows the visible frame there, faded in over
``FEATHER_PX``: :func:`fuse_registered` on the host, the same weights in the session.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Protocol

import cv2
import numpy as np

log = logging.getLogger(__name__)

# IR pixels beyond the edge of the IR camera's view over which the fused frame fades to the visible frame: a hard
# cut would be an edge of its own.
FEATHER_PX = 8.0


def scale_matrix(sx: float, sy: float) -> np.ndarray:
    """3x3 pixel-coordinate map of a resize by (sx, sy), pixel centres aligned as ``cv2.resize`` aligns them."""
    return np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5], [0, 0, 1]], np.float64)


def resize_onto(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``image`` resized to ``size`` (w, h), for an IR frame with no calibration (the fields of view assumed to
    match): area averaging where it shrinks (bilinear would alias the thermal texture), bilinear where it grows."""
    if image.shape[1::-1] == tuple(size):
        return image
    shrink = size[0] * size[1] < image.shape[0] * image.shape[1]
    return cv2.resize(image, tuple(size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def translation(dx: float, dy: float) -> np.ndarray:
    """3x3 map moving every point by (dx, dy) px."""
    return np.array([[1, 0, dx], [0, 1, dy], [0, 0, 1]], np.float64)


@dataclass(frozen=True, eq=False)
class IrWarp:
    """``matrix`` (3x3) maps IR pixel coordinates of an ``ir_size`` (w, h) frame to pixel coordinates of the visible
    grid of ``size`` (w, h). Where the IR has no pixel :meth:`apply` gives black (what a person looking at the IR,
    and the alignment check, should see: where its view ends), or with ``replicate`` the nearest edge pixel. The
    fusion always replicates (:func:`fuse_registered`): a black surround would be a fake edge it fuses in."""

    matrix: np.ndarray
    ir_size: tuple[int, int]
    size: tuple[int, int]
    replicate: bool = False

    @classmethod
    def resize(cls, ir_size: tuple[int, int], size: tuple[int, int]) -> IrWarp:
        """The plain resize of the IR frame onto the visible grid (the identity where the sizes match), edges
        replicated: what a live shift is composed with when there is no calibration."""
        matrix = scale_matrix(size[0] / ir_size[0], size[1] / ir_size[1])
        return cls(matrix, ir_size, size, replicate=True)

    @property
    def is_affine(self) -> bool:
        return bool(np.allclose(self.matrix[2], [0, 0, 1]))

    def shifted(self, dx: float, dy: float) -> IrWarp:
        """This warp followed by a move of (dx, dy) visible px."""
        return IrWarp(translation(dx, dy) @ self.matrix, self.ir_size, self.size, self.replicate)

    @cached_property
    def coverage(self) -> np.ndarray | None:
        """``size[1] x size[0]`` float32 weights: 1 where the IR camera sees the visible pixel, falling to 0 over
        ``FEATHER_PX`` IR px beyond the edge of its view (per axis, multiplied), as the in-session warp weighs
        (:func:`stream_fusion.engine.frame_graph`); None where it sees the whole frame. Once per warp, by warping a
        ramp image whose kinks sit on its pixel centres, so bilinear sampling gives the weights exactly, several
        times faster than the formula per pixel (docs/engine.md)."""
        (iw, ih), (w, h) = self.ir_size, self.size
        corners = cv2.perspectiveTransform(np.float64([[[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]]]),
                                           np.linalg.inv(self.matrix))[0]
        if ((corners >= -0.5) & (corners <= [iw - 0.5, ih - 0.5])).all():
            return None  # the frame's corners are inside the IR view, so is all of it (a warp keeps lines straight)
        margin = int(np.ceil(FEATHER_PX)) + 1

        def ramp(extent: int) -> np.ndarray:  # canvas pixel u is IR coordinate u - margin - 0.5
            position = np.arange(extent + 2 * margin + 1, dtype=np.float64) - margin - 0.5
            excess = np.maximum(np.abs(position - (extent - 1) / 2) - extent / 2, 0)
            return np.clip(1 - excess / FEATHER_PX, 0, 1)

        canvas = np.outer(ramp(ih), ramp(iw)).astype(np.float32)
        return self._resample(canvas, self.matrix @ translation(-margin - 0.5, -margin - 0.5), cv2.BORDER_CONSTANT)

    @cached_property
    def _blend_weights(self) -> tuple[np.ndarray, np.ndarray] | None:
        """:attr:`coverage` and its complement, for ``cv2.blendLinear``: once per warp, not once per frame."""
        return None if self.coverage is None else (self.coverage, 1 - self.coverage)

    def view_corners(self) -> np.ndarray:
        """4 x 2: where the IR frame's outer corners (top left, top right, bottom right, bottom left) land on the
        visible grid."""
        iw, ih = self.ir_size
        corners = np.float64([[[-0.5, -0.5], [iw - 0.5, -0.5], [iw - 0.5, ih - 0.5], [-0.5, ih - 0.5]]])
        return cv2.perspectiveTransform(corners, self.matrix)[0]

    def view_box(self, margin: int = 0) -> tuple[int, int, int, int]:
        """``(x0, y0, x1, y1)``: the bounding box on the visible grid of what the IR camera sees, less ``margin`` px
        on each side, within the frame (the whole frame when the IR covers it)."""
        w, h = self.size
        corners = self.view_corners()
        (left, top), (right, bottom) = corners.min(axis=0), corners.max(axis=0)
        return (max(0, int(np.ceil(left)) + margin), max(0, int(np.ceil(top)) + margin),
                min(w, int(np.floor(right)) + 1 - margin), min(h, int(np.floor(bottom)) + 1 - margin))

    def blend_outside(self, fused: np.ndarray, vis: np.ndarray) -> np.ndarray:
        """``fused`` where the IR camera sees, the visible frame where it does not (:attr:`coverage`)."""
        if self._blend_weights is None:
            return fused
        return cv2.blendLinear(fused, vis, *self._blend_weights)

    def apply(self, ir: np.ndarray) -> np.ndarray:
        """The IR frame resampled onto the visible grid on the host (OpenCV, bilinear)."""
        if ir.shape[1::-1] != self.ir_size:
            raise ValueError(f"this warp takes {self.ir_size[0]}x{self.ir_size[1]} IR frames, got "
                             f"{ir.shape[1]}x{ir.shape[0]}")
        return self._resample(ir, self.matrix, cv2.BORDER_REPLICATE if self.replicate else cv2.BORDER_CONSTANT)

    def _resample(self, image: np.ndarray, matrix: np.ndarray, border: int) -> np.ndarray:
        """``image`` mapped onto the visible grid by ``matrix`` (bilinear): an affine warp where it is one."""
        if self.is_affine:
            return cv2.warpAffine(image, matrix[:2], self.size, flags=cv2.INTER_LINEAR, borderMode=border)
        return cv2.warpPerspective(image, matrix, self.size, flags=cv2.INTER_LINEAR, borderMode=border)

    def session_inputs(self, padded: tuple[int, int]) -> dict[str, np.ndarray]:
        """What the in-session warp (``engine.frame_graph(..., in_session=True)``) needs to resample the IR onto the
        visible grid reflect-padded to ``padded`` (w, h), the network's size multiple:

        - ``ir_warp`` (3x3): visible pixel -> IR position in ``GridSample``'s normalised coordinates (-1 and 1 are the
          outer edges of the first and last pixel: ``align_corners=0``);
        - ``grid_x`` / ``grid_y``: the visible pixel coordinate of each padded column / row (the padding reflects
          the frame, as the host pads the visible frame, so both inputs are padded alike);
        - ``ir_low`` / ``ir_high``: bounds the sampling positions are clamped to, the centres of the edge pixels
          (bilinear sampling at a clamped position is exactly edge replication, as :func:`fuse_registered` warps);
        - ``ir_feather``: normalised units beyond the edge (+-1) per ``FEATHER_PX`` IR px, for :attr:`coverage`'s
          weights.
        """
        (iw, ih), (w, h) = self.ir_size, self.size
        normalise = np.array([[2 / iw, 0, 1 / iw - 1], [0, 2 / ih, 1 / ih - 1], [0, 0, 1]], np.float64)
        return {
            "ir_warp": (normalise @ np.linalg.inv(self.matrix)).astype(np.float32),
            "grid_x": np.pad(np.arange(w, dtype=np.float32), (0, padded[0] - w), mode="reflect"),
            "grid_y": np.pad(np.arange(h, dtype=np.float32), (0, padded[1] - h), mode="reflect"),
            "ir_low": np.array([1 / iw - 1, 1 / ih - 1], np.float32),
            "ir_high": np.array([1 - 1 / iw, 1 - 1 / ih], np.float32),
            "ir_feather": np.array([iw / 2 / FEATHER_PX, ih / 2 / FEATHER_PX], np.float32),
        }


def register(ir: np.ndarray, warp: IrWarp | None) -> np.ndarray:
    """The IR frame on the visible grid: ``ir`` itself when it is already there (no warp)."""
    return ir if warp is None else warp.apply(ir)


def fuse_registered(
    ir: np.ndarray, vis: np.ndarray, warp: IrWarp | None, fuse: Callable[[np.ndarray, np.ndarray], np.ndarray]
) -> np.ndarray:
    """``fuse(ir, vis)`` of the IR registered by ``warp`` (None: it is on the visible grid already), on the host:
    the IR resampled with its edges replicated, and the visible frame shown where the IR camera does not see."""
    if warp is None:
        return fuse(ir, vis)
    return warp.blend_outside(fuse(replace(warp, replicate=True).apply(ir), vis), vis)


class Calibrated(Protocol):
    def warp(self, ir_size: tuple[int, int], size: tuple[int, int]) -> IrWarp: ...


class IrRegistration:
    """How each IR frame of a stream reaches the visible frame's grid: with a calibration, left as captured and paired
    with the calibration's warp (which the fusion engine applies, on the GPU when it runs there); without one, resized
    to the visible size when the sizes differ, with one warning for the whole stream (the fields of view are then
    assumed to match)."""

    def __init__(self, calibration: Calibrated | None = None) -> None:
        self.calibration = calibration
        self.warned = False
        self._warp: IrWarp | None = None

    def __call__(self, ir: np.ndarray, vis: np.ndarray) -> tuple[np.ndarray, IrWarp | None]:
        """The IR image and the warp still to apply to it (None: it is on the visible grid)."""
        height, width = vis.shape[:2]
        if self.calibration is not None:
            sizes = ((ir.shape[1], ir.shape[0]), (width, height))
            if self._warp is None or (self._warp.ir_size, self._warp.size) != sizes:
                self._warp = self.calibration.warp(*sizes)  # once per frame size, not per frame
            return ir, self._warp
        if ir.shape[:2] == (height, width):
            return ir, None
        if not self.warned:
            self.warned = True
            log.warning(
                "IR frames are %dx%d but visible frames are %dx%d: resizing IR to the visible grid "
                "(without a calibration the fields of view are assumed to match)",
                ir.shape[1], ir.shape[0], width, height,
            )
        return resize_onto(ir, (width, height)), None
