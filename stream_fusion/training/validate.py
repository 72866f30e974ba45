"""Score networks on the scene-disjoint validation split (``split.py``): the model selection of a training run, and
``python -m stream_fusion.training.validate --checkpoint A.pt [B.pt ...]`` to compare finished runs.

Each validation pair is fused whole, at its native size, as the runtime fuses it (:class:`TorchEngine`: padding,
YCrCb route or colour), and scored on its luma with the evaluation's own metrics (VIF, Qabf, SSIM) and daylight
measure (``stream_fusion.evaluate``), next to the two classical baselines on the same pairs, so each number has the
bar it must clear beside it. The selection score is ``VIF + Qabf - (1 - daylight kept)``: the two metrics the bars
rank by, less the share of validation pairs whose daylight the fusion dims below 0.8x (each such pair costs about
as much as losing all of a good network's lead in VIF over the Laplacian pyramid).

With ``day_ir`` (training config ``val_day_ir``, CLI ``--day-ir``), each validation pair whose visible frame is the
brighter source also gets a "dark flat IR by day" copy (:func:`day_ir_copy`: the training augmentation's transform at
its mildest setting, not drawn at random), counted in the daylight share only. Why: the held-out scenes have no day
as hard as a hazy visible frame over dark, high-contrast IR, so no checkpoint dims a real validation pair below 0.8x
and the score cannot tell a network that keeps daylight from one that does not; the copies give it such days without
looking at the evaluation sets.

Comparing runs (``--reference``, ``--vif-floor``): a product bar is a floor, not a trade. The colour network must keep
its VIF at 0.95x base's (docs/evaluation.md, issue 6), so a checkpoint whose validation VIF is below ``--vif-floor``
times the reference network's is not eligible, however well it keeps daylight; the choice is the best score among the
rest. Without the floor the day_ir share outweighs a few per cent of VIF and picks a run that misses that bar.
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
from stream_fusion.training.augment import DAY_IR_GAIN, DAY_IR_GAMMA, DAY_IR_MEAN, dark_flat_ir
from stream_fusion.training.data import list_pairs
from stream_fusion.training.split import split_scenes

Pair = tuple[str, np.ndarray, np.ndarray]  # name, IR gray, visible as stored (gray or BGR)
COLUMNS = ("VIF", "Qabf", "SSIM", "day_min", "day_kept", "score")
# day_ir's ranges (augment.py) at their mildest: the flattest IR (gain 0.15) around its brightest mean (0.3), the
# visible frame brightened least (gamma 0.9). The mildest, because at the ranges' middle or hardest corner every
# cdfusion checkpoint dimmed every copy below 0.8x, so the share could not rank them (docs/model.md, "Issue 15 point 6").
DAY_IR_SETTING = {"gain": DAY_IR_GAIN[0], "mean": DAY_IR_MEAN[1], "gamma": DAY_IR_GAMMA[1]}


def validation_pairs(root: Path, fraction: float, colour_only: bool = False) -> list[Pair]:
    """The validation pairs of ``root`` (its scene-disjoint ``fraction``), loaded once. ``colour_only``: the colour
    network's validation (it trains on colour pairs only)."""
    paths = {ir.name: (ir, vis) for ir, vis in list_pairs(root)}
    _, val = split_scenes(sorted(paths), fraction)
    pairs = [(name, *load_pair(name, *paths[name])) for name in val]
    return [p for p in pairs if p[2].ndim == 3] if colour_only else pairs


def day_ir_copy(pair: Pair) -> Pair:
    """``augment.day_ir`` at :data:`DAY_IR_SETTING` on a stored pair: IR flattened around a dark mean, visible
    brightened; uint8 like the frames the runtime gets."""
    name, ir, vis = pair
    ir_f, vis_f = dark_flat_ir(ir.astype(np.float32) / 255.0, vis.astype(np.float32) / 255.0, **DAY_IR_SETTING)
    ir_u8, vis_u8 = (np.round(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8) for x in (ir_f, vis_f))
    return f"{name}+day_ir", ir_u8, vis_u8


def day_ir_copies(pairs: Sequence[Pair]) -> list[Pair]:
    """The day_ir copies of the pairs whose visible frame is the brighter source (the daylight scenes)."""
    return [day_ir_copy(p) for p in pairs if visible_is_brighter(p[1], to_gray(p[2]))]


def score_fusions(pairs: Sequence[Pair], fuse, day_pairs: Sequence[Pair] = ()) -> dict[str, float]:
    """Means of VIF, Qabf and SSIM of ``fuse(ir, vis)`` over the pairs, the daylight measure (worst ratio and the
    share of visible-brighter pairs at or above 0.8x, ``day_pairs`` counted there and only there) and the
    selection score."""
    rows, day = [], []
    for _, ir, vis in pairs:
        fused, vis_y = to_gray(fuse(ir, vis)), to_gray(vis)
        rows.append((vif(fused, ir, vis_y), qabf(fused, ir, vis_y), ssim(fused, ir, vis_y)))
        if visible_is_brighter(ir, vis_y):
            day.append(luma_ratio(fused, vis_y))
    for _, ir, vis in day_pairs:
        vis_y = to_gray(vis)
        if visible_is_brighter(ir, vis_y):
            day.append(luma_ratio(to_gray(fuse(ir, vis)), vis_y))
    means = np.mean(rows, axis=0)
    kept = float(np.mean(np.asarray(day) >= DAYLIGHT_BAR)) if day else 1.0
    return {"VIF": float(means[0]), "Qabf": float(means[1]), "SSIM": float(means[2]),
            "day_min": float(min(day)) if day else float("nan"), "day_kept": kept,
            "score": float(means[0] + means[1] - (1.0 - kept))}


def baseline_scores(pairs: Sequence[Pair], day_pairs: Sequence[Pair] = ()) -> dict[str, dict[str, float]]:
    """The plain average's and the Laplacian pyramid's scores on the pairs (the bars' references)."""
    return {name: score_fusions(pairs, cls().fuse, day_pairs) for name, cls in BASELINES.items()}


def score_model(model, pairs: Sequence[Pair], day_pairs: Sequence[Pair] = ()) -> dict[str, float]:
    """A network in memory (eval mode is set and restored) scored as the runtime would run it."""
    from stream_fusion.training.model.torch_engine import TorchEngine

    was_training = model.training
    model.eval()
    try:
        return score_fusions(pairs, TorchEngine(model).fuse, day_pairs)
    finally:
        model.train(was_training)


def choose(candidates: Sequence[tuple[str, dict[str, float]]], reference_vif: float,
           floor: float) -> tuple[str | None, list[str]]:
    """The candidate with the best score among those whose VIF is at least ``floor * reference_vif``, and the labels
    of those below it (``None`` when every candidate is below)."""
    bar = floor * reference_vif
    eligible = [(label, s) for label, s in candidates if s["VIF"] >= bar]
    below = [label for label, s in candidates if s["VIF"] < bar]
    best = max(eligible, key=lambda row: row[1]["score"])[0] if eligible else None
    return best, below


def table(rows: Sequence[tuple[str, dict[str, float]]]) -> str:
    lines = ["| method | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    lines += [f"| {label} | " + " | ".join(f"{s[c]:.3f}" for c in COLUMNS) + " |" for label, s in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stream_fusion.training.validate", description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", nargs="+", required=True, type=Path, help="checkpoints (.pt) to score")
    parser.add_argument("--data", type=Path, default=DATA_DIR / "train", help="training folder the split is carved from")
    parser.add_argument("--val-fraction", type=float, default=0.2, help="share of each family's pairs (default 0.2)")
    parser.add_argument("--colour-only", action="store_true", help="only the colour pairs (the colour network's split)")
    parser.add_argument("--day-ir", action="store_true",
                        help="also count day_ir copies of the daylight pairs in the daylight share (day_ir_copy)")
    parser.add_argument("--reference", type=Path,
                        help="checkpoint whose validation VIF sets the floor; prints the choice among --checkpoint")
    parser.add_argument("--vif-floor", type=float, default=0.95,
                        help="eligible: VIF >= this times the reference's (default 0.95, issue 6's bar)")
    args = parser.parse_args(argv)
    if not 0.0 < args.vif_floor <= 1.0:
        parser.error(f"--vif-floor must be in (0, 1], got {args.vif_floor}")
    missing = [str(p) for p in [*args.checkpoint, *([args.reference] if args.reference else [])] if not p.is_file()]
    if missing:
        parser.error(f"checkpoint not found: {', '.join(missing)}")
    from stream_fusion.training.model import load_checkpoint

    pairs = validation_pairs(args.data, args.val_fraction, colour_only=args.colour_only)
    day_pairs = day_ir_copies(pairs) if args.day_ir else []
    rows = [(name, scores) for name, scores in baseline_scores(pairs, day_pairs).items()]

    def scored(path: Path, label: str) -> tuple[str, dict[str, float]]:
        return label, score_model(load_checkpoint(path)[0], pairs, day_pairs)

    candidates = [scored(path, str(path)) for path in args.checkpoint]
    reference = scored(args.reference, f"{args.reference} (reference)") if args.reference else None
    print(f"{len(pairs)} validation pairs (scene-disjoint, {args.val_fraction:g} of {args.data})"
          + (f", {len(day_pairs)} day_ir copies in the daylight share" if day_pairs else ""))
    print(table(rows + ([reference] if reference else []) + candidates))
    if reference:
        vif_bar = args.vif_floor * reference[1]["VIF"]
        best, below = choose(candidates, reference[1]["VIF"], args.vif_floor)
        print(f"VIF floor {args.vif_floor:g} x {reference[1]['VIF']:.3f} = {vif_bar:.3f}; below it: "
              + (", ".join(below) or "none"))
        print(f"chosen: {best}" if best else "chosen: none (every checkpoint is below the VIF floor)")
    return 0


if __name__ == "__main__":
    run_cli(main)
