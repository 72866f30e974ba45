"""Unsupervised fusion losses: there is no ground-truth fused image, so the fused image is pulled toward what each
source does best. Intensity toward the per-pixel max keeps hot IR targets bright; gradient toward the larger Sobel
magnitude keeps whichever source's edge is stronger (this is what Qabf rewards); SSIM to both sources keeps local
structure and penalises artefacts. The gradient weight is high on purpose: the intensity-to-max term alone washes
out visible texture in dark IR-dominated regions.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

DEFAULT_WEIGHTS = {
    "intensity": 1.0,
    "gradient": 10.0,
    "ssim": 1.0,
    "chroma": 1.0,  # colour model only (cdfusion): Lab a*/b* distance to the visible image
    "diffusion": 0.1,
    "consistency": 0.01,
    "consistency_stage1": 0.1,
}

_SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])


def sobel_magnitude(x: torch.Tensor) -> torch.Tensor:
    """|Gx| + |Gy| of N x 1 x H x W images (replicate padding: image borders are not edges)."""
    kernel = torch.stack([_SOBEL_X, _SOBEL_X.t()]).unsqueeze(1).to(x)
    g = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernel)
    return g.abs().sum(dim=1, keepdim=True)


def _gaussian_window(size: int, sigma: float, like: torch.Tensor) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).view(1, 1, size, size).to(like)


def ssim(a: torch.Tensor, b: torch.Tensor, size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Mean SSIM (Wang et al. 2004, Gaussian 11x11 window, sigma 1.5, data range 1) of N x 1 x H x W images."""
    w = _gaussian_window(size, sigma, a)
    c1, c2 = 0.01**2, 0.03**2
    mu_a, mu_b = F.conv2d(a, w), F.conv2d(b, w)
    var_a = F.conv2d(a * a, w) - mu_a**2
    var_b = F.conv2d(b * b, w) - mu_b**2
    cov = F.conv2d(a * b, w) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return s.mean()


def fusion_losses(fused: torch.Tensor, ir: torch.Tensor, vis: torch.Tensor) -> dict[str, torch.Tensor]:
    """The three Stage II fusion terms, unweighted."""
    return {
        "intensity": F.l1_loss(fused, torch.maximum(ir, vis)),
        "gradient": F.l1_loss(sobel_magnitude(fused), torch.maximum(sobel_magnitude(ir), sobel_magnitude(vis))),
        "ssim": (1 - ssim(fused, ir)) + (1 - ssim(fused, vis)),
    }


# sRGB (D65) -> CIE XYZ, rows X, Y, Z; columns R, G, B. The same constants OpenCV's BGR2Lab uses.
_RGB_TO_XYZ = torch.tensor(
    [[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169], [0.019334, 0.119193, 0.950227]]
)
_WHITE_D65 = torch.tensor([0.950456, 1.0, 1.088754])


def bgr_to_lab(bgr: torch.Tensor) -> torch.Tensor:
    """N x 3 x H x W BGR in 0..1 -> CIE L*a*b* (L 0..100), differentiably. The colour model's chroma loss is taken
    here because Lab is where the evaluation's CIEDE2000 measures colour: a loss on BGR or YCrCb differences would
    weigh a dark pixel's hue shift far less than a viewer (or the metric) does."""
    rgb = bgr.flip(1)
    linear = torch.where(rgb > 0.04045, ((rgb.clamp(min=0.04045) + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    xyz = torch.einsum("ij,njhw->nihw", _RGB_TO_XYZ.to(bgr), linear) / _WHITE_D65.to(bgr).view(1, 3, 1, 1)
    eps = 0.008856
    f = torch.where(xyz > eps, xyz.clamp(min=eps) ** (1.0 / 3.0), 7.787 * xyz + 16.0 / 116.0)
    fx, fy, fz = f.unbind(1)
    return torch.stack([116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)], dim=1)


def chroma_loss(fused_bgr: torch.Tensor, vis_bgr: torch.Tensor) -> torch.Tensor:
    """Mean |Δa*| + |Δb*| between the fused and visible colour images, in Lab units / 100. Lightness is left to
    the fusion losses: it is where thermal targets and IR detail must show, so it cannot also be pinned to the
    visible image."""
    a = bgr_to_lab(fused_bgr)[:, 1:]
    b = bgr_to_lab(vis_bgr)[:, 1:]
    return (a - b).abs().mean() * (2.0 / 100.0)
