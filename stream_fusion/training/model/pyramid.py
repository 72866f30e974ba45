"""The network's global skip: multi-scale choose-max of the two D²FE-enhanced images (undecimated, a-trous).

Short CPU training cannot learn edge transfer from scratch as well as a classical multi-scale rule already does, so
the decoder predicts a *residual* on top of one. Each level's detail ``x - blur_d(x)`` (5-tap binomial kernel,
dilation d = 1, 2, 4, 8) is taken mostly from the source with the larger local activity: |detail| smoothed at the
level's own scale and then at twice it, and a soft choose-max weight ``a_v^4 / (a_v^4 + a_i^4)`` (computed on
activities divided by the larger one, so that it also holds in fp16: ``MultiScaleSkip.share``). Smoothing at the
level's scale makes neighbouring pixels choose the same source, so sensor noise is not picked pixel by pixel (a
per-pixel choice scored VIF 0.64 and Qabf 0.53 on 10 TNO pairs, this one 0.72 and 0.56); the soft weight avoids
seams (SSIM). The final low-pass band is blended by D²FE's learned weight map, which is where thermal targets get
their brightness. Undecimated, so it works at any size and adds no size constraint; fixed filters, exported as
plain Pad / Conv / Max / Clip / Reciprocal / Mul / Div nodes (the export writes each blur as two fixed-weight
convolutions, ``export.network.ConvBlurSkip``), differentiable end to end.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _taps(x: torch.Tensor, d: int, dim: int) -> torch.Tensor:
    """5-tap binomial (1 4 6 4 1)/16 with holes of ``d`` along ``dim`` (-1: x, -2: y), replicate-padded.

    Written as shifted slices instead of a dilated 1-channel convolution for PyTorch, which trains it: its CPU
    convolution runs this ~20x slower (forward and backward). ONNX Runtime is the other way round, so the export
    swaps in the convolution (``export.network.ConvBlurSkip``).
    """
    p = 2 * d
    pad = (p, p, 0, 0) if dim == -1 else (0, 0, p, p)
    y = F.pad(x, pad, mode="replicate")
    taps = [y.narrow(dim, k * d, y.shape[dim] - p * 2) for k in range(5)]
    return (taps[0] + taps[4] + 4.0 * (taps[1] + taps[3]) + 6.0 * taps[2]) * (1.0 / 16.0)


class MultiScaleSkip(nn.Module):
    FLAT = 1e-3  # activity below which a band counts as flat (FLAT^4 / 2 = 5e-13: the epsilon it was trained with)

    def __init__(self, levels: int) -> None:
        super().__init__()
        self.levels = levels

    @staticmethod
    def blur(x: torch.Tensor, dilation: int) -> torch.Tensor:
        """Separable binomial blur with holes; replicate padding works for frames smaller than the kernel."""
        return _taps(_taps(x, dilation, -1), dilation, -2)

    @staticmethod
    def share(activity: torch.Tensor, n: int) -> torch.Tensor:
        """The visible share ``(a_v^4 + FLAT^4 / 2) / (a_v^4 + a_i^4 + FLAT^4)`` of a band, fp16-safe.

        Written directly, the 4th powers and the epsilon (1e-12) underflow fp16 below an activity of ~0.016, and the
        share becomes 0/0. Dividing everything by ``m = max(a_v, a_i, FLAT)`` gives the same function in exact
        arithmetic (so the trained weights still fit it) with every term in [0, 1] and a denominator >= 1: the
        4th powers may underflow, but only where they are negligible next to the largest term, which is 1. Where
        both activities are below ``FLAT`` (flat in both) the share tends to one half.
        """
        m = torch.maximum(activity[:n], activity[n:]).clamp(min=MultiScaleSkip.FLAT)
        inverse = 1.0 / m
        visible = (activity[:n] * inverse).square().square()  # x**4: ORT's Pow is ~4x slower
        infrared = (activity[n:] * inverse).square().square()
        half_flat = 0.5 * (MultiScaleSkip.FLAT * inverse).square().square()
        return (visible + half_flat) / (visible + infrared + 2.0 * half_flat)

    def forward(self, vis: torch.Tensor, ir: torch.Tensor, weight: torch.Tensor,
                lift: torch.Tensor | None = None) -> torch.Tensor:
        """``weight``: per-pixel share of the visible image in the low-pass band (0.5 = average). ``lift`` (0..1,
        optional): how far the low band moves from that blend toward the brighter source's low band (a per-pixel
        max), so brightness can be kept where the blend would dim it without giving up either source's detail."""
        n = vis.shape[0]
        x = torch.cat([vis, ir], dim=0)  # both sources through the same filters in one call
        detail = torch.zeros_like(vis)
        for level in range(self.levels):
            d = 2**level
            low = self.blur(x, d)
            band = x - low
            share_vis = self.share(self.blur(self.blur(band.abs(), d), 2 * d), n)
            detail = detail + share_vis * band[:n] + (1 - share_vis) * band[n:]
            x = low
        blend = weight * x[:n] + (1 - weight) * x[n:]
        if lift is not None:
            blend = blend + lift * (torch.maximum(x[:n], x[n:]) - blend)
        return blend + detail
