"""Score networks on the scene-disjoint validation split (``split.py``): the model selection of a training run, and
``python -m stream_fusion.training.validate --checkpoint A.pt [B.pt ...]`` to compare finished runs.

Each validation pair is fused whole, at its native size, as the runtime fuses it (:class:`TorchEngine`: padding,
YCrCb route or colour), and scored on its luma with the evaluation's own metrics (VIF, Qabf, SSIM) and daylight
measure (``stream_fusion.evaluate``), next to the two classical baselines on the same pairs, so each number has the
bar it must clear beside it. The selection score is ``VIF + Qabf - (1 - daylight kept)``: the two metrics the bars
rank by, less the share of validation pairs whose daylight the fusion dims below 0.8x (each such pair costs about
as much as losing all of a good network's lead in VIF over the Laplacian pyramid).
"""
from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from stream_fusion import DATA_DIR
from stream_fusion.batch import load_pair
from stream_fusion.engine.classical import BASELINES
from stream_fusion.engine.frames import to_gray
from stream_fusion.errors import run_cli
from stream_fusion.evaluate.metrics import qabf, ssim, vif
from stream_fusion.evaluate.stability import DAYLIGHT_BAR, luma_ratio, visible_is_brighter
from stream_fusion.training.data import list_pairs
from stream_fusion.training.split import split_scenes

Pair = tuple[str, np.ndarray, np.ndarray]  # name, IR gray, visible as stored (gray or BGR)
COLUMNS = ("VIF", "Qabf", "SSIM", "day_min", "day_kept", "score")


def validation_pairs(root: Path, fraction: float, colour_only: bool = False) -> list[Pair]:
    """The validation pairs of ``root`` (its scene-disjoint ``fraction``), loaded once. ``colour_only``: the colour
    network's validation (it trains on colour pairs only)."""
    paths = {ir.name: (ir, vis) for ir, vis in list_pairs(root)}
    _, val = split_scenes(sorted(paths), fraction)
    pairs = [(name, *load_pair(name, *paths[name])) for name in val]
    return [p for p in pairs if p[2].ndim == 3] if colour_only else pairs


def score_fusions(pairs: Sequence[Pair], fuse) -> dict[str, float]:
    """Means of VIF, Qabf and SSIM of ``fuse(ir, vis)`` over the pairs, the daylight measure (worst ratio and the
    share of visible-brighter pairs at or above 0.8x) and the selection score."""
    rows, day = [], []
    for _, ir, vis in pairs:
        fused, vis_y = to_gray(fuse(ir, vis)), to_gray(vis)
        rows.append((vif(fused, ir, vis_y), qabf(fused, ir, vis_y), ssim(fused, ir, vis_y)))
        if visible_is_brighter(ir, vis_y):
            day.append(luma_ratio(fused, vis_y))
    means = np.mean(rows, axis=0)
    kept = float(np.mean(np.asarray(day) >= DAYLIGHT_BAR)) if day else 1.0
    return {"VIF": float(means[0]), "Qabf": float(means[1]), "SSIM": float(means[2]),
            "day_min": float(min(day)) if day else float("nan"), "day_kept": kept,
            "score": float(means[0] + means[1] - (1.0 - kept))}


def baseline_scores(pairs: Sequence[Pair]) -> dict[str, dict[str, float]]:
    """The plain average's and the Laplacian pyramid's scores on the pairs (the bars' references)."""
    return {name: score_fusions(pairs, cls().fuse) for name, cls in BASELINES.items()}


def score_model(model, pairs: Sequence[Pair]) -> dict[str, float]:
    """A network in memory (eval mode is set and restored) scored as the runtime would run it."""
    from stream_fusion.training.model.torch_engine import TorchEngine

    was_training = model.training
    model.eval()
    try:
        return score_fusions(pairs, TorchEngine(model).fuse)
    finally:
        model.train(was_training)


def table(rows: Sequence[tuple[str, dict[str, float]]]) -> str:
    lines = ["| method | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    lines += [f"| {label} | " + " | ".join(f"{s[c]:.3f}" for c in COLUMNS) + " |" for label, s in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stream_fusion.training.validate", description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", nargs="+", required=True, type=Path, help="checkpoints (.pt) to score")
    parser.add_argument("--data", type=Path, default=DATA_DIR / "train", help="training folder the split is carved from")
    parser.add_argument("--val-fraction", type=float, default=0.2, help="share of each family's pairs (default 0.2)")
    args = parser.parse_args(argv)
    from stream_fusion.training.model import load_checkpoint

    pairs = validation_pairs(args.data, args.val_fraction)
    rows = [(name, scores) for name, scores in baseline_scores(pairs).items()]
    for path in args.checkpoint:
        model, _ = load_checkpoint(path)
        rows.append((str(path), score_model(model, pairs)))
    print(f"{len(pairs)} validation pairs (scene-disjoint, {args.val_fraction:g} of {args.data})")
    print(table(rows))
    return 0


if __name__ == "__main__":
    run_cli(main)
