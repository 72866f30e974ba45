"""Score training runs for the ablation table of docs/model.md: ``python scripts/score_runs.py A.pt B.pt ...``.

Each checkpoint (and the two classical baselines, for the bars) is run through :class:`TorchEngine` (the runtime's
padding and colour handling) on the scene-disjoint validation split (``stream_fusion.training.split``; what runs are
*selected* on) and, for reporting only, on the eval sets tno25 and roadscene50 and the nato_camp sequence. Columns:
VIF, Qabf, SSIM means; ``day`` the daylight measure (worst ratio / share of visible-brighter pairs at >= 0.8x);
``flicker`` nato_camp's static-region change ratio (``stream_fusion.evaluate.stability``). One Markdown table to
stdout (and ``--json`` for the raw numbers).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from stream_fusion import DATA_DIR  # noqa: E402
from stream_fusion.batch import load_pair  # noqa: E402
from stream_fusion.capture import match_pairs  # noqa: E402
from stream_fusion.engine.classical import BASELINES  # noqa: E402
from stream_fusion.engine.frames import to_gray  # noqa: E402
from stream_fusion.evaluate.stability import temporal_change  # noqa: E402
from stream_fusion.training.validate import score_fusions, validation_pairs  # noqa: E402


def folder_pairs(root: Path) -> list[tuple[str, np.ndarray, np.ndarray]]:
    return [(name, *load_pair(name, ir, vis)) for name, ir, vis in match_pairs(root / "ir", root / "vis")]


def flicker(pairs, fuse) -> float:
    return temporal_change([(to_gray(fuse(ir, vis)), ir, to_gray(vis)) for _, ir, vis in pairs])["ratio"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="*", type=Path)
    parser.add_argument("--label", action="append", default=[], help="a label per checkpoint, in order")
    parser.add_argument("--json", type=Path, help="write the raw numbers here")
    parser.add_argument("--no-baselines", action="store_true", help="score only the checkpoints")
    args = parser.parse_args(argv)
    from stream_fusion.training.model.torch_engine import TorchEngine

    sets = {"val": validation_pairs(DATA_DIR / "train", 0.2),
            "tno25": folder_pairs(DATA_DIR / "eval" / "tno25"),
            "roadscene50": folder_pairs(DATA_DIR / "eval" / "roadscene50")}
    sequence = folder_pairs(DATA_DIR / "sequences" / "nato_camp")
    methods = {} if args.no_baselines else {name: cls().fuse for name, cls in BASELINES.items()}
    for i, path in enumerate(args.checkpoints):
        methods[args.label[i] if i < len(args.label) else str(path)] = TorchEngine(path).fuse
    results = {}
    for label, fuse in methods.items():
        results[label] = {split: score_fusions(pairs, fuse) for split, pairs in sets.items()}
        results[label]["flicker"] = flicker(sequence, fuse)
        print(f"scored {label}", file=sys.stderr, flush=True)
    head = ["method"] + [f"{s} {c}" for s in sets for c in ("VIF", "Qabf", "SSIM", "day")] + ["nato flicker"]
    print("| " + " | ".join(head) + " |\n" + "|---" * len(head) + "|")
    for label, r in results.items():
        cells = []
        for split in sets:
            s = r[split]
            cells += [f"{s['VIF']:.3f}", f"{s['Qabf']:.3f}", f"{s['SSIM']:.3f}",
                      f"{s['day_min']:.2f} / {100 * s['day_kept']:.0f} %"]
        print(f"| {label} | " + " | ".join(cells) + f" | {r['flicker']:.2f} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
