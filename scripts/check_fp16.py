"""Are the fp16 engine's frames within 2 grey levels of the fp32 engine's? ``python scripts/check_fp16.py --provider cuda``

Issue #16: the fp16 export of a shipped network becomes what the CUDA provider runs by default only once a GPU run
shows its frames within 2 grey levels of the fp32 export's on real pairs. This script is that run: every eval pair
(TNO-25 and RoadScene-50, first ``--pairs`` of each by name; default all 75), as a colour and as a gray visible
frame, through ``create_engine(name, provider, precision=...)`` for fp32 and for fp16, the two engines as they run by
default (at ``--size``: each pair resized to it, so one fixed-size engine with its CUDA graph serves every pair;
``--size native`` keeps each pair's own size, a session without fixed sizes or graph). It prints a line per network,
writes every frame's result to ``--json`` as it goes (a run cut short keeps what it measured) and, with
``--record``, the verification record that ``engine.precision: auto`` reads
(:mod:`stream_fusion.engine.precision`): each network's two files by SHA-256, the provider, the frame count and the
largest difference. Only a GPU provider's run may write a record (the CPU provider computes most fp16 nodes in
fp32 behind Casts, so its numbers are a proxy, not the evidence).
"""
from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a plain script from a checkout, installed or not

from stream_fusion import DATA_DIR  # noqa: E402
from stream_fusion.engine import create_engine, import_onnxruntime  # noqa: E402
from stream_fusion.engine.precision import GPU_PROVIDERS, MAX_LEVELS, sha256, shipped_files  # noqa: E402
from stream_fusion.errors import StreamFusionError, run_cli  # noqa: E402
from scripts.check_routes import pairs  # noqa: E402  (the same eval pairs the route check reads)



def compare(name: str, provider: str, size: tuple[int, int] | None,
            data: list[tuple[str, np.ndarray, np.ndarray]], rows: list[dict[str, Any]],
            save: Any = lambda: None) -> dict[str, Any]:
    """Every pair of ``data``, colour and gray, through the fp32 and the fp16 engine of ``name``: one row per frame
    appended to ``rows`` (``save`` called after each pair); returns the network's summary."""
    options = {"resolution": size} if size else {}
    engines = {p: create_engine(name, provider, precision=p, **options) for p in ("fp32", "fp16")}
    ran = {p: engine.provider for p, engine in engines.items()}
    if len(set(ran.values())) != 1 or engines["fp16"].precision != "fp16" or engines["fp32"].precision != "fp32":
        raise StreamFusionError(f"{name}: the two engines did not run as asked ({ran})")
    levels = []
    for pair, ir, vis in data:
        if size:
            ir, vis = (cv2.resize(image, size, interpolation=cv2.INTER_AREA) for image in (ir, vis))
        for visible, frame in (("colour", vis), ("gray", cv2.cvtColor(vis, cv2.COLOR_BGR2GRAY))):
            fused = {p: engine.fuse(ir, frame).astype(np.int16) for p, engine in engines.items()}
            difference = np.abs(fused["fp16"] - fused["fp32"])
            levels.append(int(difference.max()))
            rows.append({"model": name, "provider": ran["fp32"], "pair": pair, "visible": visible,
                         "size": f"{frame.shape[1]}x{frame.shape[0]}", "max_levels": levels[-1],
                         "mean_levels": float(difference.mean()), "over_1": float((difference > 1).mean())})
        save()
    files = shipped_files(name)
    return {"provider": ran["fp32"], "size": f"{size[0]}x{size[1]}" if size else "native",
            "pairs": len(data), "frames": len(levels), "max_levels": max(levels),
            "within_2": sum(level <= MAX_LEVELS for level in levels),
            "mean_levels": float(np.mean([row["mean_levels"] for row in rows if row["model"] == name])),
            "cuda_graph": bool(getattr(engines["fp16"], "cuda_graph", False)),
            "fp32_sha256": sha256(files["fp32"]), "fp16_sha256": sha256(files["fp16"])}


def device() -> dict[str, Any]:
    """What ran it: ONNX Runtime's version and providers, the GPU's name where nvidia-smi answers."""
    import shutil
    import subprocess

    ort = import_onnxruntime()
    gpu = None
    if shutil.which("nvidia-smi"):
        query = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                               text=True, timeout=30)
        gpu = query.stdout.strip().splitlines()[0] if query.returncode == 0 and query.stdout.strip() else None
    return {"onnxruntime": ort.__version__, "gpu": gpu, "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def parse_size(text: str) -> tuple[int, int] | None:
    if text == "native":
        return None
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise StreamFusionError(f"--size must be WIDTHxHEIGHT or native, got {text!r}") from None
    if width < 16 or height < 16:
        raise StreamFusionError(f"--size must be at least 16x16, got {text!r}")
    return width, height


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--provider", default="cuda", choices=["tensorrt", "cuda", "cpu"])
    parser.add_argument("--models", default="lite,base,cdfusion", help="shipped networks, comma-separated")
    parser.add_argument("--pairs", type=int, help="pairs of each eval split (default: all, 25 + 50)")
    parser.add_argument("--size", default="640x512", help="WIDTHxHEIGHT each pair is resized to, or native")
    parser.add_argument("--json", type=Path, help="every frame's result and each network's summary")
    parser.add_argument("--record", type=Path, help="write the verification record here (a GPU provider only), e.g. "
                                                    "stream_fusion/weights/fp16_verified.json")
    args = parser.parse_args(argv)
    size = parse_size(args.size)
    if args.record and args.provider not in GPU_PROVIDERS:
        raise StreamFusionError("--record needs a GPU provider: a CPU run of the fp16 file is a proxy, not the evidence")
    names = args.models.split(",")
    for name in names:
        if not all(path.is_file() for path in shipped_files(name).values()):
            raise StreamFusionError(f"{name}: not a shipped network with fp32 and fp16 files")
    data = pairs(args.pairs)
    report: dict[str, Any] = {"device": device(), "networks": {}, "frames": []}

    def save() -> None:
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(report, indent=1))

    def record() -> None:
        """The verification record so far (each network as it is done: a run cut short keeps its verdicts)."""
        entry = {**report["device"], "command": "python scripts/check_fp16.py " + " ".join(argv or sys.argv[1:]),
                 "networks": report["networks"]}
        args.record.parent.mkdir(parents=True, exist_ok=True)
        args.record.write_text(json.dumps(entry, indent=2) + "\n")

    for name in names:
        summary = compare(name, args.provider, size, data, report["frames"], save)
        report["networks"][name] = summary
        save()
        if args.record:
            record()
        print(f"{'ok  ' if summary['max_levels'] <= MAX_LEVELS else 'FAIL'} {name} on {summary['provider']} at "
              f"{summary['size']}: fp16 vs fp32, {summary['within_2']} of {summary['frames']} frames within "
              f"{MAX_LEVELS} levels ({summary['pairs']} pairs, colour and gray), max {summary['max_levels']}, "
              f"mean {summary['mean_levels']:.4f}", flush=True)
    if args.record:
        print(f"wrote the verification record {args.record}")
    return 0 if all(s["max_levels"] <= MAX_LEVELS for s in report["networks"].values()) else 1


if __name__ == "__main__":
    run_cli(main)
