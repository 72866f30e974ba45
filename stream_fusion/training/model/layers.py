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
    """D²FE's shallow encoder: two 3x3 conv + GroupNorm + GELU, the same weights for IR and visible.

    ``in_channels`` is 1 at full resolution, ``s * s`` when the inputs arrive space-to-depth by ``s``."""

    def __init__(self, channels: int, groups: int, in_channels: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv_norm_act(in_channels, channels, groups), conv_norm_act(channels, channels, groups)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class SpaceToDepth(nn.Module):
    """1-channel ``N x 1 x H x W`` -> ``N x s² x H/s x W/s`` (each s x s block as channels, lossless).

    A fixed one-hot stride-``s`` convolution rather than ``pixel_unshuffle``: the TorchScript exporter writes the
    latter as Reshape/Transpose with dynamic shapes; a plain Conv node runs natively on every runtime."""

    def __init__(self, factor: int) -> None:
        super().__init__()
        self.factor = factor
        self.register_buffer("weight", torch.eye(factor * factor).reshape(-1, 1, factor, factor), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.conv2d(x, self.weight, stride=self.factor)


class DepthToSpace(nn.Module):
    """Exact inverse of :class:`SpaceToDepth`: ``N x s² x h x w`` -> ``N x 1 x s*h x s*w`` (one transposed conv).

    With ``channels = k`` it maps ``N x k·s² x h x w`` -> ``N x k x s*h x s*w``, each group of s² inputs to its own
    output channel (a grouped transposed conv): the colour model's per-channel residual comes back this way."""

    def __init__(self, factor: int, channels: int = 1) -> None:
        super().__init__()
        self.factor = factor
        self.channels = channels
        weight = torch.eye(factor * factor).reshape(-1, 1, factor, factor).repeat(channels, 1, 1, 1)
        self.register_buffer("weight", weight, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.conv_transpose2d(x, self.weight, stride=self.factor, groups=self.channels)


class Upsample2x(nn.Module):
    """Bilinear 2x upsampling (``align_corners=False``, edge-clamped) as one fixed transposed convolution.

    The same values as ``F.interpolate(..., mode="bilinear")``, but ONNX Runtime's CPU Resize cost 6 ms at
    640x512 against well under 1 ms for this conv (taps 1/4, 3/4 per axis; replicate padding gives the clamp)."""

    def __init__(self) -> None:
        super().__init__()
        taps = torch.tensor([1.0, 3.0, 3.0, 1.0]) / 4.0
        self.register_buffer("weight", torch.outer(taps, taps)[None, None], persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: N x 1 x h x w -> N x 1 x 2h x 2w."""
        padded = nn.functional.pad(x, (1, 1, 1, 1), mode="replicate")
        return nn.functional.conv_transpose2d(padded, self.weight, stride=2, padding=3)
