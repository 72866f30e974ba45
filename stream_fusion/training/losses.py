"""Unsupervised fusion losses: there is no ground-truth fused image, so the fused image is pulled toward what each
source does best. Intensity toward the per-pixel max keeps hot IR targets bright; gradient toward the larger Sobel
magnitude keeps whichever source's edge is stronger (this is what Qabf rewards); SSIM to both sources keeps local
structure and penalises artefacts. The gradient weight is high on purpose: the intensity-to-max term alone washes
out visible texture in dark IR-dominated regions.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from stream_fusion.training.model.colour import bgr_to_lab

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


def weighted_total(weights: dict[str, float], **terms: torch.Tensor) -> torch.Tensor:
    """``weights[name] * term`` summed over the named terms, in the order given: the one spelling of a stage's total
    loss for every network."""
    return sum((weights[name] * term for name, term in terms.items()), start=torch.zeros(()))


def chroma_loss(fused_bgr: torch.Tensor, vis_bgr: torch.Tensor) -> torch.Tensor:
    """Mean |Δa*| + |Δb*| between the fused and visible colour images, in Lab units / 100. Lab, because that is
    where the evaluation's CIEDE2000 measures colour: a loss on BGR or YCrCb differences would weigh a dark pixel's
    hue shift far less than a viewer (or the metric) does. Lightness is left to the fusion losses: it is where
    thermal targets and IR detail must show, so it cannot also be pinned to the visible image."""
    a = bgr_to_lab(fused_bgr)[:, 1:]
    b = bgr_to_lab(vis_bgr)[:, 1:]
    return (a - b).abs().mean() * (2.0 / 100.0)
