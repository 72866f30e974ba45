"""Does an engine on a provider give the frames the CPU engine gives? ``python scripts/check_routes.py --provider cuda``

On a GPU provider the engine does the per-pixel work inside the session (IR warp, colour split and merge, padding,
the visible frame beyond the IR view); on the CPU, OpenCV does it on the host. The two routes agree to 2 grey levels
for a luminance network and 1 for the colour one (tests/test_warp.py, on the CPU). This script checks it where it
matters, on the GPU: real eval pairs, with and without a calibration-like warp (an IR camera of 3/4 the size and a
narrow IR lens), every shipped network, colour and gray visible frames; it prints a line per case and writes JSON.
On the CPU provider it compares the in-session route, run on the CPU, with the host route.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a plain script from a checkout, installed or not

from stream_fusion import DATA_DIR  # noqa: E402
from stream_fusion.engine import SHIPPED_MODELS  # noqa: E402
from stream_fusion.engine.onnx_engine import OnnxEngine  # noqa: E402
from stream_fusion.errors import StreamFusionError, run_cli  # noqa: E402
from stream_fusion.warp import IrWarp  # noqa: E402

DATA = DATA_DIR / "eval"
TOLERANCE = {"lite": 2, "base": 2, "cdfusion": 1}  # grey levels; fp16 files get 4 more (fp16 rounding)


def pairs(count: int | None) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """``count`` pairs of each eval split (first by name; all without a count), as (name, IR gray, visible BGR)."""
    found = []
    for split in ("tno25", "roadscene50"):
        for path in sorted((DATA / split / "ir").glob("*.png"))[:count]:
            ir = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
            vis = cv2.imread(str(DATA / split / "vis" / path.name), cv2.IMREAD_COLOR)
            if ir is None or vis is None:
                raise StreamFusionError(f"cannot read the pair {split}/{path.name}")
            found.append((f"{split}/{path.name}", ir, vis))
    if not found:
        raise StreamFusionError(f"no evaluation pairs under {DATA.resolve()}")
    return found


def warps(ir: np.ndarray, vis: np.ndarray) -> dict[str, tuple[np.ndarray, IrWarp | None]]:
    """The IR frame and warp of each case: none, a smaller IR camera's calibration, a narrow IR lens."""
    h, w = vis.shape[:2]
    small = cv2.resize(ir, (w * 3 // 4, h * 3 // 4), interpolation=cv2.INTER_AREA)
    calibration = np.array([[4 / 3 * 1.01, 0.02, -4.0], [0.01, 4 / 3 * 0.98, 3.0], [4e-5, -2e-5, 1]])
    narrow = np.vstack([cv2.getRotationMatrix2D((w / 2, h / 2), 2, 0.6), [0, 0, 1]])
    return {"registered": (ir, None),
            "calibrated": (small, IrWarp(calibration, (small.shape[1], small.shape[0]), (w, h))),
            "narrow lens": (ir, IrWarp(narrow, (w, h), (w, h)))}


def check(model: Path, provider: str, count: int, cuda_graph: bool = False) -> list[dict[str, Any]]:
    """Every case of ``model`` on ``provider`` (the session route) against the CPU engine (the host route).

    With ``cuda_graph`` each pair gets an engine that replays a CUDA graph captured for its size, and fuses the pair,
    its mirror image, then the pair again: a replay that did not see the new frame would give the previous output."""
    host = OnnxEngine(model, "cpu", warmup=False)
    session = None if cuda_graph else OnnxEngine(model, provider, in_session=True, warmup=False)
    results = []
    for name, ir, vis in pairs(count):
        if cuda_graph:
            h, w = vis.shape[:2]
            session = OnnxEngine(model, provider, in_session=True, resolution=(w, h), cuda_graph=True)
        tolerance = TOLERANCE.get(host.preset, 2) + (4 if session.precision == "fp16" else 0)
        for case, (ir_frame, warp) in warps(ir, vis).items():
            if cuda_graph and warp is not None and warp.ir_size != warp.size:
                continue  # a graph is for one IR size too: the calibrated case's smaller IR would rebuild it
            for colour in (True, False) if not host.colour else (True,):
                frame = vis if colour else cv2.cvtColor(vis, cv2.COLOR_BGR2GRAY)
                frames = [(ir_frame, frame, "")]
                if cuda_graph:
                    mirrored = (ir_frame[:, ::-1].copy(), frame[:, ::-1].copy(), " mirrored")
                    frames += [mirrored, (ir_frame, frame, " again")]
                for ir_in, vis_in, label in frames:
                    expected = host.fuse(ir_in, vis_in, warp).astype(int)
                    got = session.fuse(ir_in, vis_in, warp).astype(int)
                    difference = np.abs(got - expected)
                    results.append({
                        "model": host.name, "provider": session.provider, "precision": session.precision,
                        "cuda_graph": cuda_graph, "pair": name, "case": case + label,
                        "visible": "colour" if colour else "gray", "max": int(difference.max()),
                        "mean": float(difference.mean()), "over_1": float((difference > 1).mean()),
                        "ok": bool(difference.max() <= tolerance),
                    })
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--provider", default="auto", choices=["auto", "tensorrt", "cuda", "cpu"])
    parser.add_argument("--models", default="lite,base,cdfusion",
                        help="shipped network names or .onnx paths, comma-separated (default lite,base,cdfusion)")
    parser.add_argument("--pairs", type=int, default=2, help="pairs of each eval split (default 2)")
    parser.add_argument("--cuda-graph", action="store_true",
                        help="the engine replays a CUDA graph (new frames must reach it: each pair, mirrored, again)")
    parser.add_argument("--json", type=Path, help="also write every case here")
    args = parser.parse_args(argv)
    results = []
    for name in args.models.split(","):
        model = SHIPPED_MODELS.get(name, Path(name))
        for row in check(model, args.provider, args.pairs, args.cuda_graph):
            results.append(row)
            print(f"{'ok  ' if row['ok'] else 'FAIL'} {row['model']} {row['provider']} {row['precision']} "
                  f"{row['pair']} {row['case']} {row['visible']}: max {row['max']}, mean {row['mean']:.3f}, "
                  f"{100 * row['over_1']:.3f} % over 1 level")
    failed = sum(not row["ok"] for row in results)
    print(f"{len(results) - failed} of {len(results)} cases within tolerance")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    run_cli(main)
