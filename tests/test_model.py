"""DiffFuseNet: exact Haar and coupling inverses, diffusion statistics, determinism, any-size fusion, checkpoints.

Tiny widths keep every test well under a second; the shipped checkpoints are checked on real TNO data.
"""
from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from stream_fusion import DATA_DIR, WEIGHTS_DIR
from stream_fusion.errors import StreamFusionError
from stream_fusion.training.model import build_model, load_checkpoint, load_preset, save_checkpoint
from stream_fusion.training.model.coupling import AffineCoupling
from stream_fusion.training.model.haar import HaarDWT, HaarIDWT
from stream_fusion.training.model.layers import DepthToSpace, SpaceToDepth, Upsample2x
from stream_fusion.training.model.pyramid import MultiScaleSkip
from stream_fusion.training.model.schedule import NoiseSchedule
from stream_fusion.training.model.torch_engine import TorchEngine, fuse_tensors
from tiny_network import TINY, fused_under_two_seeds, one_thread  # noqa: F401  (one_thread: autouse fixture)

DATA = DATA_DIR


def randomized(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every zero-initialised residual branch random weights, so tests exercise the whole network."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.abs().sum() == 0:
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
    return model


def test_haar_round_trip_is_exact_and_bands_are_right() -> None:
    x = torch.rand(2, 3, 8, 12, dtype=torch.float64).float()
    dwt, idwt = HaarDWT(3), HaarIDWT(3)
    low, high = dwt(x)
    assert low.shape == (2, 3, 4, 6) and high.shape == (2, 9, 4, 6)
    assert torch.allclose(idwt(low, high), x, atol=1e-6)
    # orthonormal: energy is preserved, and a constant image has LL = 2 * value and no detail
    assert torch.allclose(low.square().sum() + high.square().sum(), x.square().sum(), rtol=1e-5)
    low_c, high_c = dwt(torch.full((1, 3, 4, 4), 0.25))
    assert torch.allclose(low_c, torch.full_like(low_c, 0.5)) and high_c.abs().max() == 0
    # a horizontal edge (rows differ) lands in LH, the first third of the high bands
    edge = torch.zeros(1, 1, 4, 4)
    edge[:, :, 0::2] = 1.0
    _, high_e = HaarDWT(1)(edge)
    assert high_e[:, 0].abs().min() == 1.0 and high_e[:, 1:].abs().max() == 0


def test_coupling_inverse_reconstructs_its_input() -> None:
    block = randomized(AffineCoupling(4, 8, clamp=2.0), seed=1)
    z1, z2 = torch.randn(2, 4, 6, 6), torch.randn(2, 12, 6, 6)
    y1, y2 = block(z1, z2)
    assert (y1 - z1).abs().mean() > 0.01 and (y2 - z2).abs().mean() > 0.01  # it really transforms
    r1, r2 = block.inverse(y1, y2)
    assert torch.allclose(r1, z1, atol=1e-5) and torch.allclose(r2, z2, atol=1e-5)


def test_untrained_coupling_is_identity() -> None:
    z1, z2 = torch.randn(1, 4, 4, 4), torch.randn(1, 12, 4, 4)
    y1, y2 = AffineCoupling(4, 8)(z1, z2)
    assert torch.equal(y1, z1) and torch.equal(y2, z2)


def test_schedule_values_and_forward_diffusion_statistics() -> None:
    s = NoiseSchedule(50, 1e-4, 0.02)
    assert math.isclose(float(s.betas[0]), 1e-4) and math.isclose(float(s.betas[-1]), 0.02)
    abar = s.alphas_cumprod
    assert bool((abar[1:] < abar[:-1]).all()) and math.isclose(float(abar[0]), 1 - 1e-4)
    x0 = torch.full((20000, 1, 4, 4), 0.7)
    gen = torch.Generator().manual_seed(0)
    noise = torch.randn(x0.shape, generator=gen)
    for t in (0, 10, 49):
        xt = s.add_noise(x0, noise, torch.full((x0.shape[0],), t))
        mean, std = xt.mean().item(), xt.std().item()
        assert abs(mean - math.sqrt(s.abar(t)) * 0.7) < 0.01
        assert abs(std - math.sqrt(1 - s.abar(t))) < 0.01 * max(1.0, math.sqrt(1 - s.abar(t)) * 10)
        # with the true noise, the deterministic estimate recovers x0
        assert torch.allclose(s.predict_x0(xt, noise, t), x0, atol=1e-4)
    assert s.inference_timesteps(10, 1) == [(10, -1)]
    assert s.inference_timesteps(10, 2) == [(10, 5), (5, -1)]


def test_untrained_network_is_its_global_skip() -> None:
    ir, vis = torch.rand(1, 1, 16, 20), torch.rand(1, 1, 16, 20)
    with torch.no_grad():
        plain = build_model({**TINY, "skip_levels": 0}).eval()
        assert torch.allclose(plain(ir, vis), (ir + vis) / 2, atol=1e-6)
        skip = MultiScaleSkip(TINY["skip_levels"])(vis, ir, torch.full_like(ir, 0.5)).clamp(0, 1)
        assert torch.allclose(build_model(TINY).eval()(ir, vis), skip, atol=1e-6)


def test_skip_keeps_the_stronger_detail_and_reconstructs_identical_inputs() -> None:
    skip = MultiScaleSkip(4)
    x = torch.rand(1, 1, 40, 50)
    half = torch.full_like(x, 0.5)
    # identical sources: the bands telescope back to the image exactly
    assert torch.allclose(skip(x, x, half), x, atol=1e-5)
    # a flat IR frame has no detail: all of the visible detail survives, the low band is their blend
    flat = torch.full_like(x, 0.2)
    low = x
    for level in range(4):
        low = skip.blur(low, 2**level)
    assert torch.allclose(skip(x, flat, half), x - low + 0.5 * low + 0.1, atol=1e-5)
    # the learned weight moves only the low band: all-visible weight gives back the visible image
    assert torch.allclose(skip(x, flat, torch.ones_like(x)), x, atol=1e-5)


def test_inference_is_deterministic_and_in_range() -> None:
    model = randomized(build_model(TINY)).eval()
    ir, vis = torch.rand(2, 1, 24, 32), torch.rand(2, 1, 24, 32)
    a, b = fused_under_two_seeds(model, ir, vis)
    assert torch.equal(a, b)
    assert a.shape == (2, 1, 24, 32) and a.min() >= 0 and a.max() <= 1
    assert (a - (ir + vis) / 2).abs().mean() > 1e-3  # the randomised branches change the output


@pytest.mark.parametrize("size", [(17, 23), (5, 7), (32, 48)])
def test_any_size_via_padding(size: tuple[int, int]) -> None:
    model = randomized(build_model(TINY)).eval()
    ir, vis = torch.rand(1, 1, *size), torch.rand(1, 1, *size)
    fused = fuse_tensors(model, ir, vis)
    assert fused.shape == (1, 1, *size)
    assert torch.isfinite(fused).all()


def test_presets_build_with_the_documented_structure() -> None:
    for name in ("lite", "base"):
        preset = load_preset(name)
        model = build_model(name)
        assert model.size_multiple == 4 * preset.get("downscale", 1) and preset["steps"] == 1
        assert model.encoder.body[0][0].out_channels == preset["channels"]
    lite, base = build_model("lite"), build_model("base")
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(lite) < count(base) / 4


def test_bad_presets_are_one_line_errors() -> None:
    with pytest.raises(StreamFusionError, match="unknown model preset 'huge'"):
        build_model("huge")
    with pytest.raises(StreamFusionError, match="missing key 'channels'"):
        build_model({k: v for k, v in TINY.items() if k != "channels"})
    with pytest.raises(StreamFusionError, match="'steps' must be int"):
        build_model({**TINY, "steps": "one"})
    with pytest.raises(StreamFusionError, match="unknown model preset key 'width'"):
        build_model({**TINY, "width": 3})


def test_space_to_depth_round_trip_and_bilinear_upsampling_are_exact() -> None:
    x = torch.rand(2, 1, 6, 10)
    blocks = SpaceToDepth(2)(x)
    assert blocks.shape == (2, 4, 3, 5)
    assert torch.equal(blocks[:, 1], x[:, 0, 0::2, 1::2]) and torch.equal(blocks[:, 2], x[:, 0, 1::2, 0::2])
    assert torch.equal(DepthToSpace(2)(blocks), x)
    low = torch.rand(2, 1, 5, 7)
    expected = torch.nn.functional.interpolate(low, scale_factor=2.0, mode="bilinear", align_corners=False)
    assert torch.allclose(Upsample2x()(low), expected, atol=1e-6)


def test_half_resolution_network_fuses_any_size_and_starts_at_its_skip() -> None:
    """``downscale: 2``: learned path at half resolution, parameter-free skip at full resolution."""
    half = {**TINY, "downscale": 2}
    ir, vis = torch.rand(1, 1, 16, 24), torch.rand(1, 1, 16, 24)
    with torch.no_grad():
        untrained = build_model(half).eval()
        assert untrained.size_multiple == 8
        assert untrained.encoder.body[0][0].in_channels == 4  # 2x2 blocks of one image as channels
        skip = MultiScaleSkip(TINY["skip_levels"])(vis, ir, torch.full_like(ir, 0.5)).clamp(0, 1)
        assert torch.allclose(untrained(ir, vis), skip, atol=1e-6)
        model = randomized(build_model(half)).eval()
        for size in [(17, 23), (5, 7), (40, 48)]:
            fused = fuse_tensors(model, torch.rand(1, 1, *size), torch.rand(1, 1, *size))
            assert fused.shape == (1, 1, *size) and torch.isfinite(fused).all()
        out = model(ir, vis)
        assert (out - skip).abs().mean() > 1e-3  # the learned branches reach the full-resolution output
    for stage in (1, 2):
        losses = model.train().training_losses(ir.repeat(2, 1, 1, 1), vis.repeat(2, 1, 1, 1), stage)
        assert torch.isfinite(losses["total"])
    with pytest.raises(StreamFusionError, match="downscale must be 1"):
        build_model({**TINY, "downscale": 3})


def test_presets_without_newer_keys_keep_the_old_network() -> None:
    """Checkpoints written before ``downscale`` existed carry presets without it: they load at full resolution,
    and their preset compares equal to the rebuilt network's (fine-tuning from them checks that)."""
    assert "downscale" not in TINY
    model = build_model(TINY)
    assert model.size_multiple == 4 and model.preset == TINY
    assert build_model({**TINY, "downscale": 1}).state_dict().keys() == model.state_dict().keys()


def test_checkpoint_round_trip_gives_identical_outputs(tmp_path: Path) -> None:
    model = randomized(build_model(TINY)).eval()
    path = tmp_path / "m.pt"
    save_checkpoint(path, model, TINY, {"epochs": 3, "data": "test"})
    loaded, preset = load_checkpoint(path)
    assert preset == TINY and not loaded.training
    ir, vis = torch.rand(1, 1, 16, 16), torch.rand(1, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(model(ir, vis), loaded(ir, vis))


def test_bad_checkpoints_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(StreamFusionError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"this is not a checkpoint")
    with pytest.raises(StreamFusionError, match="not a readable checkpoint"):
        load_checkpoint(garbage)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    with pytest.raises(StreamFusionError, match="not a stream_fusion DiffFuseNet checkpoint"):
        load_checkpoint(foreign)
    mismatched = tmp_path / "mismatched.pt"
    save_checkpoint(mismatched, build_model(TINY), {**TINY, "channels": 8}, {})
    with pytest.raises(StreamFusionError, match="does not match its preset"):
        load_checkpoint(mismatched)


def test_torch_engine_keeps_colour_and_gray(tmp_path: Path) -> None:
    path = tmp_path / "m.pt"
    save_checkpoint(path, randomized(build_model(TINY)).eval(), TINY, {})
    engine = TorchEngine(path)
    rng = np.random.default_rng(0)
    ir = rng.integers(0, 256, (31, 45), dtype=np.uint8)
    gray = rng.integers(0, 256, (31, 45), dtype=np.uint8)
    assert engine.fuse(ir, gray).shape == (31, 45)
    ycrcb = np.dstack([gray, np.full_like(gray, 150), np.full_like(gray, 110)])  # a reddish scene
    colour = cv2.cvtColor(ycrcb, cv2.COLOR_YCrCb2BGR)
    fused = engine.fuse(ir, colour)
    assert fused.shape == (31, 45, 3) and fused.dtype == np.uint8
    chroma_in = cv2.cvtColor(colour, cv2.COLOR_BGR2YCrCb)[:, :, 1:].astype(int)
    out = cv2.cvtColor(fused, cv2.COLOR_BGR2YCrCb).astype(int)
    in_gamut = (out[:, :, 0] > 40) & (out[:, :, 0] < 215)  # very dark / bright pixels clip chroma in BGR
    assert in_gamut.sum() > 100
    assert np.abs(out[:, :, 1:] - chroma_in)[in_gamut].mean() < 2  # visible chroma kept (up to BGR rounding)
    assert np.abs(out[:, :, 1:] - chroma_in)[in_gamut].mean() < 2


@pytest.mark.parametrize("preset", ["lite", "base"])
def test_shipped_checkpoint_beats_the_average_on_a_real_frame(preset: str) -> None:
    """The shipped weights are trained: on a real demo frame they keep more edges and information than averaging."""
    from stream_fusion import DEMO_IR, DEMO_VIS
    from stream_fusion.evaluate.metrics import qabf, vif

    path = WEIGHTS_DIR / f"difffuse_{preset}.pt"
    model, cfg = load_checkpoint(path)
    assert cfg["name"] == preset
    meta = torch.load(path, weights_only=True)["meta"]
    assert meta["epochs"] > 0 and "shared/data/train" in meta["data"]
    name = sorted(p.name for p in DEMO_IR.iterdir())[0]
    ir = cv2.imread(str(DEMO_IR / name), cv2.IMREAD_GRAYSCALE)
    vis = cv2.imread(str(DEMO_VIS / name), cv2.IMREAD_GRAYSCALE)
    engine = TorchEngine(path)
    fused = engine.fuse(ir, vis)
    assert np.array_equal(fused, engine.fuse(ir, vis))
    average = ((ir.astype(np.uint16) + vis + 1) // 2).astype(np.uint8)
    assert qabf(fused, ir, vis) > qabf(average, ir, vis) + 0.1
    assert vif(fused, ir, vis) > vif(average, ir, vis)


def test_the_network_runs_in_a_lower_precision_as_a_gpu_benchmark_runs_it() -> None:
    """``model.half()`` on a GPU (the benchmark's PyTorch fp16 rows) failed: the timestep embedding stayed float32
    into a half-precision MLP. bfloat16 on the CPU takes the same path; the output matches float32 to its precision."""
    torch.manual_seed(0)
    model = randomized(build_model(TINY)).eval()
    ir, vis = torch.rand(1, 1, 32, 48), torch.rand(1, 1, 32, 48)
    with torch.no_grad():
        reference = model(ir, vis)
        low = model.to(torch.bfloat16)(ir.to(torch.bfloat16), vis.to(torch.bfloat16))
    assert low.dtype == torch.bfloat16 and low.shape == reference.shape
    assert (low.float() - reference).abs().max() < 0.05
