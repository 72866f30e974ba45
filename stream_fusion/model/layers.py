"""Small building blocks shared by the DiffFuseNet modules."""
from __future__ import annotations

import math

import torch
from torch import nn


def norm(channels: int, groups: int) -> nn.GroupNorm:
    """GroupNorm with a group count that divides the width (the paper's norm; simple for export)."""
    return nn.GroupNorm(math.gcd(channels, groups), channels)


def conv_norm_act(c_in: int, c_out: int, groups: int, kernel: int = 3, stride: int = 1) -> nn.Sequential:
    """conv -> GroupNorm -> GELU, the unit of the shallow encoder and the denoiser."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2), norm(c_out, groups), nn.GELU()
    )


def zero_init(module: nn.Conv2d | nn.ConvTranspose2d) -> nn.Module:
    """Start a residual branch at exactly zero, so the untrained network is its identity/skip path."""
    nn.init.zeros_(module.weight)
    if module.bias is not None:
        nn.init.zeros_(module.bias)
    return module


def sinusoidal_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Transformer-style sin/cos embedding of timesteps ``t`` (N,) -> (N, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    angles = t.to(torch.float32)[:, None] * freqs[None, :]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


class SharedEncoder(nn.Module):
    """D²FE's shallow encoder: two 3x3 conv + GroupNorm + GELU, the same weights for IR and visible."""

    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        self.body = nn.Sequential(conv_norm_act(1, channels, groups), conv_norm_act(channels, channels, groups))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)
