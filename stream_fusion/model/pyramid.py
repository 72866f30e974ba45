"""The network's global skip: multi-scale choose-max of the two D²FE-enhanced images (undecimated, a-trous).

Short CPU training cannot learn edge transfer from scratch as well as a classical multi-scale rule already does, so
the decoder predicts a *residual* on top of one. Each level's detail ``x - blur_d(x)`` (5-tap binomial kernel,
dilation 1, 2, 4, 8) is taken from the source with the larger local activity (|detail| smoothed once), which keeps
the stronger edge of either sensor; the final low-pass band is blended by D²FE's learned weight map, which is where
thermal targets get their brightness. Undecimated, so it works at any size and adds no size constraint; the
selection is a ``where`` on fixed filters, exported as plain Conv / Where nodes.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

_BINOMIAL = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0


class MultiScaleSkip(nn.Module):
    def __init__(self, levels: int) -> None:
        super().__init__()
        self.levels = levels
        self.register_buffer("kx", _BINOMIAL.view(1, 1, 1, 5), persistent=False)
        self.register_buffer("ky", _BINOMIAL.view(1, 1, 5, 1), persistent=False)

    def blur(self, x: torch.Tensor, dilation: int) -> torch.Tensor:
        """Separable binomial blur with holes; replicate padding works for frames smaller than the kernel."""
        p = 2 * dilation
        x = F.conv2d(F.pad(x, (p, p, 0, 0), mode="replicate"), self.kx, dilation=(1, dilation))
        return F.conv2d(F.pad(x, (0, 0, p, p), mode="replicate"), self.ky, dilation=(dilation, 1))

    def forward(self, vis: torch.Tensor, ir: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """``weight``: per-pixel share of the visible image in the low-pass band (0.5 = average)."""
        n = vis.shape[0]
        x = torch.cat([vis, ir], dim=0)  # both sources through the same filters in one call
        detail = torch.zeros_like(vis)
        for level in range(self.levels):
            low = self.blur(x, 2**level)
            band = x - low
            activity = self.blur(band.abs(), 1)
            band_vis, band_ir = band[:n], band[n:]
            detail = detail + torch.where(activity[:n] >= activity[n:], band_vis, band_ir)
            x = low
        return weight * x[:n] + (1 - weight) * x[n:] + detail
