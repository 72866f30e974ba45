"""D²FE, the part both fusion networks share (DiffFuseNet in ``net.py``, the colour model in ``cdfusion.py``).

One definition, so the two stay the same network where they claim to be: the colour model's warm start loads a
luminance checkpoint's D²FE by name and shape (``train.init_from``), which only holds while both build it here.
Holds the learned path's resolution plumbing (``downscale``), the noise schedule and its fixed inference steps, the
shared shallow encoder, the feature denoiser and the deterministic reverse diffusion. The weight map and projection
come from :func:`weight_map_and_projection`, which each network calls where its own layers' order needs it (layers
are initialised in creation order, so that order is part of a seeded run's reproducibility).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from stream_fusion.training.model.denoiser import Denoiser
from stream_fusion.training.model.layers import DepthToSpace, SharedEncoder, SpaceToDepth, Upsample2x, norm, zero_init
from stream_fusion.training.model.schedule import NoiseSchedule

# Preset keys of the D²FE, in the order the networks' presets list them (after ``name``).
D2FE_KEYS: dict[str, type] = {
    "channels": int,
    "gn_groups": int,
    "denoiser_width": int,
    "time_dim": int,
    "timesteps": int,
    "beta_start": float,
    "beta_end": float,
    "t_infer": int,
    "steps": int,
}


class D2FENet(nn.Module):
    """Base of both networks: everything up to and including the denoiser, and :meth:`denoise`."""

    def __init__(self, preset: dict[str, Any], downscale: int) -> None:
        super().__init__()
        self.preset = dict(preset)
        if downscale not in (1, 2):
            raise ValueError(f"downscale must be 1 (full resolution) or 2 (half), got {downscale}")
        s = self.downscale = downscale
        c, g = preset["channels"], preset["gn_groups"]
        self.size_multiple = 4 * s
        self.to_low = SpaceToDepth(s) if s > 1 else nn.Identity()
        self.to_full = DepthToSpace(s) if s > 1 else nn.Identity()
        self.weight_to_full = Upsample2x() if s > 1 else nn.Identity()
        self.schedule = NoiseSchedule(preset["timesteps"], preset["beta_start"], preset["beta_end"])
        self.inference_steps = self.schedule.inference_timesteps(preset["t_infer"], preset["steps"])
        self.encoder = SharedEncoder(c, g, s * s)
        self.denoiser = Denoiser(c, preset["denoiser_width"], preset["time_dim"], g)

    def diffusion_losses(
        self, sources: torch.Tensor, vis_count: int
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """The D²FE's training step on a batch of single-plane ``sources``, visible planes first (``vis_count`` of
        them), then IR: noise prediction at random timesteps (``diff_vis``, ``diff_ir``), and the denoised clean
        features (:meth:`denoise`), which the consistency and fusion losses take."""
        f0 = self.encoder(self.to_low(sources))
        t = torch.randint(0, self.schedule.timesteps, (sources.shape[0],), device=sources.device)
        noise = torch.randn_like(f0)
        eps = self.denoiser(self.schedule.add_noise(f0, noise, t), t)
        k = vis_count
        losses = {"diff_vis": F.mse_loss(eps[:k], noise[:k]), "diff_ir": F.mse_loss(eps[k:], noise[k:])}
        return losses, self.denoise(f0)

    def reconstruction_loss(self, sources: torch.Tensor, denoised: torch.Tensor) -> torch.Tensor:
        """Stage I: the sources rebuilt from their denoised features by the network's ``reconstruct`` head."""
        from stream_fusion.training.losses import ssim

        rec = torch.sigmoid(self.to_full(self.reconstruct(denoised)))
        return F.l1_loss(rec, sources) + (1 - ssim(rec, sources))

    def denoise(self, features: torch.Tensor) -> torch.Tensor:
        """Deterministic reverse diffusion: the clean features are taken as x_t at ``t_infer`` (no noise drawn) and
        stepped down with DDIM (eta = 0) over the fixed inference steps."""
        x = features
        for t, t_prev in self.inference_steps:
            eps = self.denoiser(x, torch.full((1,), float(t), device=x.device))  # a constant: folds at export
            x = self.schedule.step(x, eps, t, t_prev)
        return x


def weight_map_and_projection(channels: int, groups: int, downscale: int) -> tuple[nn.Sequential, nn.Conv2d]:
    """D²FE's fusion of the two denoised features: the spatial weight map (1x1 conv, GroupNorm, GELU, 1x1 conv to one
    channel, sigmoid) and the projection of the fused feature to image space (zero-initialised: no enhancement
    until trained)."""
    c, g, s = channels, groups, downscale
    weight_map = nn.Sequential(
        nn.Conv2d(2 * c, c, 1), norm(c, g), nn.GELU(), zero_init(nn.Conv2d(c, 1, 1)), nn.Sigmoid()
    )
    return weight_map, zero_init(nn.Conv2d(c, s * s, 3, padding=1))
