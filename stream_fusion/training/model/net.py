"""DiffFuseNet: feature-space diffusion fusion of an IR image and a visible luminance image.

Order of the method (see ``docs/model.md`` and ``../shared/docs/method.md``):
D²FE (shared shallow encoder; features treated as x_t at a fixed timestep and denoised deterministically;
weight-map fusion of the two denoised features, projected to image space and added back to both images) ->
EDFD (shared features from both, modality-specific features by subtraction) -> one-level Haar DWT ->
invertible affine coupling of the sub-bands -> bidirectional cross-frequency attention -> inverse Haar -> decoder.

The decoder predicts a residual on top of a global skip: a multi-scale choose-max of the two enhanced images whose
low-pass band is blended by D²FE's weight map (``pyramid.py``; with ``skip_levels: 0`` it is the plain weighted
blend). Every learned residual branch starts at zero, so the untrained network is exactly that classical fusion
(the plain average with ``skip_levels: 0``) and short CPU training only has to learn improvements over it.

``downscale: s`` (lite: 2) runs the whole learned path at 1/s resolution: each image enters space-to-depth
(s x s blocks -> s² channels, lossless) and the enhancement, the decoder's residual and the weight map come back to
full resolution (depth-to-space; the weight map, which blends the smooth low-pass band, bilinearly). Only the
parameter-free skip works at full resolution. Why: on a 2-core CPU the full-resolution feature maps' memory
traffic, not FLOPs, bounded lite at ~6 fps at 640x512. Presets without the key (older checkpoints) get s = 1.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from stream_fusion.training.model.attention import CrossFrequencyAttention
from stream_fusion.training.model.coupling import AffineCoupling
from stream_fusion.training.model.d2fe import D2FE_KEYS, D2FENet, weight_map_and_projection
from stream_fusion.training.model.haar import HaarDWT, HaarIDWT
from stream_fusion.training.model.layers import norm, zero_init
from stream_fusion.training.model.pyramid import MultiScaleSkip

PRESET_KEYS = {
    "name": str,
    **D2FE_KEYS,
    "coupling_blocks": int,
    "coupling_hidden": int,
    "coupling_clamp": float,
    "attention_kernel": int,
    "decoder_width": int,
    "skip_levels": int,
    "downscale": int,
    "brightness_lift": int,
}
# Keys added after checkpoints shipped: a preset (or checkpoint) without them gets the old behaviour.
PRESET_DEFAULTS = {"downscale": 1, "brightness_lift": 0}
LIFT_START = -4.0  # the lift map's initial logit: sigmoid(-4) = 0.018, nearly the network without it


class DiffFuseNet(D2FENet):
    """``forward(ir, vis) -> fused``: N x 1 x H x W floats in 0..1 (vis = visible luma); H, W multiples of
    ``size_multiple`` (4 x ``downscale``: two stride-2 levels in the denoiser at the learned path's resolution)."""

    def __init__(self, preset: dict[str, Any]) -> None:
        super().__init__(preset, preset.get("downscale", PRESET_DEFAULTS["downscale"]))
        c, g, s = preset["channels"], preset["gn_groups"], self.downscale
        # D²FE (encoder and denoiser: D2FENet)
        self.weight_map, self.project = weight_map_and_projection(c, g, s)
        # EDFD
        self.shared = nn.Sequential(nn.Conv2d(2 * c, c, 1), norm(c, g), nn.GELU(), nn.Conv2d(c, c, 3, padding=1))
        self.specific_vis = nn.Sequential(nn.Conv2d(c, c, 1), nn.GELU())
        self.specific_ir = nn.Sequential(nn.Conv2d(c, c, 1), nn.GELU())
        self.merge = nn.Conv2d(3 * c, c, 1)
        # frequency split, refinement, attention
        self.dwt = HaarDWT(c)
        self.idwt = HaarIDWT(c)
        self.coupling = nn.ModuleList(
            AffineCoupling(c, preset["coupling_hidden"], preset["coupling_clamp"])
            for _ in range(preset["coupling_blocks"])
        )
        self.attention = CrossFrequencyAttention(c, preset["attention_kernel"])
        d = preset["decoder_width"]
        self.decoder = nn.Sequential(nn.Conv2d(c, d, 3, padding=1), nn.GELU(), zero_init(nn.Conv2d(d, s * s, 3, padding=1)))
        self.skip = MultiScaleSkip(preset["skip_levels"])
        # Stage I only: reconstructs each source from its denoised features so the encoder cannot collapse.
        self.reconstruct = nn.Conv2d(c, s * s, 3, padding=1)
        # brightness_lift: 1 -> a second D²FE map (same inputs as the weight map) that lifts the skip's low band from
        # the weighted blend toward the brighter source's (issue 15: by day, a dark flat IR frame dims the blend).
        if preset.get("brightness_lift", PRESET_DEFAULTS["brightness_lift"]):
            self.lift = nn.Sequential(nn.Conv2d(2 * c, c, 1), norm(c, g), nn.GELU(), nn.Conv2d(c, 1, 1), nn.Sigmoid())
            nn.init.zeros_(self.lift[3].weight)
            nn.init.constant_(self.lift[3].bias, LIFT_START)
        else:
            self.lift = None

    def fuse_features(
        self, ir: torch.Tensor, vis: torch.Tensor, f_vis: torch.Tensor, f_ir: torch.Tensor
    ) -> torch.Tensor:
        """Everything after the denoiser: weight-map fusion + residual enhancement, EDFD, Haar path, decoder."""
        w = self.weight_map(torch.cat([f_vis, f_ir], dim=1))
        enhancement = self.to_full(self.project(w * f_vis + (1 - w) * f_ir))
        vis_enh, ir_enh = vis + enhancement, ir + enhancement
        common = self.shared(torch.cat([f_vis, f_ir], dim=1))
        spec_vis = self.specific_vis(f_vis - common)
        spec_ir = self.specific_ir(f_ir - common)
        low, high = self.dwt(self.merge(torch.cat([common, spec_vis, spec_ir], dim=1)))
        for block in self.coupling:
            low, high = block(low, high)
        low, high = self.attention(low, high)
        residual = self.to_full(self.decoder(self.idwt(low, high)))
        lift = None if self.lift is None else self.weight_to_full(self.lift(torch.cat([f_vis, f_ir], dim=1)))
        return torch.clamp(self.skip(vis_enh, ir_enh, self.weight_to_full(w), lift) + residual, 0.0, 1.0)

    def forward(self, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
        f_vis, f_ir = self.denoise(self.encoder(self.to_low(torch.cat([vis, ir], dim=0)))).chunk(2, dim=0)
        return self.fuse_features(ir, vis, f_vis, f_ir)

    def training_losses(
        self, ir: torch.Tensor, vis: torch.Tensor, stage: int, weights: dict[str, float] | None = None
    ) -> dict[str, torch.Tensor]:
        """Unsupervised losses of one batch. Stage 1: D²FE alone (diffusion + consistency + reconstruction);
        stage 2: the whole net (fusion losses + the D²FE losses as a regulariser). ``weights`` override defaults."""
        from stream_fusion.training.losses import (
            DEFAULT_WEIGHTS, daylight_loss, fusion_losses, temporal_loss, weighted_total,
        )

        wts = {**DEFAULT_WEIGHTS, **(weights or {})}
        sources = torch.cat([vis, ir], dim=0)
        losses, denoised = self.diffusion_losses(sources, vis_count=ir.shape[0])
        f_vis, f_ir = denoised.chunk(2, dim=0)
        losses["consistency"] = F.l1_loss(f_vis, f_ir)
        diffusion = losses["diff_vis"] + losses["diff_ir"]
        if stage == 1:
            losses["reconstruction"] = self.reconstruction_loss(sources, denoised)
            losses["total"] = diffusion + wts["consistency_stage1"] * losses["consistency"] + losses["reconstruction"]
        elif stage == 2:
            fused = self.fuse_features(ir, vis, f_vis, f_ir)
            losses.update(fusion_losses(fused, ir, vis))
            extra = {}
            if wts["daylight"]:
                extra["daylight"] = losses["daylight"] = daylight_loss(fused, ir, vis)
            if wts["temporal"]:
                extra["temporal"] = losses["temporal"] = temporal_loss(self, fused, ir, vis)
            losses["total"] = weighted_total(
                wts, intensity=losses["intensity"], gradient=losses["gradient"], ssim=losses["ssim"],
                diffusion=diffusion, consistency=losses["consistency"], **extra,
            )
        else:
            raise ValueError(f"stage must be 1 or 2, got {stage}")
        return losses
