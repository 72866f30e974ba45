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
    "daylight": 0.0,  # issue 15: off in the recipe before it (see daylight_loss)
    "temporal": 0.0,  # issue 15: off in the recipe before it (see temporal_loss)
}
DAYLIGHT_TARGET = 0.9  # the daylight term pulls the fused mean luma up to this share of a brighter visible frame
SENSOR_NOISE = (1.0 / 255, 4.0 / 255)  # range of the per-frame sensor noise sigma the temporal term simulates
STATIC = 2.0 / 255  # static pixels: both inputs changed by less than 2 levels (stream_fusion.evaluate.stability)
FLICKER_TARGET = 0.8  # the temporal term's allowed fused change, as a share of the inputs' change

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


def daylight_loss(fused: torch.Tensor, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
    """On the samples whose visible crop is the brighter source, how far the fused mean luma falls short of
    ``DAYLIGHT_TARGET`` x the visible mean (0 where it does not). The per-pixel intensity-max term cannot see this:
    by day, a dark flat IR frame is everywhere below the visible one, and a dim blend costs it little per pixel
    next to the gradient and SSIM terms, while the whole scene loses half its brightness."""
    m_f, m_i, m_v = (x.mean(dim=(1, 2, 3)) for x in (fused, ir, vis))
    shortfall = F.relu(DAYLIGHT_TARGET * m_v - m_f) * (m_v > m_i).to(fused)
    return shortfall.mean()


def temporal_loss(fuse, fused: torch.Tensor, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
    """Flicker: the next frame of the crops (the scene moved by one pixel, as camera jitter or a slow pan does, with
    fresh sensor noise of sigma drawn per sample in ``SENSOR_NOISE``), fused by ``fuse``, measured as the
    evaluation's ``--temporal`` measures it: on the pixels where both inputs changed by less than 2 levels, the
    fused change over the larger of the two inputs' changes, per sample, penalised above ``FLICKER_TARGET``.
    A pixel-wise fusion changes as little as its inputs there; halos and ringing around edges, and detail taken from
    the noisier source, make a fusion change where its inputs did not."""
    n = ir.shape[0]
    dy, dx = [(0, 1), (1, 0), (1, 1), (0, -1), (-1, 0), (-1, -1), (1, -1), (-1, 1)][int(torch.randint(0, 8, ()))]
    sigma = torch.empty(n, 1, 1, 1, device=ir.device).uniform_(*SENSOR_NOISE)
    next_ir = (torch.roll(ir, (dy, dx), dims=(2, 3)) + torch.randn_like(ir) * sigma).clamp(0, 1)
    next_vis = (torch.roll(vis, (dy, dx), dims=(2, 3)) + torch.randn_like(vis) * sigma).clamp(0, 1)
    again = fuse(next_ir, next_vis)
    change_ir = (next_ir - ir).abs().amax(dim=1, keepdim=True)
    change_vis = (next_vis - vis).abs().amax(dim=1, keepdim=True)
    static = ((change_ir < STATIC) & (change_vis < STATIC)).to(fused)
    fused_change = ((again - fused).abs().mean(dim=1, keepdim=True) * static).sum(dim=(1, 2, 3))
    input_change = (torch.maximum(change_ir, change_vis) * static).sum(dim=(1, 2, 3)).clamp(min=1e-6)
    return F.relu(fused_change / input_change - FLICKER_TARGET).mean()
