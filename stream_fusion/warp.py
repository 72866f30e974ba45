"""The one resampling that brings a raw IR frame onto the visible frame's grid.

A rig's calibration (a fixed IR -> visible warp) and the ``correct`` policy's live shift are composed into one
:class:`IrWarp` and the IR is resampled once, not once per step (two bilinear passes blur twice). Where the warp runs
is the fusion engine's choice: on the host with OpenCV (:meth:`IrWarp.apply`), or inside the ONNX Runtime session,
on the GPU under TensorRT or CUDA, as a ``GridSample`` fed by :meth:`IrWarp.session_inputs` (a 3x3 matrix and two
coordinate rows: bytes, not a per-pixel grid, cross the bus).
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


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
    grid of ``size`` (w, h). Where the IR has no pixel the result is black (outside the IR camera's view), or with
    ``replicate`` the nearest edge pixel (a shifted frame: a black strip would be a fake edge the network fuses)."""

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

    def apply(self, ir: np.ndarray) -> np.ndarray:
        """The IR frame resampled onto the visible grid on the host (OpenCV, bilinear)."""
        if ir.shape[1::-1] != self.ir_size:
            raise ValueError(f"this warp takes {self.ir_size[0]}x{self.ir_size[1]} IR frames, got "
                             f"{ir.shape[1]}x{ir.shape[0]}")
        border = cv2.BORDER_REPLICATE if self.replicate else cv2.BORDER_CONSTANT
        if self.is_affine:
            return cv2.warpAffine(ir, self.matrix[:2], self.size, flags=cv2.INTER_LINEAR, borderMode=border)
        return cv2.warpPerspective(ir, self.matrix, self.size, flags=cv2.INTER_LINEAR, borderMode=border)

    def session_inputs(self, padded: tuple[int, int]) -> dict[str, np.ndarray]:
        """What the in-session warp (``engine.frame_graph(..., in_session=True)``) needs to resample the IR onto the
        visible grid reflect-padded to ``padded`` (w, h), the network's size multiple:

        - ``ir_warp`` (3x3): visible pixel -> IR position in ``GridSample``'s normalised coordinates (-1 and 1 are the
          outer edges of the first and last pixel: ``align_corners=0``);
        - ``grid_x`` / ``grid_y``: the visible pixel coordinate of each padded column / row (the padding reflects
          the frame, as the host pads the visible frame, so both inputs are padded alike);
        - ``ir_low`` / ``ir_high``: bounds the sampling positions are clamped to, the centres of the edge pixels for
          ``replicate`` (bilinear sampling at a clamped position is exactly edge replication), else unbounded
          (``GridSample`` pads with zeros: black).
        """
        (iw, ih), (w, h) = self.ir_size, self.size
        normalise = np.array([[2 / iw, 0, 1 / iw - 1], [0, 2 / ih, 1 / ih - 1], [0, 0, 1]], np.float64)
        if self.replicate:
            low, high = [1 / iw - 1, 1 / ih - 1], [1 - 1 / iw, 1 - 1 / ih]
        else:
            low, high = [-2.0, -2.0], [2.0, 2.0]  # beyond +-1: GridSample's zero padding decides
        return {
            "ir_warp": (normalise @ np.linalg.inv(self.matrix)).astype(np.float32),
            "grid_x": np.pad(np.arange(w, dtype=np.float32), (0, padded[0] - w), mode="reflect"),
            "grid_y": np.pad(np.arange(h, dtype=np.float32), (0, padded[1] - h), mode="reflect"),
            "ir_low": np.array(low, np.float32),
            "ir_high": np.array(high, np.float32),
        }


def register(ir: np.ndarray, warp: IrWarp | None) -> np.ndarray:
    """The IR frame on the visible grid: ``ir`` itself when it is already there (no warp)."""
    return ir if warp is None else warp.apply(ir)
