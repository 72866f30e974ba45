"""Invertible affine coupling that refines Haar sub-bands without losing information.

``z2' = z2 + phi1(z1)``; ``z1' = z1 * exp(s(z2')) + b(z2')`` with ``s, b = phi23(z2')`` (the paper's phi2, phi3
sharing one trunk). ``s`` is a scaled tanh so exp() stays in [e^-k, e^k]: an unbounded scale makes short training
runs blow up. Because each half is changed only by a function of the other, :meth:`inverse` undoes it exactly.
"""
from __future__ import annotations

import torch
from torch import nn

from stream_fusion.training.model.layers import zero_init


def _subnet(c_in: int, hidden: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, hidden, 3, padding=1), nn.GELU(), zero_init(nn.Conv2d(hidden, c_out, 1)))


class AffineCoupling(nn.Module):
    """Couples ``z1`` (LL, C channels) and ``z2`` (LH|HL|HH, 3C channels); starts as the identity."""

    def __init__(self, channels: int, hidden: int, clamp: float = 2.0) -> None:
        super().__init__()
        self.channels = channels
        self.clamp = clamp
        self.phi1 = _subnet(channels, hidden, 3 * channels)
        self.phi23 = _subnet(3 * channels, hidden, 2 * channels)

    def _scale_shift(self, z2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s, b = torch.split(self.phi23(z2), [self.channels, self.channels], dim=1)
        return self.clamp * torch.tanh(s / self.clamp), b

    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z2 = z2 + self.phi1(z1)
        s, b = self._scale_shift(z2)
        return z1 * torch.exp(s) + b, z2

    def inverse(self, y1: torch.Tensor, y2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s, b = self._scale_shift(y2)
        z1 = (y1 - b) * torch.exp(-s)
        return z1, y2 - self.phi1(z1)
