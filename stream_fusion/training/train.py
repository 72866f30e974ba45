"""Train DiffFuseNet on folders of registered IR / visible pairs (two stages, unsupervised).

    python -m stream_fusion.training.train --config configs/train.yaml [--preset lite|base] [--epochs N] [--out DIR]
                                           [--resume]

Stage I trains the D²FE part (shared encoder + denoiser, plus a light reconstruction head that keeps the encoder
from collapsing its features to make noise prediction trivial) on the diffusion, consistency and reconstruction
losses. Stage II trains the whole network on the fusion losses with the D²FE losses kept as a regulariser.
The run directory holds ``log.csv`` (per-epoch mean losses), ``last.pt`` (resume state, written every epoch) and
``final.pt`` (the last epoch's weights); with ``val_fraction`` > 0, whole scenes are held out of training and the
network is scored on them every ``val_every`` epochs (``validate.py``), and ``best.pt`` keeps the best-scoring epoch
(the checkpoint to ship: selected on held-out scenes, never on the eval sets). Each epoch's randomness derives from (seed, epoch), so a resumed run makes the
same crops as an uninterrupted one.
"""
from __future__ import annotations

import argparse
import csv
import math
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from stream_fusion import DATA_DIR, PACKAGE_DIR
from stream_fusion.config import CONFIG_DIR, Option, add_config_options, config_from_args
from stream_fusion.training.data import PairCrops, list_pairs
from stream_fusion.training.split import split_scenes
from stream_fusion.training.validate import day_ir_copies, score_model, validation_pairs
from stream_fusion.errors import StreamFusionError, run_cli
from stream_fusion.training.model import build_model, load_preset, save_checkpoint
from stream_fusion.training.model.checkpoint import read_checkpoint

REPO_DIR = PACKAGE_DIR.parent  # training runs from a checkout: its config paths are relative to it
TRAIN_DEFAULTS = CONFIG_DIR / "train.yaml"


def resolve(path: str) -> Path:
    """Config paths are relative to the repository root, so the same YAML works from any directory."""
    p = Path(path)
    return p if p.is_absolute() else REPO_DIR / p


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_DIR, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def learning_rate(cfg: dict[str, Any], epoch: int, step: int, steps_per_epoch: int, stage1: int) -> float:
    """Constant in Stage I; cosine from ``lr`` to ``lr_min`` over Stage II."""
    if epoch < stage1:
        return cfg["lr"]
    total = max(1, (cfg["epochs"] - stage1) * steps_per_epoch)
    done = (epoch - stage1) * steps_per_epoch + step
    return cfg["lr_min"] + 0.5 * (cfg["lr"] - cfg["lr_min"]) * (1 + math.cos(math.pi * done / total))


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise StreamFusionError("device 'cuda' requested but torch sees no CUDA GPU (use device=auto or cpu)")
    if name not in ("cpu", "cuda"):
        raise StreamFusionError(f"device must be auto, cpu or cuda, got '{name}'")
    return torch.device(name)


def stage1_epochs(cfg: dict[str, Any]) -> int:
    """At least one epoch of each stage when there are two or more, unless Stage I is switched off (fine-tuning)."""
    if cfg["epochs"] < 2 or cfg["stage1_fraction"] <= 0:
        return 0
    return min(cfg["epochs"] - 1, max(1, round(cfg["epochs"] * cfg["stage1_fraction"])))


def train(cfg: dict[str, Any], resume: bool = False, progress: bool = True) -> Path:
    """Run (or resume) one training run; returns the path of its final checkpoint."""
    if cfg["epochs"] < 1 or cfg["batch_size"] < 1 or cfg["crop"] < 16:
        raise StreamFusionError("epochs and batch_size must be >= 1 and crop >= 16")
    out = resolve(cfg["out"])
    commit = git_commit()  # the code the run starts with, not whatever HEAD is when it ends
    device = pick_device(cfg["device"])
    if cfg["threads"] > 0:
        torch.set_num_threads(cfg["threads"])
    preset = load_preset(cfg["preset"])
    torch.manual_seed(cfg["seed"])
    model = build_model(preset).to(device)
    data_dir = resolve(cfg["data"]) if cfg["data"] else DATA_DIR / "train"
    colour = getattr(model, "vis_channels", 1) == 3
    try:
        train_names, _ = split_scenes([ir.name for ir, _ in list_pairs(data_dir)], cfg["val_fraction"])
        data = PairCrops(data_dir, cfg["crop"], colour=colour, names=set(train_names), augment=cfg["augment"],
                         gray=cfg["gray_visible"])
    except ValueError as error:
        raise StreamFusionError(str(error)) from None
    colour_only = colour and not cfg["gray_visible"]  # validate on the kinds of pair the network trains on
    val_pairs = validation_pairs(data_dir, cfg["val_fraction"], colour_only=colour_only) if cfg["val_fraction"] else []
    day_pairs = day_ir_copies(val_pairs) if cfg["val_day_ir"] else []
    if val_pairs and progress:
        print(f"validation: {len(val_pairs)} pairs of scenes held out of training ({len(data)} pairs train)"
              + (f", {len(day_pairs)} day_ir copies in the daylight share" if day_pairs else ""))
    if colour and cfg["gray_visible"] and progress:
        print(f"colour model: training on the {len(data)} pairs, gray-visible ones as three equal channels")
    elif data.skipped_gray and progress:
        print(f"colour model: training on the {len(data)} colour pairs ({data.skipped_gray} gray-visible pairs skipped)")
    if cfg["crop"] % model.size_multiple:
        raise StreamFusionError(
            f"crop {cfg['crop']} must be a multiple of the {preset.get('name')} network's size multiple, {model.size_multiple}"
        )
    if cfg["init"] and not resume:
        init_from(model, resolve(cfg["init"]))
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg["lr"])
    first_epoch, wall = 0, 0.0
    best: dict[str, float] = {}
    state_path = out / "last.pt"
    if resume:
        if not state_path.is_file():
            raise StreamFusionError(f"--resume: no {state_path} to resume from")
        state = torch.load(state_path, map_location=device, weights_only=True)
        if state["preset"] != preset:
            raise StreamFusionError(f"--resume: {state_path} was trained with a different preset")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        first_epoch, wall = state["epoch"], state["wall_s"]
        best = state.get("best", best)
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / "log.csv"
    stage1 = stage1_epochs(cfg)
    steps_per_epoch = math.ceil(len(data) / cfg["batch_size"])
    bar = tqdm(
        total=cfg["epochs"] * steps_per_epoch, initial=first_epoch * steps_per_epoch, disable=not progress,
        desc=f"train {preset['name']}", unit="it", dynamic_ncols=True,
    )
    model.train()
    for epoch in range(first_epoch, cfg["epochs"]):
        stage = 1 if epoch < stage1 else 2
        rng = np.random.default_rng([cfg["seed"], epoch])
        torch.manual_seed(cfg["seed"] * 100_003 + epoch)
        sums: dict[str, float] = {}
        start = time.time()
        for step, indices in enumerate(data.epoch(cfg["batch_size"], rng)):
            lr = learning_rate(cfg, epoch, step, steps_per_epoch, stage1)
            for group in optimizer.param_groups:
                group["lr"] = lr
            ir, vis = (x.to(device) for x in data.batch(indices, rng))
            losses = model.training_losses(ir, vis, stage, cfg["loss"])
            if not torch.isfinite(losses["total"]):
                raise StreamFusionError(f"loss became {losses['total'].item()} at epoch {epoch + 1}: lower lr")
            optimizer.zero_grad(set_to_none=True)
            losses["total"].backward()
            optimizer.step()
            for name, value in losses.items():
                sums[name] = sums.get(name, 0.0) + value.item() * len(indices)
            bar.update(1)
            bar.set_postfix(stage=stage, loss=f"{losses['total'].item():.4f}")
        wall += time.time() - start
        row = {"epoch": epoch + 1, "stage": stage, "lr": f"{lr:.3g}", "seconds": f"{wall:.1f}"}
        row.update({name: f"{total / len(data):.5f}" for name, total in sorted(sums.items())})
        if val_pairs and ((epoch + 1) % cfg["val_every"] == 0 or epoch + 1 == cfg["epochs"]):
            scores = score_model(model, val_pairs, day_pairs)
            row.update({f"val_{k}": f"{v:.4f}" for k, v in scores.items()})
            if not best or scores["score"] > best["score"]:  # model selection on held-out scenes only
                best = {**scores, "epoch": epoch + 1}
                save_checkpoint(out / "best.pt", model.eval(), preset, {**run_meta(cfg, stage1, data, data_dir,
                                commit, wall, device), "validation": best})
                model.train()
            bar.write(f"epoch {epoch + 1}: validation " + ", ".join(f"{k} {v:.3f}" for k, v in scores.items()))
        write_log(log_path, row)
        torch.save(
            {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch + 1, "wall_s": wall,
             "preset": preset, "best": best},
            state_path,
        )
    bar.close()
    final = out / "final.pt"
    meta = run_meta(cfg, stage1, data, data_dir, commit, wall, device)
    if best:
        meta["validation_best"] = best
    save_checkpoint(final, model.eval(), preset, meta)
    return final


def run_meta(cfg: dict[str, Any], stage1: int, data: PairCrops, data_dir: Path, commit: str, wall: float,
             device: torch.device) -> dict[str, Any]:
    """What a checkpoint records about the run that made it."""
    return {
        "epochs": cfg["epochs"], "stage1_epochs": stage1, "data": str(cfg["data"] or data_dir), "pairs": len(data),
        "git_commit": commit, "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "wall_time_s": round(wall, 1), "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(),
        "threads": torch.get_num_threads(), "config": cfg,
        "init": read_checkpoint(resolve(cfg["init"]))["meta"] if cfg["init"] else None,
    }


D2FE_MODULES = ("encoder", "denoiser", "weight_map", "project", "reconstruct")
ADDED_OPTIONS = {"brightness_lift"}  # preset options a checkpoint without them can warm-start (init_from)
ADDED_OPTIONS_LAYERS = ("lift.",)


def init_from(model: torch.nn.Module, path: Path) -> None:
    """Warm start from a checkpoint. Same preset: every weight (fine-tuning). A luminance checkpoint into the colour
    model: the shared D²FE (encoder, denoiser, weight map, projection), whose names and shapes the two networks
    share, so the colour model starts from features already trained on all 205 pairs."""
    payload = read_checkpoint(path)
    if payload["preset"] == model.preset:
        model.load_state_dict(payload["state_dict"])
        return
    added = {k: v for k, v in model.preset.items() if k not in payload["preset"]}
    if added and {**payload["preset"], **added} == model.preset and set(added) <= ADDED_OPTIONS:
        # The same network plus an option whose layers start near the identity (brightness_lift): every old weight
        # loads, and only the option's own layers start fresh.
        missing, unexpected = model.load_state_dict(payload["state_dict"], strict=False)
        if unexpected or any(not key.startswith(ADDED_OPTIONS_LAYERS) for key in missing):
            raise StreamFusionError(f"init checkpoint {path} does not match the {model.preset['name']} network")
        print(f"warm start: every weight of {path}; new layers {sorted({k.split('.')[0] for k in missing})}")
        return
    if model.preset.get("model") != "cdfusion" or payload["preset"].get("model", "difffuse") != "difffuse":
        raise StreamFusionError(f"init checkpoint {path} has preset {payload['preset'].get('name')!r} with other settings")
    own = model.state_dict()
    wanted = [key for key in own if key.split(".")[0] in D2FE_MODULES]
    theirs = payload["state_dict"]
    mismatched = [key for key in wanted if key not in theirs or theirs[key].shape != own[key].shape]
    if mismatched:  # a partial warm start would put random layers under trained ones: refuse it
        first = mismatched[0]
        problem = "is missing" if first not in theirs else "differs in shape"
        raise StreamFusionError(
            f"init checkpoint {path} ({payload['preset'].get('name')}) does not match the {model.preset['name']} "
            f"network's D²FE: {first} {problem} ({len(mismatched)} of {len(wanted)} tensors do not match)"
        )
    shared = {key: theirs[key] for key in wanted}
    model.load_state_dict(shared, strict=False)
    print(f"warm start: {len(shared)} D²FE tensors from {path}")


def write_log(path: Path, row: dict[str, Any]) -> None:
    """Append one epoch to the CSV log (header on first write; Stage II adds columns, so rewrite the header then)."""
    rows = list(csv.DictReader(path.open())) if path.is_file() else []
    rows = [r for r in rows if int(r["epoch"]) < row["epoch"]] + [row]
    fields = list(dict.fromkeys(k for r in rows for k in r))
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, restval="")
        writer.writeheader()
        writer.writerows(rows)


OPTIONS: list[Option] = [
    ("--preset", "preset", {"metavar": "NAME", "help": "model preset: lite, base, cdfusion or a preset YAML"}),
    ("--epochs", "epochs", {"type": int, "metavar": "N", "help": "total epochs (Stage I + Stage II)"}),
    ("--out", "out", {"metavar": "DIR", "help": "run directory"}),
    ("--data", "data", {"metavar": "DIR", "help": "folder with ir/ and vis/ subfolders"}),
]


def parse_args(argv: list[str] | None = None) -> tuple[dict[str, Any], bool]:
    """The run's config by the streaming command's override path (defaults: configs/train.yaml) and ``--resume``."""
    parser = argparse.ArgumentParser(prog="python -m stream_fusion.training.train",
                                     description=__doc__.split("\n")[0])
    add_config_options(parser, OPTIONS, "training YAML over configs/train.yaml (e.g. configs/train_cdfusion.yaml)",
                       "loss.gradient=20", defaults_path=TRAIN_DEFAULTS)
    parser.add_argument("--resume", action="store_true", help="continue from <out>/last.pt")
    args = parser.parse_args(argv)
    cfg = config_from_args(args, OPTIONS, defaults_path=TRAIN_DEFAULTS)
    if args.preset is not None and args.out is None and cfg["out"] == "runs/lite":
        cfg["out"] = f"runs/{args.preset}"
    return cfg, args.resume


def main(argv: list[str] | None = None) -> int:
    cfg, resume = parse_args(argv)
    final = train(cfg, resume=resume)
    print(f"final checkpoint: {final}")
    return 0


if __name__ == "__main__":
    run_cli(main)
