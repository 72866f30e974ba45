"""The timestep-conditioned lightweight U-Net that predicts the noise in diffused shallow features.

Its 3x3 work runs at half and quarter resolution (the full-resolution levels are 2x2 stride-2 convs and a 1x1
head), which keeps it cheap enough for a CPU: the features it denoises are shallow and spatially smooth, so the
coarse levels see enough context. The timestep enters as a per-channel bias (sinusoidal embedding -> small MLP).
"""
from __future__ import annotations

import torch
from torch import nn

from stream_fusion.training.model.layers import norm, sinusoidal_embedding


class TimeMLP(nn.Module):
    """t (N,) -> per-channel biases for the two conditioned levels."""

    def __init__(self, dim: int, widths: tuple[int, int]) -> None:
        super().__init__()
        self.dim = dim
        self.widths = widths
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, sum(widths)))

    def forward(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # The embedding in float32 (its angles reach ~T), then in the network's own precision: a half-precision
        # network got float32 here and failed (the GPU benchmark's PyTorch fp16 rows).
        e = self.mlp(sinusoidal_embedding(t, self.dim).to(self.mlp[0].weight.dtype))
        a, b = torch.split(e, list(self.widths), dim=1)
        return a[:, :, None, None], b[:, :, None, None]


class Denoiser(nn.Module):
    """eps_hat = U(F_t, t) for ``channels``-wide features; ``width`` is the half-resolution width (quarter: 2x)."""

    def __init__(self, channels: int, width: int, time_dim: int, groups: int) -> None:
        super().__init__()
        self.time = TimeMLP(time_dim, (width, 2 * width))
        self.down1 = nn.Conv2d(channels, width, 3, stride=2, padding=1)
        self.norm1 = nn.Sequential(norm(width, groups), nn.GELU())
        self.down2 = nn.Conv2d(width, 2 * width, 3, stride=2, padding=1)
        self.norm2 = nn.Sequential(norm(2 * width, groups), nn.GELU())
        self.mid = nn.Sequential(nn.Conv2d(2 * width, 2 * width, 3, padding=1), norm(2 * width, groups), nn.GELU())
        self.up2 = nn.ConvTranspose2d(2 * width, width, 2, stride=2)
        self.fuse2 = nn.Sequential(nn.Conv2d(width, width, 3, padding=1), norm(width, groups), nn.GELU())
        self.up1 = nn.ConvTranspose2d(width, channels, 2, stride=2)
        self.head = nn.Conv2d(2 * channels, channels, 1)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``x``: N x C x H x W (H, W multiples of 4); ``t``: N timesteps, or 1 shared by the whole batch."""
        bias1, bias2 = self.time(t)
        h1 = self.norm1(self.down1(x) + bias1)
        h2 = self.norm2(self.down2(h1) + bias2)
        h2 = h2 + self.mid(h2)
        u1 = self.fuse2(self.up2(h2) + h1)
        return self.head(torch.cat([self.up1(u1), x], dim=1))

