"""Bidirectional cross-frequency attention between the low (LL) and high (LH|HL|HH) Haar bands.

Low -> high is *spatial*: the smooth LL band knows where objects and contours are, so a spatial map computed from it
says where detail is worth amplifying (and where high-band energy is noise). High -> low is *channel*: pooled detail
statistics say which LL channels carry structure. Both are residual (x + x * a), so at a = 0 nothing is lost.
"""
from __future__ import annotations

import torch
from torch import nn


class CrossFrequencyAttention(nn.Module):
    def __init__(self, channels: int, kernel: int = 7, reduction: int = 4) -> None:
        super().__init__()
        hidden = max(channels // reduction, 4)
        self.spatial = nn.Sequential(nn.Conv2d(2, 1, kernel, padding=kernel // 2), nn.Sigmoid())
        self.channel = nn.Sequential(
            nn.Conv2d(3 * channels, hidden, 1), nn.GELU(), nn.Conv2d(hidden, channels, 1), nn.Sigmoid()
        )

    def forward(self, low: torch.Tensor, high: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        stats = torch.cat([low.mean(dim=1, keepdim=True), low.amax(dim=1, keepdim=True)], dim=1)
        high = high + high * self.spatial(stats)
        low = low + low * self.channel(high.mean(dim=(2, 3), keepdim=True))
        return low, high
