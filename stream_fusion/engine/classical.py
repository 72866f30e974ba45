"""Two classical fusers the network must beat: the plain average and Laplacian-pyramid fusion.

They are the reference rows of the evaluation table (the quality bar is stated against them) and, being
``FusionEngine``s, they also run through ``python -m stream_fusion.batch --model average|laplacian``. Both fuse the
visible luma with IR and put the visible chroma back, exactly like the network's engine, so their scores compare.
"""
from __future__ import annotations

import functools

import cv2
import numpy as np

from stream_fusion.engine.onnx_engine import FusionEngine, fuse_luma
from stream_fusion.warp import IrWarp, fuse_registered


class AverageFusion:
    """F = (IR + VIS) / 2. Maximises SSIM to both sources but halves every target's contrast: the floor to beat."""

    name = "average"
    provider = "numpy"

    def fuse(self, ir: np.ndarray, vis: np.ndarray, warp: IrWarp | None = None) -> np.ndarray:
        average = lambda a, b: ((a.astype(np.uint16) + b + 1) // 2).astype(np.uint8)  # noqa: E731
        return fuse_registered(ir, vis, warp, functools.partial(fuse_luma, fuse_y=average))


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


class LaplacianFusion:
    """Laplacian-pyramid fusion: per band keep the coefficient of larger magnitude, average the low-pass residual.

    Pyramid: Burt & Adelson, "The Laplacian pyramid as a compact image code", IEEE Trans. Commun. 31(4), 1983;
    choose-max rule: Burt & Kolczynski, "Enhanced image capture through fusion", ICCV 1993. The standard multi-scale
    baseline of IVIF surveys: it keeps edges from both sources but can ring and does not weigh thermal saliency.
    """

    name = "laplacian"
    provider = "numpy"

    def __init__(self, levels: int = 4) -> None:
        self.levels = levels

    def fuse(self, ir: np.ndarray, vis: np.ndarray, warp: IrWarp | None = None) -> np.ndarray:
        return fuse_registered(ir, vis, warp, functools.partial(fuse_luma, fuse_y=self._fuse_y))

    def _fuse_y(self, ir: np.ndarray, vis_y: np.ndarray) -> np.ndarray:
        a, b = ir.astype(np.float32), vis_y.astype(np.float32)
        # Stop while the coarsest level is still at least 8 px, so tiny frames do not degenerate to 1 px.
        levels = max(0, min(self.levels, int(np.log2(max(min(a.shape) / 8, 1)))))
        pyr_a, pyr_b = _laplacian_pyramid(a, levels), _laplacian_pyramid(b, levels)
        bands = [np.where(np.abs(la) >= np.abs(lb), la, lb) for la, lb in zip(pyr_a[:-1], pyr_b[:-1])]
        low = (pyr_a[-1] + pyr_b[-1]) / 2
        return np.clip(np.rint(_collapse([*bands, low])), 0, 255).astype(np.uint8)


BASELINES: dict[str, type[FusionEngine]] = {"average": AverageFusion, "laplacian": LaplacianFusion}
