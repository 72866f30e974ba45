"""One-level 2-D Haar wavelet transform as fixed-weight convolutions, and its exact inverse.

Written as a stride-2 grouped ``Conv2d`` and a ``ConvTranspose2d`` with the same orthonormal filters (not as
slicing of even/odd pixels) so the ONNX export is two plain conv nodes that every runtime accelerates. The four
2x2 filters are orthonormal and do not overlap, so the transposed convolution is the exact inverse.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# LL (average), LH (horizontal detail: rows differ), HL (vertical detail: columns differ), HH (diagonal).
_FILTERS = 0.5 * torch.tensor(
    [
        [[1.0, 1.0], [1.0, 1.0]],
        [[1.0, 1.0], [-1.0, -1.0]],
        [[1.0, -1.0], [1.0, -1.0]],
        [[1.0, -1.0], [-1.0, 1.0]],
    ]
)


class HaarDWT(nn.Module):
    """``N x C x H x W`` -> ``(LL: N x C x H/2 x W/2, high: N x 3C x H/2 x W/2)`` with high = [LH | HL | HH]."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.register_buffer("weight", _FILTERS.unsqueeze(1).repeat(channels, 1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n, c, h, w = x.shape
        y = F.conv2d(x, self.weight, stride=2, groups=self.channels)  # channel order: c0LL c0LH c0HL c0HH c1LL ...
        y = y.reshape(n, c, 4, h // 2, w // 2)
        low = y[:, :, 0]
        high = y[:, :, 1:].transpose(1, 2).reshape(n, 3 * c, h // 2, w // 2)
        return low, high


class HaarIDWT(nn.Module):
    """Exact inverse of :class:`HaarDWT`."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.register_buffer("weight", _FILTERS.unsqueeze(1).repeat(channels, 1, 1, 1), persistent=False)

    def forward(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        n, c, h, w = low.shape
        bands = torch.cat([low.unsqueeze(2), high.reshape(n, 3, c, h, w).transpose(1, 2)], dim=2)
        return F.conv_transpose2d(bands.reshape(n, 4 * c, h, w), self.weight, stride=2, groups=self.channels)
