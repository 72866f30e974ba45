"""Issue 15 point 4 on the real training pairs: the scene-disjoint validation split, the camera augmentation, the
daylight and temporal loss terms, and a training run that selects its checkpoint on held-out scenes."""
from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from stream_fusion import DATA_DIR
from stream_fusion.batch import read_gray
from stream_fusion.errors import StreamFusionError
from stream_fusion.training import augment as camera
from stream_fusion.training.data import PairCrops, list_pairs
from stream_fusion.training.losses import daylight_loss, temporal_loss
from stream_fusion.training.model import build_model
from stream_fusion.training.split import family_of, scene_of, scenes, split_scenes
from stream_fusion.training.train import parse_args, train
from stream_fusion.engine.frames import to_gray
from stream_fusion.evaluate.stability import visible_is_brighter
from stream_fusion.training.validate import (baseline_scores, choose, day_ir_copies, day_ir_copy, main as validate,
                                             score_fusions, validation_pairs)
from tiny_network import TINY, one_thread  # noqa: F401  (one_thread: autouse fixture)

TRAIN = DATA_DIR / "train"
NAMES = sorted(ir.name for ir, _ in list_pairs(TRAIN))


def test_scenes_group_frames_of_one_drive_and_views_of_one_tno_scene() -> None:
    assert scene_of("FLIR_04929.png", NAMES) == scene_of("FLIR_05108.png", NAMES)  # one drive, frames 20-30 apart
    assert scene_of("FLIR_04929.png", NAMES) != scene_of("FLIR_06065.png", NAMES)
    assert scene_of("Triclobs_images__Marne_03.png", NAMES) == scene_of("Triclobs_images__Marne_24.png", NAMES)
    assert scene_of("Athena_images__APC_1__view_2.png", NAMES) == "Athena_images__APC"
    assert family_of("FLIR_video_00069.png") == "FLIR_video" and family_of("tank.png") == "TNO"
    assert sum(len(v) for v in scenes(NAMES).values()) == len(NAMES) == 205


def test_validation_split_is_scene_disjoint_deterministic_and_covers_every_family() -> None:
    train_names, val = split_scenes(NAMES, 0.2)
    assert sorted(train_names + val) == NAMES and not set(train_names) & set(val)
    val_scenes = {scene_of(n, NAMES) for n in val}
    assert not val_scenes & {scene_of(n, NAMES) for n in train_names}  # no scene on both sides
    for family in ("FLIR", "FLIR_video", "TNO"):
        members = [n for n in NAMES if family_of(n) == family]
        held = [n for n in val if family_of(n) == family]
        assert 0.2 <= len(held) / len(members) < 0.45
    assert split_scenes(list(reversed(NAMES)), 0.2) == (train_names, val)  # the same on every machine
    assert split_scenes(NAMES, 0.0) == (NAMES, [])
    with pytest.raises(ValueError, match="val_fraction"):
        split_scenes(NAMES, 1.0)


@pytest.fixture(scope="module")
def crops() -> tuple[np.ndarray, np.ndarray]:
    """A crop of a real daylight RoadScene pair, float 0..1."""
    ir, vis = (read_gray(TRAIN / role / "FLIR_06065.png") for role in ("ir", "vis"))
    return ir[:96, :96].astype(np.float32) / 255, vis[:96, :96].astype(np.float32) / 255


def test_each_camera_transform_does_what_it_says(crops) -> None:
    ir, vis = crops
    rng = np.random.default_rng(0)
    day_ir, day_vis = camera.day_ir(ir, vis, rng)
    assert day_ir.std() < 0.5 * ir.std() and day_ir.mean() <= 0.31 and day_vis.mean() > vis.mean()
    _, night = camera.night_vis(ir, vis, rng)
    assert night.mean() < 0.55 * vis.mean()
    assert np.allclose(night * 255, np.round(night * 255), atol=1e-4)  # re-quantised like a camera's output
    _, lit = camera.glare(ir, vis, rng)
    assert (lit >= vis - 1e-6).all() and lit.max() == pytest.approx(1.0) and (lit - vis).max() > 0.3
    moved, same = camera.misregister(ir, vis, rng)
    assert same is vis and 0 < np.abs(moved - ir).mean() and np.abs(moved - ir).mean() < 0.1
    g_ir, g_vis = camera.gain_gamma(ir, vis, rng)
    assert not np.allclose(g_ir, ir) and not np.allclose(g_vis, vis) and 0 <= g_vis.min() and g_vis.max() <= 1
    bgr = np.stack([vis, vis, vis], axis=2)
    _, cast = camera.colour_cast(ir, bgr, rng)
    assert not np.allclose(cast[:, :, 0], cast[:, :, 2])  # channels no longer equal: a cast
    assert camera.colour_cast(ir, vis, rng)[1] is vis  # a gray frame has no white balance to shift


def test_augment_probabilities_are_checked_and_zero_means_untouched(crops) -> None:
    ir, vis = crops
    off = camera.check({})
    a, b = camera.augment(ir, vis, off, np.random.default_rng(0))
    assert np.array_equal(a, ir) and np.array_equal(b, vis)
    on = camera.check({"day_ir": 1.0, "night_vis": 1.0})
    a, b = camera.augment(ir, vis, on, np.random.default_rng(0))
    assert a.std() < 0.5 * ir.std() and b.mean() > vis.mean()  # day wins; night is not applied on top of it
    with pytest.raises(ValueError, match="unknown augment key 'dayir'"):
        camera.check({"dayir": 0.5})
    with pytest.raises(ValueError, match=r"augment.glare must be a probability"):
        camera.check({"glare": 2})


def test_augmented_crops_stay_aligned_reproducible_and_in_range() -> None:
    names = {"FLIR_06065.png", "Triclobs_images__Marne_03.png"}
    data = PairCrops(TRAIN, 64, names=names, augment={k: 0.5 for k in camera.KEYS})
    assert sorted(data.names) == sorted(names)
    ir, vis = data.batch(np.arange(2), np.random.default_rng(3))
    again = data.batch(np.arange(2), np.random.default_rng(3))
    assert torch.equal(ir, again[0]) and torch.equal(vis, again[1])
    assert ir.shape == vis.shape == (2, 1, 64, 64) and 0 <= ir.min() and vis.max() <= 1
    plain = PairCrops(TRAIN, 64, names=names)
    p_ir, p_vis = plain.batch(np.arange(2), np.random.default_rng(3))
    assert not torch.equal(vis, p_vis) or not torch.equal(ir, p_ir)


def test_daylight_loss_only_where_the_visible_frame_is_brighter() -> None:
    ir = torch.full((2, 1, 16, 16), 0.2)
    vis = torch.full((2, 1, 16, 16), 0.8)
    vis[1] = 0.1  # second sample: night, IR brighter
    dim = (ir + vis) / 2  # 0.5 by day: short of 0.9 * 0.8 = 0.72 by 0.22
    assert daylight_loss(dim, ir, vis).item() == pytest.approx(0.22 / 2, abs=1e-6)
    assert daylight_loss(torch.maximum(ir, vis), ir, vis).item() == 0.0


def test_temporal_loss_is_zero_for_a_pixelwise_fusion_and_positive_for_a_sharpening_one(crops) -> None:
    ir, vis = (torch.from_numpy(x)[None, None] for x in crops)
    average = lambda a, b: (a + b) / 2  # noqa: E731
    torch.manual_seed(0)
    assert temporal_loss(average, average(ir, vis), ir, vis).item() == 0.0

    def sharpen(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        x = (a + b) / 2
        blur = torch.nn.functional.avg_pool2d(torch.nn.functional.pad(x, (2, 2, 2, 2), mode="replicate"), 5, 1)
        return x + 3 * (x - blur)

    torch.manual_seed(0)
    assert temporal_loss(sharpen, sharpen(ir, vis), ir, vis).item() > 0.2


def test_validation_scores_match_the_evaluation_and_rank_baselines() -> None:
    pairs = validation_pairs(TRAIN, 0.2)
    _, val = split_scenes(NAMES, 0.2)
    assert [p[0] for p in pairs] == val
    few = pairs[::11]
    base = baseline_scores(few)
    assert base["laplacian"]["Qabf"] > base["average"]["Qabf"] and base["average"]["SSIM"] > base["laplacian"]["SSIM"]
    dim = score_fusions(few, lambda ir, vis: (vis * 0.5).astype(np.uint8))
    assert dim["day_kept"] == 0.0 and dim["day_min"] == pytest.approx(0.5, abs=0.01)


def test_day_ir_copies_are_fixed_dark_flat_ir_days_counted_in_the_daylight_share_only() -> None:
    pairs = validation_pairs(TRAIN, 0.2, colour_only=True)
    copies = day_ir_copies(pairs)
    days = [p for p in pairs if visible_is_brighter(p[1], to_gray(p[2]))]
    assert 0 < len(copies) == len(days) < len(pairs)  # night pairs get no copy
    again = day_ir_copy(days[0])
    assert copies[0][0] == days[0][0] + "+day_ir" and all(np.array_equal(a, b) for a, b in zip(copies[0][1:], again[1:]))
    for (_, ir, vis), (_, dir_, dvis) in zip(days, copies):
        assert dir_.dtype == np.uint8 and dvis.shape == vis.shape
        assert abs(dir_.mean() - 0.3 * 255) < 0.05 * 255 and dir_.std() < 0.2 * ir.std() + 1  # dark, flat IR
        assert dvis.mean() > vis.mean()  # the visible frame brightened (gamma 0.9)
    average = lambda ir, vis: ((ir.astype(np.float32) + to_gray(vis)) / 2).astype(np.uint8)  # noqa: E731
    real = score_fusions(days[:4], average)
    both = score_fusions(days[:4], average, copies[:4])
    assert both["VIF"] == real["VIF"] and both["SSIM"] == real["SSIM"]  # copies only enter the daylight share
    assert both["day_min"] < real["day_min"] and both["day_kept"] < 1.0 and both["score"] < real["score"]


def test_the_choice_across_runs_is_the_best_score_above_the_vif_floor(tmp_path: Path) -> None:
    few = validation_pairs(TRAIN, 0.2, colour_only=True)[::5]
    base = baseline_scores(few)
    visible = score_fusions(few, lambda ir, vis: vis)  # keeps every daylight pair; VIF of the visible frame alone
    lap, avg = base["laplacian"], base["average"]
    assert lap["VIF"] > avg["VIF"] and lap["score"] > avg["score"]
    candidates = [("average", avg), ("laplacian", lap), ("visible", visible)]
    best_overall = max(candidates, key=lambda row: row[1]["score"])[0]
    assert choose(candidates, lap["VIF"], floor=min(s["VIF"] for _, s in candidates) / lap["VIF"]) == (best_overall, [])
    best, below = choose(candidates, lap["VIF"], floor=1.0)  # only what reaches the Laplacian pyramid's VIF
    above = [(label, s) for label, s in candidates if s["VIF"] >= lap["VIF"]]
    assert best == max(above, key=lambda row: row[1]["score"])[0] and "average" in below
    assert sorted(below + [label for label, _ in above]) == ["average", "laplacian", "visible"]
    assert choose(candidates, 10.0, floor=0.95) == (None, ["average", "laplacian", "visible"])
    with pytest.raises(SystemExit) as stop:
        validate(["--checkpoint", str(tmp_path / "missing.pt")])
    assert stop.value.code == 2


def test_a_run_with_a_validation_split_selects_best_pt(tmp_path: Path) -> None:
    root = tmp_path / "data"
    chosen = ["FLIR_04929.png", "FLIR_04932.png", "FLIR_06065.png", "FLIR_06099.png", "tank.png",
              "Triclobs_images__Marne_03.png", "Triclobs_images__Marne_04.png", "DHV_images__wall.png"]
    for role in ("ir", "vis"):
        (root / role).mkdir(parents=True)
        for name in chosen:
            shutil.copy(TRAIN / role / name, root / role)
    preset = tmp_path / "tiny.yaml"
    preset.write_text(yaml.safe_dump(TINY))
    out = tmp_path / "run"
    cfg, _ = parse_args(["--preset", str(preset), "--data", str(root), "--out", str(out), "--epochs", "3",
                         "--set", "crop=32", "--set", "batch_size=2", "--set", "threads=1",
                         "--set", "val_fraction=0.3", "--set", "val_every=2", "--set", "augment.day_ir=0.5",
                         "--set", "loss.daylight=1", "--set", "loss.temporal=0.1", "--set", "val_day_ir=true"])
    train(cfg, progress=False)
    rows = list(csv.DictReader((out / "log.csv").open()))
    assert [bool(r["val_score"]) for r in rows] == [False, True, True]  # epoch 2 (every 2) and the last
    assert float(rows[2]["daylight"]) >= 0 and float(rows[2]["temporal"]) >= 0
    best = torch.load(out / "best.pt", weights_only=True)["meta"]
    scored = {int(r["epoch"]): float(r["val_score"]) for r in rows if r["val_score"]}
    assert best["validation"]["epoch"] == max(scored, key=scored.get) and best["config"]["val_day_ir"] is True
    held = set(split_scenes(sorted(chosen), 0.3)[1])
    assert held and best["pairs"] == len(chosen) - len(held)
    with pytest.raises(StreamFusionError, match="unknown augment key|unknown config key"):
        parse_args(["--set", "augment.fog=0.5"])


def test_a_model_untrained_on_the_new_terms_still_builds_its_losses() -> None:
    model = build_model(TINY)
    ir, vis = torch.rand(2, 1, 32, 32), torch.rand(2, 1, 32, 32)
    losses = model.training_losses(ir, vis, 2, {"daylight": 1.0, "temporal": 0.5})
    assert {"daylight", "temporal"} <= set(losses) and torch.isfinite(losses["total"])
    assert "temporal" not in model.training_losses(ir, vis, 2)  # off by default: the shipped recipe's loss


def test_the_skip_lift_moves_the_low_band_to_the_brighter_source() -> None:
    from stream_fusion.training.model.pyramid import MultiScaleSkip

    skip = MultiScaleSkip(2)
    vis, ir = torch.full((1, 1, 24, 24), 0.8), torch.full((1, 1, 24, 24), 0.2)
    weight = torch.full_like(vis, 0.3)
    assert torch.allclose(skip(vis, ir, weight), torch.full_like(vis, 0.38))  # the blend: dim
    assert torch.allclose(skip(vis, ir, weight, torch.ones_like(vis)), vis)  # lifted all the way: the brighter one
    assert torch.allclose(skip(vis, ir, weight, torch.zeros_like(vis)), skip(vis, ir, weight))


def test_a_lift_network_warm_starts_from_a_checkpoint_without_it_and_exports(tmp_path: Path) -> None:
    import onnxruntime as ort

    from export import network as export_network
    from stream_fusion.training.model import save_checkpoint
    from stream_fusion.training.train import init_from

    old = build_model(TINY)
    torch.manual_seed(0)
    for p in old.parameters():  # a "trained" network: every branch active
        p.data += 0.05 * torch.randn_like(p)
    path = tmp_path / "old.pt"
    save_checkpoint(path, old, TINY, {})
    lifted = build_model({**TINY, "brightness_lift": 1})
    init_from(lifted, path)
    ir, vis = torch.rand(1, 1, 32, 32) * 0.3, torch.rand(1, 1, 32, 32) * 0.3 + 0.6
    with torch.no_grad():
        before, after = old.eval()(ir, vis), lifted.eval()(ir, vis)
    assert (after - before).abs().max() < 0.02  # it starts as (nearly) the network it came from
    lifted.train()
    total = lifted.training_losses(ir, vis, 2, {"daylight": 5.0})["total"]
    total.backward()
    assert lifted.lift[3].weight.grad.abs().sum() > 0  # and the daylight term can train its lift
    onnx_path = tmp_path / "lift.onnx"
    export_network.export_model(lifted.eval(), onnx_path, metadata={"preset": "tiny", "model_version": "t",
                                                                   "training": "test"})
    out = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]).run(
        None, {"ir": ir.numpy(), "vis": vis.numpy()})[0]
    with torch.no_grad():
        assert np.abs(out - lifted(ir, vis).numpy()).max() < 1e-4
    with pytest.raises(StreamFusionError, match="other settings"):
        init_from(build_model({**TINY, "skip_levels": 1}), path)
