"""The fusion stage's one interface.

Every fuser the pipeline can run (the trained network through ONNX Runtime, or the classical fallback) is a
``FusionEngine``: it takes one registered IR / visible pair as 8-bit arrays and returns one fused 8-bit frame.
The pipeline never knows which one it holds, so swapping the network in changes no pipeline code.

Colour is handled here, once, for every engine: the network fuses luminance with IR, and the visible chroma (YCrCb)
is put back afterwards, so a colour visible input gives a colour output and a gray one gives gray.

This module must not import torch: deployment boxes run ONNX only.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import cv2
import numpy as np


@runtime_checkable
class FusionEngine(Protocol):
    """Fuses one registered pair. ``ir``: HxW (or HxWx3) uint8; ``vis``: HxW or HxWx3 BGR uint8, same HxW.

    Returns uint8, HxW when ``vis`` is gray, HxWx3 BGR when it is colour.
    """

    name: str
    provider: str

    def fuse(self, ir: np.ndarray, vis: np.ndarray) -> np.ndarray: ...


def to_gray(image: np.ndarray) -> np.ndarray:
    """Single-channel view of a frame: thermal cameras often deliver 3 identical BGR channels."""
    if image.ndim == 2:
        return image
    if image.ndim == 3 and image.shape[2] == 1:
        return image[:, :, 0]
    return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)


def split_luma(vis: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Luminance to fuse, and the chroma (Cr, Cb) to restore afterwards (None for a gray visible frame)."""
    if vis.ndim == 2 or (vis.ndim == 3 and vis.shape[2] == 1):
        return to_gray(vis), None
    ycrcb = cv2.cvtColor(vis, cv2.COLOR_BGR2YCrCb)
    return ycrcb[:, :, 0], ycrcb[:, :, 1:]


def merge_luma(y: np.ndarray, chroma: np.ndarray | None) -> np.ndarray:
    """Inverse of :func:`split_luma`: fused luminance plus the visible chroma, back to BGR."""
    if chroma is None:
        return y
    return cv2.cvtColor(np.dstack([y, chroma]), cv2.COLOR_YCrCb2BGR)


def check_pair(ir: np.ndarray, vis: np.ndarray) -> None:
    """Engines fuse registered pairs only: resizing is the pipeline's job, so a size mismatch here is a bug upstream."""
    if ir.shape[:2] != vis.shape[:2]:
        raise ValueError(f"IR {ir.shape[1]}x{ir.shape[0]} and visible {vis.shape[1]}x{vis.shape[0]} differ in size")
    if ir.dtype != np.uint8 or vis.dtype != np.uint8:
        raise ValueError(f"engines take uint8 frames, got IR {ir.dtype} and visible {vis.dtype}")


class ClassicalEngine:
    """Two-scale fusion (mean of the base layers, larger-magnitude detail): no model file, runs anywhere.

    It is the fallback when no network is wanted (``--model classical``) and a reference point for the network.
    """

    name = "classical"
    provider = "numpy"

    def __init__(self, base_kernel: int = 31) -> None:
        self.base_kernel = base_kernel

    def fuse(self, ir: np.ndarray, vis: np.ndarray) -> np.ndarray:
        check_pair(ir, vis)
        vis_y, chroma = split_luma(vis)
        a = to_gray(ir).astype(np.float32)
        b = vis_y.astype(np.float32)
        k = (self.base_kernel, self.base_kernel)
        base_a, base_b = cv2.blur(a, k), cv2.blur(b, k)
        det_a, det_b = a - base_a, b - base_b
        detail = np.where(np.abs(det_a) > np.abs(det_b), det_a, det_b)
        # Max of the bases keeps hot targets bright instead of halving their contrast against a dark visible scene.
        fused = np.maximum(base_a, base_b) * 0.5 + (base_a + base_b) * 0.25 + detail
        y = np.clip(fused + 0.5, 0, 255).astype(np.uint8)
        return merge_luma(y, chroma)
