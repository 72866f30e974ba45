"""What the model and training tests share: a tiny preset (fast on 2 cores) and one torch thread per test."""
from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

TINY = {
    "name": "tiny", "channels": 4, "gn_groups": 2, "denoiser_width": 4, "time_dim": 8, "timesteps": 50,
    "beta_start": 1e-4, "beta_end": 0.02, "t_infer": 10, "steps": 1, "coupling_blocks": 1, "coupling_hidden": 4,
    "coupling_clamp": 2.0, "attention_kernel": 3, "decoder_width": 4, "skip_levels": 2,
}


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny tensors: thread start-up costs more than it saves, and the CI box is shared."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def fused_under_two_seeds(
    model: torch.nn.Module, ir: torch.Tensor, vis: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's output with the global RNG seeded two different ways: equal when inference draws no noise."""
    with torch.no_grad():
        torch.manual_seed(1)
        a = model(ir, vis)
        torch.manual_seed(2)
        return a, model(ir, vis)


def jittered_lite(jitter: float, seed: int) -> torch.nn.Module:
    """The real lite structure at a few channels, weights jittered: freshly initialised it is the plain average of
    its inputs (zero-init residual branches), which would let export and engine checks pass without exercising the
    graph. Small jitter keeps the output mid-range (large jitter saturates it to 0/255, where colour round trips are
    lossy)."""
    return jittered("lite", {"coupling_hidden": 4}, jitter, seed)


def jittered(preset: str, overrides: dict, jitter: float, seed: int) -> torch.nn.Module:
    """A shipped preset's structure at 4 channels (plus ``overrides``), every weight jittered (see jittered_lite)."""
    from stream_fusion.training.model import build_model, load_preset

    cfg = {**load_preset(preset), "name": preset, "channels": 4, "gn_groups": 2, "denoiser_width": 4, "time_dim": 8,
           "decoder_width": 4, **overrides}
    torch.manual_seed(0)  # the initialisation too, not only the jitter: the test network is the same every run
    model = build_model(cfg).eval()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(jitter * torch.randn(parameter.shape, generator=generator))
    return model
