"""The forward-diffusion noise schedule, as its own small object (the diffusers ``DDPMScheduler`` idea).

Keeping it apart from the network means the denoiser never hard-codes alphas: training samples ``x_t`` with
:meth:`NoiseSchedule.add_noise`, and inference turns a noise estimate back into features with
:meth:`NoiseSchedule.step` at *fixed integer* timesteps, whose coefficients are plain Python floats so an ONNX
export folds them into constants.
"""
from __future__ import annotations

import torch


class NoiseSchedule:
    """Linear-beta DDPM schedule over ``timesteps`` steps (DiffFuseNet: T = 50, beta 1e-4 .. 0.02)."""

    def __init__(self, timesteps: int = 50, beta_start: float = 1e-4, beta_end: float = 0.02) -> None:
        if timesteps < 1 or not 0 < beta_start <= beta_end < 1:
            raise ValueError(f"bad schedule: T={timesteps}, beta {beta_start}..{beta_end}")
        self.timesteps = timesteps
        # float64 for the cumulative product, so long schedules do not drift; used as float32 tensors or floats.
        self.betas = torch.linspace(beta_start, beta_end, timesteps, dtype=torch.float64)
        self.alphas_cumprod = torch.cumprod(1.0 - self.betas, dim=0)

    def abar(self, t: int) -> float:
        """alpha-bar at an integer step; ``t = -1`` means "clean" (alpha-bar 1), the end of a reverse run."""
        return 1.0 if t < 0 else float(self.alphas_cumprod[t])

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps`` with one timestep per batch item (``t``: N ints)."""
        abar = self.alphas_cumprod.to(x0.device)[t].to(x0.dtype).view(-1, *([1] * (x0.dim() - 1)))
        return abar.sqrt() * x0 + (1.0 - abar).sqrt() * noise

    def predict_x0(self, x_t: torch.Tensor, eps: torch.Tensor, t: int) -> torch.Tensor:
        """Deterministic one-step estimate of the clean signal from ``x_t`` and the predicted noise."""
        abar = self.abar(t)
        return (x_t - (1.0 - abar) ** 0.5 * eps) / abar**0.5

    def step(self, x_t: torch.Tensor, eps: torch.Tensor, t: int, t_prev: int) -> torch.Tensor:
        """One DDIM step with eta = 0 (no noise injected) from ``t`` to ``t_prev`` (``-1``: straight to x0)."""
        x0 = self.predict_x0(x_t, eps, t)
        if t_prev < 0:
            return x0
        abar_prev = self.abar(t_prev)
        return abar_prev**0.5 * x0 + (1.0 - abar_prev) ** 0.5 * eps

    def inference_timesteps(self, t_start: int, steps: int) -> list[tuple[int, int]]:
        """The fixed ``(t, t_prev)`` pairs of a ``steps``-step deterministic run from ``t_start`` down to clean."""
        if not 0 <= t_start < self.timesteps or steps < 1:
            raise ValueError(f"t_start must be in 0..{self.timesteps - 1} and steps >= 1, got {t_start}, {steps}")
        ts = [round(t_start * (1 - k / steps)) for k in range(steps)]
        return list(zip(ts, ts[1:] + [-1]))
