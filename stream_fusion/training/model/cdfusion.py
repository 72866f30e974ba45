"""Dif-CDFusion: colour infrared-visible fusion that keeps the visible camera's colours (``model: cdfusion``).

The luminance networks (``net.py``) fuse the IR with the visible *luma* and the engine puts the visible chroma back
(the YCbCr route). That keeps Cr/Cb, but not colour as a viewer sees it: a luma change under fixed Cr/Cb shifts hue
and saturation in Lab and clips saturated channels. This network sees and writes colour instead:

1. **Per-channel diffusion features.** Each visible colour channel (B, G, R) and the IR go through the *same*
   shallow encoder and the same deterministic feature denoiser, as four single-channel images: the multi-channel
   spectral distribution is modelled channel by channel, not luminance alone. A 1x1 "spectral" layer then mixes
   the three channel features into one visible feature. The encoder and denoiser are exactly DiffFuseNet's, so a
   luma checkpoint's D²FE warm-starts them (``train.py``'s ``init``).
2. **Common-differential alternate fusion (CDAF).** Blocks alternate between the *differential-mode* component
   ``f_v - f_i`` (where the sensors disagree: thermal targets, texture only daylight shows) and the *common-mode*
   component ``(f_v + f_i) / 2`` (layout both see); each block writes what it found back into both modalities'
   features through its own zero-initialised 1x1 layers, so an untrained block is the identity.
3. **Colour out.** A decoder turns the fused features (with the three per-channel features, which carry the
   colour) into a per-channel B, G, R residual at full resolution. It sits on a fixed colour prior: the same
   multi-scale skip as DiffFuseNet's on luminance (D²FE enhancement and weight map included) gives the new
   lightness, and the prior is the visible colour at that lightness: ``colour_prior: lab`` changes L* and keeps the
   visible a*/b* exactly (``colour.with_lightness_of``); ``ycbcr`` adds the luma change equally to the three
   channels (the luminance models' route, kept for comparison). A per-pixel colour head (1x1 convs at full resolution on the prior, the visible colour
   and the luminance change) learns the correction that keeps hue and saturation where the luminance moved: adding
   the same amount to B, G and R (the YCbCr route) shifts a* / b* and desaturates brightened pixels, and clips
   saturated ones. The head's correction is made luma-neutral (its BT.601 luma is subtracted from each channel):
   it may only move colour, never lightness, which is the fusion's job; for the same reason the chroma loss takes
   the output's luma as a constant (``training_losses``). The untrained network is exactly its prior over the
   classical fusion; training with a Lab chroma loss moves it off that where colour suffers.

Inputs: ``ir`` N x 1 x H x W and ``vis`` N x 3 x H x W **BGR**, floats in 0..1; output N x 3 x H x W BGR in 0..1.
A gray visible camera is fed as three equal channels. H, W multiples of ``size_multiple`` (4 x ``downscale``).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from stream_fusion.training.model.colour import with_lightness_of
from stream_fusion.training.model.d2fe import D2FE_KEYS, D2FENet, weight_map_and_projection
from stream_fusion.training.model.layers import DepthToSpace, norm, zero_init
from stream_fusion.training.model.pyramid import MultiScaleSkip

PRESET_KEYS = {
    "name": str,
    "model": str,
    **D2FE_KEYS,
    "cdaf_blocks": int,
    "decoder_width": int,
    "colour_head_width": int,
    "colour_prior": str,
    "skip_levels": int,
    "downscale": int,
}
# BT.601 luma of a BGR image: the same Y as OpenCV's YCrCb, so the colour prior is exactly the engine's YCbCr route.
LUMA_BGR = (0.114, 0.587, 0.299)


class CDAFBlock(nn.Module):
    """One block of the alternate fusion: reads the differential- or the common-mode component of the two features
    and adds what it extracts to each of them (separate zero-initialised outputs: the sign and amount each modality
    takes may differ)."""

    def __init__(self, channels: int, groups: int, mode: str) -> None:
        super().__init__()
        if mode not in ("differential", "common"):
            raise ValueError(f"CDAF mode must be differential or common, got {mode!r}")
        self.mode = mode
        self.body = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), norm(channels, groups), nn.GELU())
        # Channel gate from the component's global statistics: which feature channels this component matters in.
        self.gate = nn.Sequential(nn.Conv2d(channels, channels, 1), nn.Sigmoid())
        self.to_vis = zero_init(nn.Conv2d(channels, channels, 1))
        self.to_ir = zero_init(nn.Conv2d(channels, channels, 1))

    def forward(self, f_vis: torch.Tensor, f_ir: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        component = f_vis - f_ir if self.mode == "differential" else 0.5 * (f_vis + f_ir)
        h = self.body(component)
        h = h * self.gate(h.mean(dim=(2, 3), keepdim=True))
        return f_vis + self.to_vis(h), f_ir + self.to_ir(h)


class CDFusionNet(D2FENet):
    """``forward(ir, vis_bgr) -> fused_bgr``; see the module docstring for the structure."""

    vis_channels = 3

    def __init__(self, preset: dict[str, Any]) -> None:
        super().__init__(preset, preset["downscale"])
        c, g, s = preset["channels"], preset["gn_groups"], self.downscale
        if preset["colour_prior"] not in ("lab", "ycbcr"):
            raise ValueError(f"colour_prior must be lab or ycbcr, got {preset['colour_prior']!r}")
        self.colour_prior = preset["colour_prior"]
        if preset["cdaf_blocks"] < 2:
            raise ValueError("cdaf_blocks must be >= 2 (at least one differential and one common block)")
        self.colour_to_full = DepthToSpace(s, channels=3) if s > 1 else nn.Identity()
        # D²FE, per channel (encoder and denoiser: D2FENet, shared with DiffFuseNet, whose checkpoints warm-start it)
        self.spectral = nn.Sequential(nn.Conv2d(3 * c, c, 1), norm(c, g), nn.GELU())
        self.weight_map, self.project = weight_map_and_projection(c, g, s)
        # CDAF: differential, common, differential, ...
        self.cdaf = nn.ModuleList(
            CDAFBlock(c, g, "differential" if k % 2 == 0 else "common") for k in range(preset["cdaf_blocks"])
        )
        self.merge = nn.Sequential(nn.Conv2d(5 * c, c, 1), norm(c, g), nn.GELU())
        d = preset["decoder_width"]
        self.decoder = nn.Sequential(
            nn.Conv2d(c, d, 3, padding=1), nn.GELU(), zero_init(nn.Conv2d(d, 3 * s * s, 3, padding=1))
        )
        h = preset["colour_head_width"]
        self.colour_head = nn.Sequential(nn.Conv2d(7, h, 1), nn.GELU(), zero_init(nn.Conv2d(h, 3, 1)))
        self.skip = MultiScaleSkip(preset["skip_levels"])
        # Stage I only: reconstructs each single-channel source from its denoised features (as DiffFuseNet's).
        self.reconstruct = nn.Conv2d(c, s * s, 3, padding=1)

    @staticmethod
    def split_sources(ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
        """B, G, R and IR as four single-channel batches stacked along N (constant slices, one Concat)."""
        return torch.cat([vis[:, 0:1], vis[:, 1:2], vis[:, 2:3], ir], dim=0)

    @staticmethod
    def luma(vis: torch.Tensor) -> torch.Tensor:
        b, g, r = LUMA_BGR
        return b * vis[:, 0:1] + g * vis[:, 1:2] + r * vis[:, 2:3]

    def fuse_features(self, ir: torch.Tensor, vis: torch.Tensor, denoised: torch.Tensor) -> torch.Tensor:
        """Everything after the denoiser; ``denoised`` is the B, G, R, IR features stacked along N."""
        f_b, f_g, f_r, f_ir = denoised.chunk(4, dim=0)
        f_vis = self.spectral(torch.cat([f_b, f_g, f_r], dim=1))
        w = self.weight_map(torch.cat([f_vis, f_ir], dim=1))
        enhancement = self.to_full(self.project(w * f_vis + (1 - w) * f_ir))
        vis_y = self.luma(vis)
        fused_y = self.skip(vis_y + enhancement, ir + enhancement, self.weight_to_full(w))
        change = fused_y - vis_y
        prior = vis + change  # the YCbCr route: the same luma change in every channel
        if self.colour_prior == "lab":  # the same lightness, the visible a*/b*
            prior = with_lightness_of(vis, prior.clamp(0.0, 1.0))
        a, b = f_vis, f_ir
        for block in self.cdaf:
            a, b = block(a, b)
        fused = self.merge(torch.cat([a, b, f_b, f_g, f_r], dim=1))
        # The head reads the luma change as given (detached): its loss must not reach back into lightness.
        colour = self.colour_head(torch.cat([prior, vis, change], dim=1).detach())
        colour = colour - self.luma(colour)  # chroma only: the correction's own luma is removed from every channel
        return torch.clamp(prior + self.colour_to_full(self.decoder(fused)) + colour, 0.0, 1.0)

    def forward(self, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
        return self.fuse_features(ir, vis, self.denoise(self.encoder(self.to_low(self.split_sources(ir, vis)))))

    def training_losses(
        self, ir: torch.Tensor, vis: torch.Tensor, stage: int, weights: dict[str, float] | None = None
    ) -> dict[str, torch.Tensor]:
        """Stage 1: per-channel D²FE (noise prediction on all four sources, IR-visible consistency, reconstruction);
        stage 2: the luminance fusion losses on the output's luma, the Lab chroma loss against the visible image,
        the D²FE losses as a regulariser, and (where weighted) the daylight term on the luma and the temporal term
        on the colour frames."""
        from stream_fusion.training.losses import (
            DEFAULT_WEIGHTS, chroma_loss, daylight_loss, fusion_losses, temporal_loss, weighted_total,
        )

        wts = {**DEFAULT_WEIGHTS, **(weights or {})}
        n = ir.shape[0]
        sources = self.split_sources(ir, vis)
        losses, denoised = self.diffusion_losses(sources, vis_count=3 * n)
        f_ir = denoised[3 * n :]
        losses["consistency"] = sum(F.l1_loss(f, f_ir) for f in denoised[: 3 * n].chunk(3, dim=0)) / 3
        diffusion = losses["diff_vis"] + losses["diff_ir"]
        if stage == 1:
            losses["reconstruction"] = self.reconstruction_loss(sources, denoised)
            losses["total"] = diffusion + wts["consistency_stage1"] * losses["consistency"] + losses["reconstruction"]
        elif stage == 2:
            fused = self.fuse_features(ir, vis, denoised)
            losses.update(fusion_losses(self.luma(fused), ir, self.luma(vis)))
            # The chroma loss sees the output's lightness as a constant: a*/b* error grows with the luma change on
            # the YCbCr route, and left free it taught the network to brighten less (VIF 0.795 -> 0.755 on
            # RoadScene-50) instead of correcting colour. Lightness answers to the fusion losses alone.
            y = self.luma(fused)
            losses["chroma"] = chroma_loss(fused - y + y.detach(), vis)
            extra = {}
            if wts["daylight"]:  # on the luma, as the evaluation's daylight measure reads a colour output
                extra["daylight"] = losses["daylight"] = daylight_loss(y, ir, self.luma(vis))
            if wts["temporal"]:  # the colour frames themselves: flicker in any channel shows
                extra["temporal"] = losses["temporal"] = temporal_loss(self, fused, ir, vis)
            losses["total"] = weighted_total(
                wts, intensity=losses["intensity"], gradient=losses["gradient"], ssim=losses["ssim"],
                chroma=losses["chroma"], diffusion=diffusion, consistency=losses["consistency"], **extra,
            )
        else:
            raise ValueError(f"stage must be 1 or 2, got {stage}")
        return losses
