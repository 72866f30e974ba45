"""Training: real pairs from ../shared/data/train, losses that go down, a two-stage run that resumes, clear errors."""
from __future__ import annotations

import csv
import shutil
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from stream_fusion import DATA_DIR
from stream_fusion.training.data import PairCrops, list_pairs
from stream_fusion.errors import StreamFusionError
from stream_fusion.training.losses import fusion_losses, sobel_magnitude, ssim
from stream_fusion.training.model import build_model, load_checkpoint
from stream_fusion.training.train import parse_args, train
from tiny_network import TINY, one_thread  # noqa: F401  (one_thread: autouse fixture)

REPO = Path(__file__).resolve().parents[1]
TRAIN = DATA_DIR / "train"


@pytest.fixture(scope="module")
def subset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four real training pairs (one RoadScene colour pair among them), copied to a folder of the same layout."""
    root = tmp_path_factory.mktemp("train_subset")
    pairs = list_pairs(TRAIN)
    chosen = [pairs[i] for i in np.linspace(0, len(pairs) - 1, 4).astype(int)]
    for sub in ("ir", "vis"):
        (root / sub).mkdir()
    for ir, vis in chosen:
        shutil.copy(ir, root / "ir" / ir.name)
        shutil.copy(vis, root / "vis" / vis.name)
    return root


def test_losses_have_their_meaning() -> None:
    flat = torch.full((1, 1, 32, 32), 0.5)
    assert sobel_magnitude(flat).abs().max() == 0
    ramp = torch.linspace(0, 1, 32).repeat(32, 1)[None, None]
    assert torch.isclose(ssim(ramp, ramp), torch.tensor(1.0), atol=1e-5)
    assert ssim(ramp, 1 - ramp) < 0
    ir, vis = torch.rand(1, 1, 32, 32), torch.rand(1, 1, 32, 32)
    best = fusion_losses(torch.maximum(ir, vis), ir, vis)
    assert best["intensity"] == 0
    worse = fusion_losses((ir + vis) / 2, ir, vis)
    assert worse["intensity"] > 0.1 and worse["gradient"] > best["gradient"] * 0 and worse["ssim"] < 2


def test_crops_are_aligned_flipped_and_in_range(subset: Path) -> None:
    data = PairCrops(subset, crop=48)
    assert len(data) == 4
    rng = np.random.default_rng(0)
    ir, vis = data.batch(np.arange(4), rng)
    assert ir.shape == vis.shape == (4, 1, 48, 48) and ir.dtype == torch.float32
    assert 0 <= ir.min() and ir.max() <= 1 and vis.std() > 0.01
    # the same seed gives the same crops: a resumed run sees the same data as an uninterrupted one
    again = data.batch(np.arange(4), np.random.default_rng(0))
    assert torch.equal(again[0], ir) and torch.equal(again[1], vis)


def test_a_few_training_steps_lower_the_loss(subset: Path) -> None:
    torch.manual_seed(0)
    data = PairCrops(subset, crop=48)
    ir, vis = data.batch(np.arange(4), np.random.default_rng(1))
    model = build_model(TINY)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)

    def evaluate(stage: int) -> float:
        torch.manual_seed(123)  # the same diffusion noise and timesteps for before/after
        with torch.no_grad():
            return model.training_losses(ir, vis, stage)["total"].item()

    before = {stage: evaluate(stage) for stage in (1, 2)}
    for stage in (1, 2):
        for _ in range(25):
            loss = model.training_losses(ir, vis, stage)["total"]
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    after = {stage: evaluate(stage) for stage in (1, 2)}
    assert after[1] < before[1] * 0.95
    assert after[2] < before[2] * 0.95


def test_two_stage_run_writes_log_checkpoint_and_resumes(subset: Path, tmp_path: Path) -> None:
    preset = tmp_path / "tiny.yaml"
    preset.write_text(yaml.safe_dump(TINY))
    out = tmp_path / "run"
    args = ["--preset", str(preset), "--data", str(subset), "--out", str(out),
            "--set", "crop=32", "--set", "batch_size=2", "--set", "threads=1"]
    cfg, resume = parse_args([*args, "--epochs", "2"])
    assert cfg["epochs"] == 2 and not resume
    final = train(cfg, progress=False)
    rows = list(csv.DictReader((out / "log.csv").open()))
    assert [r["stage"] for r in rows] == ["1", "2"]
    assert float(rows[0]["reconstruction"]) > 0 and float(rows[1]["gradient"]) > 0
    model, loaded_preset = load_checkpoint(final)
    meta = torch.load(final, weights_only=True)["meta"]
    assert loaded_preset == TINY and meta["epochs"] == 2 and meta["pairs"] == 4 and meta["stage1_epochs"] == 1
    # resuming to 3 epochs continues from epoch 2 instead of starting over
    cfg, resume = parse_args([*args, "--epochs", "3", "--resume"])
    train(cfg, resume=resume, progress=False)
    rows = list(csv.DictReader((out / "log.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2", "3"] and rows[2]["stage"] == "2"
    # fine-tuning: a warm start from the final checkpoint, Stage II only
    tuned_dir = tmp_path / "tuned"
    cfg, _ = parse_args([*args[:4], "--out", str(tuned_dir), "--epochs", "1", "--set", f"init={final}",
                         "--set", "stage1_fraction=0", "--set", "crop=32", "--set", "batch_size=2", "--set", "threads=1"])
    tuned = train(cfg, progress=False)
    assert [r["stage"] for r in csv.DictReader((tuned_dir / "log.csv").open())] == ["2"]
    assert torch.load(tuned, weights_only=True)["meta"]["init"]["epochs"] == 3


def test_data_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(StreamFusionError, match="training data folder not found"):
        list_pairs(tmp_path / "nowhere")
    for sub, name in (("ir", "a.png"), ("vis", "b.png")):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / name).write_bytes(b"")
    with pytest.raises(StreamFusionError, match="file names differ"):
        list_pairs(tmp_path)


def test_cli_bad_data_exits_2_with_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "stream_fusion.training.train", "--data", str(tmp_path / "missing"),
         "--out", str(tmp_path)],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("error: training data folder not found") and result.stderr.count("\n") == 1


def test_crop_must_fit_the_network(subset: Path, tmp_path: Path) -> None:
    # lite works at half resolution (size multiple 8): a crop of 100 would fail deep in the network with a shape error
    cfg, _ = parse_args(["--preset", "lite", "--data", str(subset), "--out", str(tmp_path / "run"),
                         "--epochs", "1", "--set", "crop=100", "--set", "threads=1"])
    with pytest.raises(StreamFusionError, match="crop 100 must be a multiple of the lite network's size multiple, 8"):
        train(cfg, progress=False)
    assert not (tmp_path / "run" / "log.csv").exists()


def test_training_options_take_the_streaming_commands_override_path(tmp_path: Path) -> None:
    """Defaults (configs/train.yaml), then --config, then the named options, then --set, each type-checked: the
    order and the checks of run_stream.py."""
    config = tmp_path / "run.yaml"
    config.write_text("epochs: 7\nlr: 0.002\n")
    cfg, resume = parse_args(["--config", str(config), "--epochs", "3", "--set", "lr=0.003", "--set", "loss.ssim=2"])
    assert (cfg["epochs"], cfg["lr"], cfg["loss"]["ssim"], resume) == (3, 0.003, 2.0, False)
    cfg, _ = parse_args(["--epochs", "3", "--set", "epochs=5"])
    assert cfg["epochs"] == 5  # --set comes last, as for the streaming command
    with pytest.raises(StreamFusionError, match="unknown config key 'loss.ssmi'"):
        parse_args(["--set", "loss.ssmi=1"])



def test_the_data_folder_is_found_where_stream_fusion_data_says(tmp_path: Path) -> None:
    """configs/train.yaml's data: null means the train/ split of the one data folder every tool uses: ../shared/data
    beside the checkout, or $STREAM_FUSION_DATA."""
    env = {**os.environ, "STREAM_FUSION_DATA": str(tmp_path / "elsewhere")}
    result = subprocess.run([sys.executable, "-m", "stream_fusion.training.train", "--out", str(tmp_path / "run")],
                            capture_output=True, text=True, cwd=REPO, env=env, timeout=120)
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: training data folder not found: {tmp_path / 'elsewhere' / 'train' / 'ir'}")
    if "STREAM_FUSION_DATA" not in os.environ:
        assert DATA_DIR == REPO.parent / "shared" / "data"
