"""The classical fusers: no model file, no runtime, numpy and OpenCV only.

``ClassicalEngine`` is the fallback when no network is wanted (``--model classical``); the plain average and
Laplacian-pyramid fusion are the two baselines the network must beat (the reference rows of the evaluation table: the
quality bar is stated against them; ``python -m stream_fusion.batch --model average|laplacian``). All three are one
shape, :class:`LumaFuser`: they fuse the visible luma with IR and put the visible chroma back, exactly like the
network's engine, so their scores compare.
"""
from __future__ import annotations

import abc
import functools

import cv2
import numpy as np

from stream_fusion.engine.frames import fuse_luma
from stream_fusion.warp import IrWarp, fuse_registered


class LumaFuser(abc.ABC):
    """A ``FusionEngine`` that fuses luminance: :meth:`fuse_y` fuses the IR with the visible luma (two HxW uint8 arrays
    in, one out); bringing the IR onto the visible grid (``warp``) and putting the visible chroma back are the same for
    every such fuser, here."""

    name: str
    provider = "numpy"

    def fuse(self, ir: np.ndarray, vis: np.ndarray, warp: IrWarp | None = None) -> np.ndarray:
        return fuse_registered(ir, vis, warp, functools.partial(fuse_luma, fuse_y=self.fuse_y))

    @abc.abstractmethod
    def fuse_y(self, ir: np.ndarray, vis_y: np.ndarray) -> np.ndarray: ...


class ClassicalEngine(LumaFuser):
    """Two-scale fusion (mean of the base layers, larger-magnitude detail): no model file, runs anywhere.

    It is the fallback when no network is wanted (``--model classical``) and a reference point for the network.
    """

    name = "classical"

    def __init__(self, base_kernel: int = 31) -> None:
        self.base_kernel = base_kernel

    def fuse_y(self, ir: np.ndarray, vis_y: np.ndarray) -> np.ndarray:
        a, b = ir.astype(np.float32), vis_y.astype(np.float32)
        k = (self.base_kernel, self.base_kernel)
        base_a, base_b = cv2.blur(a, k), cv2.blur(b, k)
        det_a, det_b = a - base_a, b - base_b
        detail = np.where(np.abs(det_a) > np.abs(det_b), det_a, det_b)
        # Max of the bases keeps hot targets bright instead of halving their contrast against a dark visible scene.
        fused = np.maximum(base_a, base_b) * 0.5 + (base_a + base_b) * 0.25 + detail
        return np.clip(fused + 0.5, 0, 255).astype(np.uint8)


class AverageFusion(LumaFuser):
    """F = (IR + VIS) / 2. Maximises SSIM to both sources but halves every target's contrast: the floor to beat."""

    name = "average"

    def fuse_y(self, ir: np.ndarray, vis_y: np.ndarray) -> np.ndarray:
        return ((ir.astype(np.uint16) + vis_y + 1) // 2).astype(np.uint8)


def _laplacian_pyramid(image: np.ndarray, levels: int) -> list[np.ndarray]:
    """Band-pass levels (finest first) and the low-pass residual last (Burt & Adelson 1983)."""
    pyramid, current = [], image
    for _ in range(levels):
        smaller = cv2.pyrDown(current)
        pyramid.append(current - cv2.pyrUp(smaller, dstsize=(current.shape[1], current.shape[0])))
        current = smaller
    pyramid.append(current)
    return pyramid


def _collapse(pyramid: list[np.ndarray]) -> np.ndarray:
    """Exact inverse of :func:`_laplacian_pyramid`."""
    image = pyramid[-1]
    for band in reversed(pyramid[:-1]):
        image = cv2.pyrUp(image, dstsize=(band.shape[1], band.shape[0])) + band
    return image


class LaplacianFusion(LumaFuser):
    """Laplacian-pyramid fusion: per band keep the coefficient of larger magnitude, average the low-pass residual.

    Pyramid: Burt & Adelson, "The Laplacian pyramid as a compact image code", IEEE Trans. Commun. 31(4), 1983;
    choose-max rule: Burt & Kolczynski, "Enhanced image capture through fusion", ICCV 1993. The standard multi-scale
    baseline of IVIF surveys: it keeps edges from both sources but can ring and does not weigh thermal saliency.
    """

    name = "laplacian"

    def __init__(self, levels: int = 4) -> None:
        self.levels = levels

    def fuse_y(self, ir: np.ndarray, vis_y: np.ndarray) -> np.ndarray:
        a, b = ir.astype(np.float32), vis_y.astype(np.float32)
        # Stop while the coarsest level is still at least 8 px, so tiny frames do not degenerate to 1 px.
        levels = max(0, min(self.levels, int(np.log2(max(min(a.shape) / 8, 1)))))
        pyr_a, pyr_b = _laplacian_pyramid(a, levels), _laplacian_pyramid(b, levels)
        bands = [np.where(np.abs(la) >= np.abs(lb), la, lb) for la, lb in zip(pyr_a[:-1], pyr_b[:-1])]
        low = (pyr_a[-1] + pyr_b[-1]) / 2
        return np.clip(np.rint(_collapse([*bands, low])), 0, 255).astype(np.uint8)


BASELINES: dict[str, type[LumaFuser]] = {"average": AverageFusion, "laplacian": LaplacianFusion}
