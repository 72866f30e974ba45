"""Dif-CDFusion, the colour model: BGR shapes and range, determinism, the untrained network is the YCbCr route of its
luminance prior, per-channel features, the common/differential blocks, the Lab chroma loss against OpenCV, colour
training pairs from ../shared/data/train, losses that go down, the D²FE warm start and checkpoints.

A tiny preset (4 feature channels, 2 CDAF blocks) keeps the whole file well under 30 s on 2 cores; the shipped
``cdfusion`` preset is built where its structure is the point.
"""
from __future__ import annotations

import csv
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

from stream_fusion import DATA_DIR, WEIGHTS_DIR
from stream_fusion.config import load_yaml
from stream_fusion.training.data import PairCrops, list_pairs
from stream_fusion.errors import StreamFusionError
from stream_fusion.training.losses import chroma_loss
from stream_fusion.training.model.colour import bgr_to_lab
from stream_fusion.training.model import build_model, load_checkpoint, load_preset, save_checkpoint
from stream_fusion.training.model.cdfusion import CDAFBlock, CDFusionNet
from stream_fusion.training.model.pyramid import MultiScaleSkip
from stream_fusion.training.model.torch_engine import fuse_tensors
from stream_fusion.training.train import D2FE_MODULES, init_from, parse_args, train
from tiny_network import TINY, fused_under_two_seeds, one_thread  # noqa: F401  (one_thread: autouse fixture)

REPO = Path(__file__).resolve().parents[1]
DATA = DATA_DIR
TRAIN = DATA / "train"

# The cdfusion structure at tiny widths. Its D²FE widths (channels, gn_groups, denoiser_width, time_dim, downscale)
# are those of TINY_LUMA, so a TINY_LUMA checkpoint warm-starts it, as lite's does the shipped cdfusion preset.
CD_TINY = {
    "name": "cdtiny", "model": "cdfusion", "channels": 4, "gn_groups": 2, "denoiser_width": 4, "time_dim": 8,
    "timesteps": 50, "beta_start": 1e-4, "beta_end": 0.02, "t_infer": 10, "steps": 1, "cdaf_blocks": 2,
    "decoder_width": 4, "colour_head_width": 4, "colour_prior": "ycbcr", "skip_levels": 2, "downscale": 2,
}
TINY_LUMA = {**TINY, "name": "tinyluma", "downscale": 2}
LUMA_BGR = torch.tensor([0.114, 0.587, 0.299]).view(1, 3, 1, 1)  # BT.601, OpenCV's YCrCb Y


def randomized(model: torch.nn.Module, scale: float = 0.1, seed: int = 0) -> torch.nn.Module:
    """Random weights in every zero-initialised branch (decoder, CDAF outputs, weight map, projection), so a test
    exercises the learned paths instead of the untrained network's prior."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.abs().sum() == 0:
                p.copy_(scale * torch.randn(p.shape, generator=gen))
    return model


def pairs(n: int, h: int, w: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, h, w, generator=gen), torch.rand(n, 3, h, w, generator=gen)


@pytest.fixture(scope="module")
def colour_crops() -> PairCrops:
    """All of ../shared/data/train, colour pairs only (about 2 s: every PNG is decoded once)."""
    return PairCrops(TRAIN, crop=32, colour=True)


@pytest.mark.parametrize("downscale", [1, 2])
def test_bgr_in_bgr_out_at_the_size_multiple_batch_and_range(downscale: int) -> None:
    model = randomized(build_model({**CD_TINY, "downscale": downscale})).eval()
    assert isinstance(model, CDFusionNet) and model.size_multiple == 4 * downscale
    m = model.size_multiple
    with torch.no_grad():
        for n, h, w in [(3, 2 * m, 3 * m), (1, m, m), (2, 5 * m, 4 * m)]:
            ir, vis = pairs(n, h, w)
            fused = model(ir, vis)
            assert fused.shape == (n, 3, h, w) and fused.dtype == torch.float32
            assert fused.min() >= 0 and fused.max() <= 1
        # batch members are fused independently: one frame alone gives the same output as inside the batch
        ir, vis = pairs(3, 2 * m, 3 * m)
        assert torch.allclose(model(ir[1:2], vis[1:2]), model(ir, vis)[1:2], atol=1e-6)
        # black/white inputs through strong random weights: still finite, within 0..1 and not collapsed to one value
        # (std above 0.025 for each of 30 seeds of the initial weights; saturation leaves most pixels at 0 or 1)
        strong = randomized(build_model({**CD_TINY, "downscale": downscale}), scale=1.0).eval()
        gen = torch.Generator().manual_seed(11)
        ir = torch.randint(0, 2, (2, 1, 2 * m, 2 * m), generator=gen).float()
        vis = torch.randint(0, 2, (2, 3, 2 * m, 2 * m), generator=gen).float()
        fused = strong(ir, vis)
        assert torch.isfinite(fused).all() and fused.min() >= 0 and fused.max() <= 1 and fused.std() > 0.01
        # any size through the same padding helper the torch engine uses
        for size in [(17, 23), (5, 7)]:
            ir, vis = pairs(1, *size)
            fused = fuse_tensors(model, ir, vis)
            assert fused.shape == (1, 3, *size) and torch.isfinite(fused).all()


def test_inference_is_deterministic() -> None:
    """The reverse diffusion at inference draws no noise: the global RNG state does not matter."""
    model = randomized(build_model(CD_TINY)).eval()
    ir, vis = pairs(2, 16, 24)
    a, b = fused_under_two_seeds(model, ir, vis)
    assert torch.equal(a, b)
    untrained = build_model(CD_TINY).eval()
    with torch.no_grad():
        assert (a - untrained(ir, vis)).abs().mean() > 1e-3  # the randomised branches do reach the output


def test_untrained_network_is_the_ycbcr_route_of_its_luminance_prior() -> None:
    """Fresh weights: the decoder's last layer, the projection and the weight map's last layer are zero-initialised,
    so the colour residual is 0, the D²FE enhancement is 0 and the weight map is sigmoid(0) = 0.5. What remains is the
    prior: the multi-scale skip of the visible luma and the IR at weight 0.5, with its luma change added equally to
    B, G and R, which is exactly what replacing Y under fixed Cr/Cb does (OpenCV's YCrCb route)."""
    model = build_model(CD_TINY).eval()
    ir, vis = pairs(2, 32, 48, seed=3)
    vis[0, :, :8] = 0.97  # bright visible under random IR: part of the prior leaves 0..1 and must be clipped
    with torch.no_grad():
        out = model(ir, vis)
        vis_y = (vis * LUMA_BGR).sum(dim=1, keepdim=True)
        fused_y = MultiScaleSkip(CD_TINY["skip_levels"])(vis_y, ir, torch.full_like(ir, 0.5))
    expected = (vis + (fused_y - vis_y)).clamp(0, 1)
    assert ((vis + fused_y - vis_y) > 1).sum() > 20  # the clipping is exercised
    assert torch.allclose(out, expected, atol=1e-6)
    for n in range(2):
        ycrcb = cv2.cvtColor(vis[n].permute(1, 2, 0).numpy(), cv2.COLOR_BGR2YCrCb)
        assert np.abs(ycrcb[:, :, 0] - vis_y[n, 0].numpy()).max() < 1e-6  # the same Y as OpenCV's
        ycrcb[:, :, 0] = fused_y[n, 0].numpy()
        route = np.clip(cv2.cvtColor(ycrcb, cv2.COLOR_YCrCb2BGR), 0, 1)
        # OpenCV's inverse coefficients are rounded (1.403, 0.714, ...): measured max 2.7e-4, 0.07 of an 8-bit level
        assert np.abs(route - out[n].permute(1, 2, 0).numpy()).max() < 1e-3


def test_untrained_network_keeps_a_gray_visible_image_gray() -> None:
    model = build_model(CD_TINY).eval()
    ir, vis = pairs(2, 16, 24, seed=4)
    gray = vis[:, :1].repeat(1, 3, 1, 1)  # a gray camera is fed as three equal channels
    with torch.no_grad():
        out = model(ir, gray)
    assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 1], out[:, 2])
    assert (out[:, 0] - gray[:, 0]).abs().mean() > 0.01  # and the IR did change it


def test_features_are_computed_per_colour_channel() -> None:
    """The shared encoder sees B, G, R and IR as four single-channel images; and two visible images with the same
    luma but different chroma are fused differently than a luma-only network (plus the YCbCr route) could."""
    model = randomized(build_model(CD_TINY)).eval()
    ir, vis = pairs(2, 16, 24, seed=5)
    seen = []
    handle = model.encoder.register_forward_hook(lambda module, args, output: seen.append(args[0]))
    with torch.no_grad():
        out = model(ir, vis)
    handle.remove()
    (encoded,) = seen
    assert encoded.shape == (4 * 2, 4, 8, 12)  # 2x2 space-to-depth of 4 single-channel batches
    for k, source in enumerate([vis[:, 0:1], vis[:, 1:2], vis[:, 2:3], ir]):
        assert torch.equal(encoded[2 * k : 2 * k + 2], model.to_low(source))
    # same luma, other chroma: blue up, red down by the amounts that cancel in Y
    shift = torch.tensor([0.15, 0.0, -0.15 * 0.114 / 0.299]).view(1, 3, 1, 1)
    vis = 0.2 + 0.6 * vis
    other = vis + shift
    assert ((other - vis) * LUMA_BGR).sum(dim=1).abs().max() < 1e-6
    with torch.no_grad():
        out, out_other = model(ir, vis), model(ir, other)
        # a luma-only fusion under the YCbCr route gives the same luma change to both: outputs differ by the shift
        untrained = build_model(CD_TINY).eval()
        plain, plain_other = untrained(ir, vis), untrained(ir, other)
    inside = lambda *xs: torch.stack([(x > 0) & (x < 1) for x in xs]).all(0)  # noqa: E731  (clipping aside)
    mask = inside(plain, plain_other)
    assert mask.float().mean() > 0.5
    assert torch.allclose((plain_other - plain)[mask], (other - vis)[mask], atol=1e-5)
    mask = inside(out, out_other)
    assert mask.float().mean() > 0.5 and ((out_other - out) - (other - vis))[mask].abs().mean() > 1e-3


def test_cdaf_blocks_alternate_differential_and_common_and_start_as_identity() -> None:
    shipped = build_model("cdfusion")
    modes = [block.mode for block in shipped.cdaf]
    assert modes == ["differential", "common"] * (load_preset("cdfusion")["cdaf_blocks"] // 2) and len(modes) >= 2
    gen = torch.Generator().manual_seed(6)
    f_vis, f_ir = torch.randn(2, 8, 6, 10, generator=gen), torch.randn(2, 8, 6, 10, generator=gen)
    a, b = f_vis, f_ir
    for block in shipped.cdaf:  # fresh: each block (and so the chain) is exactly the identity
        a2, b2 = block(a, b)
        assert torch.equal(a2, a) and torch.equal(b2, b)
        a, b = a2, b2
    with torch.no_grad():
        # trained-like weights: the differential block reads only f_vis - f_ir (a shift both share changes nothing)
        diff = randomized(CDAFBlock(8, 4, "differential"), seed=7).eval()
        base = [o - i for o, i in zip(diff(f_vis, f_ir), (f_vis, f_ir))]
        shifted = [o - i for o, i in zip(diff(f_vis + 0.7, f_ir + 0.7), (f_vis + 0.7, f_ir + 0.7))]
        assert all(torch.allclose(x, y, atol=1e-5) for x, y in zip(base, shifted)) and base[0].abs().mean() > 1e-3
        # the common block reads only (f_vis + f_ir) / 2: swapping the modalities gives the same updates
        common = randomized(CDAFBlock(8, 4, "common"), seed=8).eval()
        up_vis, up_ir = (o - i for o, i in zip(common(f_vis, f_ir), (f_vis, f_ir)))
        sw_vis, sw_ir = (o - i for o, i in zip(common(f_ir, f_vis), (f_ir, f_vis)))
        assert torch.allclose(up_vis, sw_vis, atol=1e-5) and torch.allclose(up_ir, sw_ir, atol=1e-5)
        assert (up_vis - up_ir).abs().mean() > 1e-3  # separate outputs: each modality takes its own share
    with pytest.raises(ValueError, match="differential or common"):
        CDAFBlock(8, 4, "average")
    with pytest.raises(StreamFusionError, match="cdaf_blocks must be >= 2"):
        build_model({**CD_TINY, "cdaf_blocks": 1})


def test_bgr_to_lab_matches_opencv_and_the_cie_anchors() -> None:
    # every 5th 8-bit level of each channel (52^3 colours, black and white included) and a real RoadScene frame
    levels = np.linspace(0, 1, 256, dtype=np.float32)[::5]
    grid = np.stack(np.meshgrid(levels, levels, levels), axis=-1).reshape(1, -1, 3)
    real = cv2.imread(str(TRAIN / "vis" / "FLIR_00006.png")).astype(np.float32) / 255.0
    for image in (grid, real):
        ours = bgr_to_lab(torch.from_numpy(image).permute(2, 0, 1)[None])[0].permute(1, 2, 0).numpy()
        diff = np.abs(ours - cv2.cvtColor(image, cv2.COLOR_BGR2Lab)).reshape(-1, 3)
        # OpenCV's float path approximates the gamma and cube root: measured max 0.19 L*, 0.43 a*, 0.31 b*, mean 0.08
        assert diff.max() < 0.5 and diff.mean() < 0.1
    anchors = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.5, 0.5, 0.5], [0.0, 0.0, 1.0]]).view(4, 3, 1, 1)
    lab = bgr_to_lab(anchors)[:, :, 0, 0]
    assert torch.allclose(lab[0], torch.zeros(3), atol=1e-4)  # black
    assert torch.allclose(lab[1], torch.tensor([100.0, 0.0, 0.0]), atol=1e-3)  # D65 white
    assert abs(lab[2, 1]) < 1e-3 and abs(lab[2, 2]) < 1e-3 and abs(lab[2, 0] - 53.39) < 0.01  # sRGB mid gray
    assert torch.allclose(lab[3], torch.tensor([53.24, 80.09, 67.20]), atol=0.02)  # sRGB red (BGR 0, 0, 1)


def test_chroma_loss_is_zero_for_identical_images_positive_for_a_hue_change_and_has_finite_gradients() -> None:
    _, vis = pairs(2, 16, 16, seed=9)
    assert chroma_loss(vis, vis) == 0
    hue_turned = vis[:, [1, 2, 0]]  # B <- G, G <- R, R <- B: about the same lightness, another hue
    assert chroma_loss(hue_turned, vis) > 0.1
    lighter = (vis * 1.1).clamp(0, 1)  # a pure gray lightness change moves L*, barely a*/b*
    gray = vis[:, :1].repeat(1, 3, 1, 1)
    assert chroma_loss(gray + 0.05, gray) < 1e-3 and chroma_loss(lighter, vis) < chroma_loss(hue_turned, vis) / 5
    for value in (0.0, 1.0):  # black and saturated pixels: the piecewise sRGB and Lab curves must not give NaN/inf
        fused = torch.full((1, 3, 8, 8), value, requires_grad=True)
        target = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(10))
        chroma_loss(fused, target).backward()
        assert torch.isfinite(fused.grad).all() and fused.grad.abs().sum() > 0


def test_colour_crops_are_the_colour_pairs_with_the_files_pixels(colour_crops: PairCrops) -> None:
    manifest = list(csv.DictReader((DATA / "manifest.csv").open()))
    train_rows = [row for row in manifest if row["split"] == "train"]
    colour_names = {row["name"] + ".png" for row in train_rows if row["vis_channels"] == "3"}
    assert len(train_rows) == 205 and len(colour_names) == 172
    assert len(colour_crops) == 172 and colour_crops.skipped_gray == 33 and set(colour_crops.names) == colour_names
    rng = np.random.default_rng(0)
    picks = np.array([0, 60, 171])
    ir, vis = colour_crops.batch(picks, rng)
    assert ir.shape == (3, 1, 32, 32) and vis.shape == (3, 3, 32, 32) and vis.dtype == torch.float32
    assert 0 <= vis.min() and vis.max() <= 1
    for k, i in enumerate(picks):
        name = colour_crops.names[i]
        file_bgr = cv2.imread(str(TRAIN / "vis" / name), cv2.IMREAD_COLOR)
        file_ir = cv2.imread(str(TRAIN / "ir" / name), cv2.IMREAD_GRAYSCALE)
        crop = np.rint(vis[k].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
        crop_ir = np.rint(ir[k, 0].numpy() * 255).astype(np.uint8)
        assert not np.array_equal(crop[:, :, 0], crop[:, :, 2])  # a real colour crop: B and R differ
        found = False
        for flips in [(), (0,), (1,), (0, 1)]:  # the crop may be flipped: undo each candidate and look for it
            candidate = np.ascontiguousarray(np.flip(crop, flips) if flips else crop)
            scores = cv2.matchTemplate(file_bgr, candidate, cv2.TM_SQDIFF)  # float32 sums: ~0 at the match
            y, x = np.unravel_index(np.argmin(scores), scores.shape)
            if np.array_equal(file_bgr[y : y + 32, x : x + 32], candidate):  # channel order B, G, R as in the file
                ir_candidate = np.flip(crop_ir, flips) if flips else crop_ir
                assert np.array_equal(file_ir[y : y + 32, x : x + 32], ir_candidate)  # the same window and flips
                found = True
                break
        assert found, f"crop {k} of {name} is not a window of the file"


def test_gray_visible_pairs_join_the_colour_crops_as_three_equal_channels() -> None:
    """``gray=True``: every training pair, the gray-visible ones as the runtime feeds a gray camera to the colour
    network (three equal channels)."""
    crops = PairCrops(TRAIN, crop=32, colour=True, gray=True)
    assert len(crops) == 205 and crops.skipped_gray == 0
    gray_index = next(i for i, name in enumerate(crops.names) if not name.startswith("FLIR_"))
    name = crops.names[gray_index]
    _, vis = crops.batch(np.array([gray_index]), np.random.default_rng(0))
    assert vis.shape == (1, 3, 32, 32)
    assert torch.equal(vis[0, 0], vis[0, 1]) and torch.equal(vis[0, 1], vis[0, 2])
    file_gray = cv2.imread(str(TRAIN / "vis" / name), cv2.IMREAD_GRAYSCALE)
    crop = np.rint(vis[0, 0].numpy() * 255).astype(np.uint8)
    found = False
    for flips in [(), (0,), (1,), (0, 1)]:  # the crop may be flipped: undo each candidate and look for it
        candidate = np.ascontiguousarray(np.flip(crop, flips) if flips else crop)
        scores = cv2.matchTemplate(file_gray, candidate, cv2.TM_SQDIFF)  # float32 sums: ~0 at the match
        y, x = np.unravel_index(np.argmin(scores), scores.shape)
        found = found or np.array_equal(file_gray[y : y + 32, x : x + 32], candidate)
    assert found, f"the crop of {name} is not a window of the file"


def tiny_steps(model: torch.nn.Module, ir: torch.Tensor, vis: torch.Tensor, stage: int, steps: int, lr: float,
               weights: dict[str, float] | None = None) -> None:
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        loss = model.training_losses(ir, vis, stage, weights)["total"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def test_a_few_training_steps_on_real_colour_crops_lower_the_losses(colour_crops: PairCrops) -> None:
    """Stage I, then Stage II with the shipped run's loss weights (configs/train_cdfusion.yaml: chroma x10). The
    untrained network is the YCbCr route; the decoder's first steps move colour off it (chroma rises for ~10 steps,
    measured), and the chroma term then pulls it back below the route's error."""
    weights = load_yaml(REPO / "configs" / "train_cdfusion.yaml")["loss"]
    assert weights["chroma"] > 1
    torch.manual_seed(0)
    ir, vis = colour_crops.batch(np.arange(0, 172, 43), np.random.default_rng(1))
    model = build_model(CD_TINY)

    def evaluate(stage: int) -> dict[str, float]:
        torch.manual_seed(123)  # the same diffusion noise and timesteps before and after
        with torch.no_grad():
            return {k: v.item() for k, v in model.training_losses(ir, vis, stage, weights).items()}

    before1 = evaluate(1)
    tiny_steps(model, ir, vis, stage=1, steps=15, lr=3e-3)
    assert evaluate(1)["total"] < before1["total"] * 0.95
    start2 = evaluate(2)
    assert start2["chroma"] > 0  # the YCbCr route does move Lab chroma (measured 0.0028: mean |Δa*| + |Δb*| 0.28)
    tiny_steps(model, ir, vis, stage=2, steps=40, lr=1e-3, weights=weights)
    after2 = evaluate(2)
    # measured: total 1.270 -> 1.129, chroma 0.00277 -> 0.00237
    assert after2["total"] < start2["total"] * 0.95
    assert after2["chroma"] < start2["chroma"] * 0.95
    assert model.decoder[-1].weight.abs().sum() > 0  # the colour residual is in use: off the pure YCbCr route


def test_training_script_trains_cdfusion_on_the_colour_pairs_from_a_luma_checkpoint(tmp_path: Path) -> None:
    """The real train(): colour pairs chosen by the network, gray ones skipped, Lab chroma logged, D²FE warm start."""
    data = tmp_path / "data"
    all_pairs = list_pairs(TRAIN)
    colour = [p for p in all_pairs if p[1].name.startswith("FLIR_")][:3]
    gray = [p for p in all_pairs if not p[1].name.startswith("FLIR_") and p[1].name != "tank.png"][:1]
    for sub in ("ir", "vis"):
        (data / sub).mkdir(parents=True)
    for ir_path, vis_path in colour + gray:
        shutil.copy(ir_path, data / "ir" / ir_path.name)
        shutil.copy(vis_path, data / "vis" / vis_path.name)
    luma = tmp_path / "luma.pt"
    save_checkpoint(luma, build_model(TINY_LUMA), TINY_LUMA, {"epochs": 1, "data": "none"})
    preset = tmp_path / "cdtiny.yaml"
    preset.write_text(yaml.safe_dump(CD_TINY))
    cfg, _ = parse_args(["--preset", str(preset), "--data", str(data), "--out", str(tmp_path / "run"), "--epochs", "2",
                         "--set", "crop=32", "--set", "batch_size=2", "--set", "threads=1", "--set", f"init={luma}"])
    final = train(cfg, progress=False)
    rows = list(csv.DictReader((tmp_path / "run" / "log.csv").open()))
    assert [r["stage"] for r in rows] == ["1", "2"]
    assert float(rows[1]["chroma"]) > 0 and float(rows[0]["reconstruction"]) > 0
    model, loaded_preset = load_checkpoint(final)
    meta = torch.load(final, weights_only=True)["meta"]
    assert isinstance(model, CDFusionNet) and loaded_preset == CD_TINY
    assert meta["pairs"] == 3 and meta["init"]["epochs"] == 1
    cfg["gray_visible"], cfg["epochs"], cfg["out"] = True, 1, str(tmp_path / "gray")
    gray_run = torch.load(train(cfg, progress=False), weights_only=True)["meta"]
    assert gray_run["pairs"] == 4  # the gray pair too, as three equal channels


def d2fe_keys(model: torch.nn.Module) -> list[str]:
    return [k for k in model.state_dict() if k.split(".")[0] in D2FE_MODULES]


def test_init_from_the_shipped_lite_checkpoint_warm_starts_exactly_the_d2fe() -> None:
    lite = torch.load(WEIGHTS_DIR / "difffuse_lite.pt", weights_only=True)["state_dict"]
    torch.manual_seed(0)
    model = build_model("cdfusion")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    init_from(model, WEIGHTS_DIR / "difffuse_lite.pt")
    after = model.state_dict()
    keys = d2fe_keys(model)
    assert {k.split(".")[0] for k in keys} == set(D2FE_MODULES) and len(keys) > 20
    for key in keys:  # every D²FE tensor is lite's, value for value
        assert torch.equal(after[key], lite[key]), key
    changed = [k for k in keys if not torch.equal(before[k], after[k])]
    assert len(changed) > len(keys) / 2  # really loaded: not a coincidence of equal initial values
    for key in set(after) - set(keys):  # the colour-only parts (spectral, CDAF, merge, decoder) are untouched
        assert torch.equal(after[key], before[key]), key


def test_init_from_a_foreign_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    colour_ckpt = tmp_path / "cd.pt"
    save_checkpoint(colour_ckpt, build_model(CD_TINY), CD_TINY, {})
    with pytest.raises(StreamFusionError, match="has preset 'cdtiny' with other settings"):
        init_from(build_model(TINY_LUMA), colour_ckpt)  # colour weights into a luma network
    other = {**CD_TINY, "name": "cdother", "channels": 6, "gn_groups": 3}
    with pytest.raises(StreamFusionError, match="has preset 'cdtiny' with other settings"):
        init_from(build_model(other), colour_ckpt)  # another colour preset


@pytest.mark.parametrize("change", [
    {"downscale": 1},
    {"channels": 8, "gn_groups": 4},
    {"channels": 6, "gn_groups": 3, "denoiser_width": 6, "time_dim": 12},
])
def test_init_from_a_partly_matching_luma_checkpoint_is_a_clear_error(tmp_path: Path, change: dict) -> None:
    luma = {**TINY_LUMA, **change}
    path = tmp_path / "luma.pt"
    save_checkpoint(path, build_model(luma), luma, {})
    with pytest.raises(StreamFusionError, match="init checkpoint"):
        init_from(build_model(CD_TINY), path)


def test_checkpoint_round_trip_rebuilds_the_colour_network(tmp_path: Path) -> None:
    model = randomized(build_model(CD_TINY)).eval()
    path = tmp_path / "cd.pt"
    save_checkpoint(path, model, CD_TINY, {"epochs": 1})
    loaded, preset = load_checkpoint(path)
    assert isinstance(loaded, CDFusionNet) and preset == CD_TINY and not loaded.training
    ir, vis = pairs(1, 16, 16)
    with torch.no_grad():
        assert torch.equal(model(ir, vis), loaded(ir, vis))
    with pytest.raises(StreamFusionError, match=r"unknown model 'colourful' in preset \(known: difffuse, cdfusion\)"):
        build_model({**CD_TINY, "model": "colourful"})
    with pytest.raises(StreamFusionError, match="unknown model preset key 'coupling_blocks'"):
        build_model({**CD_TINY, "coupling_blocks": 1})  # a luma-only key in a colour preset
    with pytest.raises(StreamFusionError, match="missing key 'cdaf_blocks'"):
        build_model({k: v for k, v in CD_TINY.items() if k != "cdaf_blocks"})


def test_colour_preset_without_downscale_is_built_or_a_clear_error() -> None:
    preset = {k: v for k, v in CD_TINY.items() if k != "downscale"}
    try:
        model = build_model(preset)
    except StreamFusionError as error:
        assert "downscale" in str(error)
    else:
        assert model.size_multiple == 4


def test_colour_head_moves_colour_never_lightness() -> None:
    """The per-pixel colour head is luma-neutral: with a trained-like (random) head and everything else fresh, the
    output's BT.601 luma is the prior's (the YCbCr route's) wherever nothing clips, while its colour differs."""
    model = build_model(CD_TINY).eval()
    with torch.no_grad():
        gen = torch.Generator().manual_seed(3)
        for p in model.colour_head.parameters():
            p.copy_(0.1 * torch.randn(p.shape, generator=gen))
    ir, vis = pairs(1, 32, 48, seed=4)
    vis = 0.25 + 0.5 * vis  # mid-range colours: the head's correction stays inside 0..1, so no clipping hides it
    fresh = build_model(CD_TINY).eval()
    with torch.no_grad():
        out, prior = model(ir, vis), fresh(ir, vis)
    inside = ((out > 0) & (out < 1)).all(dim=1, keepdim=True) & ((prior > 0) & (prior < 1)).all(dim=1, keepdim=True)
    assert inside.float().mean() > 0.5  # random IR brightens some pixels past white: those are left out
    luma_diff = (CDFusionNet.luma(out) - CDFusionNet.luma(prior))[inside]
    assert luma_diff.abs().max() < 1e-5
    assert (out - prior).abs().amax(dim=1, keepdim=True)[inside].mean() > 0.01  # the colour did move


def test_chroma_loss_never_trains_lightness() -> None:
    """The chroma loss reaches the colour head and the decoder's colour, never the layers that only set the
    luminance (the weight map and the enhancement projection): otherwise the cheapest way to keep a*/b* close to the
    visible image is to brighten less, which is what an unconstrained run learned."""
    torch.manual_seed(5)  # initial weights whose output clips nowhere on these inputs (checked below)
    model = randomized(build_model(CD_TINY), scale=0.02).train()
    ir, vis = pairs(2, 32, 32, seed=5)
    ir, vis = 0.35 + 0.3 * ir, 0.35 + 0.3 * vis  # nothing clips: where a channel clips, brightening does move hue
    with torch.no_grad():
        fused = model(ir, vis)
    assert fused.min() > 0 and fused.max() < 1
    torch.manual_seed(0)
    model.training_losses(ir, vis, stage=2, weights={})["chroma"].backward()
    lightness_only = [*model.weight_map.parameters(), *model.project.parameters()]
    # Zero up to float rounding (the BT.601 weights sum to 1 only to float32 precision): 1e-9 at most, against
    # gradients of 1e-3..1e-1 where the loss does reach.
    assert all(p.grad is None or p.grad.abs().max() < 1e-7 for p in lightness_only)
    assert model.colour_head[2].weight.grad.abs().max() > 0
    assert model.decoder[2].weight.grad.abs().max() > 0


def test_the_daylight_term_reads_the_output_luma_and_trains_lightness() -> None:
    """Issue 15 for the colour network: by day (a bright visible frame, a dark flat IR one) the daylight term sees
    the colour output's luma fall short of the visible luma, and its gradient reaches the layers that set lightness
    (the weight map); the temporal term runs on the colour frames. Both are off unless weighted."""
    torch.manual_seed(5)
    model = randomized(build_model(CD_TINY), scale=0.02).train()
    ir, vis = pairs(2, 32, 32, seed=5)
    ir, vis = 0.05 + 0.1 * ir, 0.7 + 0.2 * vis  # daylight: the untrained low band blends the two, dimming the scene
    torch.manual_seed(0)
    losses = model.training_losses(ir, vis, stage=2, weights={"daylight": 5.0, "temporal": 0.5})
    assert {"daylight", "temporal"} <= set(losses) and torch.isfinite(losses["total"])
    assert losses["daylight"].item() > 0.1  # the fused luma (~0.45) is far below 0.9 x the visible luma (~0.72)
    losses["daylight"].backward()
    assert model.weight_map[3].weight.grad.abs().max() > 0
    assert not {"daylight", "temporal"} & set(model.training_losses(ir, vis, stage=2, weights={}))


def test_lab_prior_keeps_the_visible_colour_at_the_fused_lightness() -> None:
    """``colour_prior: lab``: the untrained network's output has the YCbCr-route output's lightness (L*) and the
    visible image's a*/b*, wherever the new colour is inside sRGB; the YCbCr route itself shifts a*/b*."""
    lab_net = build_model({**CD_TINY, "colour_prior": "lab"}).eval()
    ycbcr_net = build_model(CD_TINY).eval()
    ir, vis = pairs(1, 32, 48, seed=6)
    vis = 0.2 + 0.6 * vis
    with torch.no_grad():
        out, route = lab_net(ir, vis), ycbcr_net(ir, vis)
    lab_out, lab_route, lab_vis = bgr_to_lab(out), bgr_to_lab(route), bgr_to_lab(vis)
    inside = ((out > 0.002) & (out < 0.998)).all(dim=1) & ((route > 0.002) & (route < 0.998)).all(dim=1)
    assert inside.float().mean() > 0.3
    assert (lab_out[:, 0] - lab_route[:, 0]).abs()[inside].max() < 1e-3
    assert (lab_out[:, 1:] - lab_vis[:, 1:]).abs().amax(dim=1)[inside].max() < 1e-3
    assert (lab_route[:, 1:] - lab_vis[:, 1:]).abs().amax(dim=1)[inside].mean() > 0.5  # what the prior fixes
    with pytest.raises(StreamFusionError, match="colour_prior must be lab or ycbcr"):
        build_model({**CD_TINY, "colour_prior": "hsv"})
