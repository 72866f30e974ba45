"""Frame helpers every engine shares: luma and chroma, pair checks, padding. numpy and OpenCV only (no ONNX), so
the alignment check, the calibration and the training data use them without loading a runtime.

Colour is handled here, once, for every engine: a luminance network fuses luminance with IR, and the visible chroma
(YCrCb) is put back afterwards (:func:`fuse_luma`, "the YCbCr route"); a colour network (``cdfusion``) takes the
visible frame as BGR and returns BGR itself (:func:`fuse_colour`). Either way a colour visible input gives a colour
output and a gray one gives gray.
"""
from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

from stream_fusion.warp import IrWarp


def to_gray(image: np.ndarray) -> np.ndarray:
    """Single-channel view of a frame: thermal cameras often deliver 3 identical BGR channels."""
    if image.ndim == 2:
        return image
    if image.ndim == 3 and image.shape[2] == 1:
        return image[:, :, 0]
    return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)


def split_luma(vis: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Luminance to fuse (a view), and the whole frame in YCrCb, whose chroma :func:`merge_luma` puts back (None for
    a gray visible frame)."""
    if vis.ndim == 2 or (vis.ndim == 3 and vis.shape[2] == 1):
        return to_gray(vis), None
    ycrcb = cv2.cvtColor(vis, cv2.COLOR_BGR2YCrCb)
    return ycrcb[:, :, 0], ycrcb


def merge_luma(y: np.ndarray, ycrcb: np.ndarray | None) -> np.ndarray:
    """Inverse of :func:`split_luma`: the fused luminance written over the Y of ``ycrcb`` (in place: it is
    :func:`split_luma`'s own array, and its luma view now holds the fused luma), back to BGR. In place, not a new
    Y, Cr, Cb stack: the strided chroma copy was most of the merge's cost (docs/engine.md)."""
    if ycrcb is None:
        return y
    ycrcb[:, :, 0] = y
    return cv2.cvtColor(ycrcb, cv2.COLOR_YCrCb2BGR)


def check_pair(ir: np.ndarray, vis: np.ndarray, warp: IrWarp | None = None) -> None:
    """Engines fuse registered pairs only (or IR frames with the warp that registers them): resizing is the
    pipeline's job, so a size mismatch here is a bug upstream."""
    ir_size, vis_size = (ir.shape[1], ir.shape[0]), (vis.shape[1], vis.shape[0])
    if warp is None and ir_size != vis_size:
        raise ValueError(f"IR {ir.shape[1]}x{ir.shape[0]} and visible {vis.shape[1]}x{vis.shape[0]} differ in size")
    if warp is not None and (warp.ir_size, warp.size) != (ir_size, vis_size):
        raise ValueError(f"the warp maps {warp.ir_size[0]}x{warp.ir_size[1]} IR onto {warp.size[0]}x{warp.size[1]}, "
                         f"got IR {ir_size[0]}x{ir_size[1]} and visible {vis_size[0]}x{vis_size[1]}")
    if ir.dtype != np.uint8 or vis.dtype != np.uint8:
        raise ValueError(f"engines take uint8 frames, got IR {ir.dtype} and visible {vis.dtype}")


def fuse_luma(ir: np.ndarray, vis: np.ndarray, fuse_y: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> np.ndarray:
    """What every engine does around its fusion: check the pair, fuse the IR with the visible luma (two HxW uint8
    arrays in, HxW uint8 out, by ``fuse_y``), put the visible chroma back."""
    check_pair(ir, vis)
    vis_y, chroma = split_luma(vis)
    return merge_luma(fuse_y(to_gray(ir), vis_y), chroma)


def fuse_colour(
    ir: np.ndarray, vis: np.ndarray, fuse_bgr: Callable[[np.ndarray, np.ndarray], np.ndarray],
    warp: IrWarp | None = None,
) -> np.ndarray:
    """What every engine of a colour network does around it: check the pair, fuse the IR (HxW uint8) with the visible
    frame as BGR (HxWx3 uint8, a gray camera as three equal channels) by ``fuse_bgr``, return BGR, or gray for a
    gray camera. ``warp``: the one ``fuse_bgr`` applies to the IR (checked here against both frames)."""
    check_pair(ir, vis, warp)
    gray = vis.ndim == 2 or vis.shape[2] == 1
    fused = fuse_bgr(to_gray(ir), cv2.cvtColor(to_gray(vis), cv2.COLOR_GRAY2BGR) if gray else vis)
    return to_gray(fused) if gray else fused


def pad_to_multiple(frames: np.ndarray, multiple: int, channels_last: bool = False) -> np.ndarray:
    """Reflect-pad the height and width axes (the last two, or the two before a channels-last axis) up to a
    multiple of ``multiple`` (the network halves the size in its Haar and U-Net stages). Reflection, not zeros: a
    black border would be a fake edge the network fuses as detail. Returns the input itself when no padding is
    needed, so 640x512 and 1280x1024 frames are not copied."""
    h, w = frames.shape[-3:-1] if channels_last else frames.shape[-2:]
    ph, pw = -h % multiple, -w % multiple
    if ph == 0 and pw == 0:
        return frames
    pads = [(0, ph), (0, pw)] + [(0, 0)] * channels_last
    return np.pad(frames, [(0, 0)] * (frames.ndim - len(pads)) + pads, mode="reflect")
