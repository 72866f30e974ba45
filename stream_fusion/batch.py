"""Batch fusion of two image folders: ``python -m stream_fusion.batch --ir DIR --vis DIR --out DIR [--model M]``.

Pairs are matched by file name (stem: ``a.png`` in ``--ir`` pairs with ``a.png`` or ``a.jpg`` in ``--vis``); each
fused pair is written as ``<stem>.png`` in ``--out``. The visible image keeps its colour (gray in -> gray out, colour
in -> colour out with the visible chroma); IR is read as gray. A pair whose IR size differs from the visible one
gets its IR resized to the visible size with a warning, the same rule the live pipeline applies. With
``--calibration`` (from ``python -m stream_fusion.calibrate``) each IR image is warped onto its visible image by the
calibration instead, by the engine, as in the live pipeline.

``--model`` takes what the engine takes (``default``, ``lite``, ``base``, ``cdfusion``, ``classical``, a path to an .onnx file
or a fusion server, ``triton://HOST:PORT/NAME``) plus the two evaluation baselines ``average`` and ``laplacian``.
"""
from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from stream_fusion.align import Calibration, load_calibration
from stream_fusion.capture import match_pairs
from stream_fusion.engine.classical import BASELINES
from stream_fusion.engine import PROVIDERS, FusionEngine, create_engine
from stream_fusion.engine.frames import to_gray
from stream_fusion.errors import StreamFusionError, run_cli
from stream_fusion.warp import resize_onto

log = logging.getLogger(__name__)

def read_gray(path: Path) -> np.ndarray:
    """An image as 8-bit gray (IR, or any image to be scored on its luma)."""
    return to_gray(read_colour(path))


def read_colour(path: Path) -> np.ndarray:
    """An image as 8-bit gray (HxW) or BGR (HxWx3), keeping whether it was colour; alpha dropped, 16 bit scaled."""
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise StreamFusionError(f"cannot read image {path} (missing, unreadable or not an image)")
    if image.dtype == np.uint16:
        image = np.rint(image / 257.0).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise StreamFusionError(f"image {path} has {image.dtype} pixels; 8- or 16-bit images are supported")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    elif image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return image


def load_pair(name: str, ir_path: Path, vis_path: Path, resize: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """IR as gray resized to the visible size if needed (with a warning; not with ``resize=False``, where a
    calibration's warp brings it there), visible with its colour kept."""
    ir, vis = read_gray(ir_path), read_colour(vis_path)
    (h, w), (ih, iw) = vis.shape[:2], ir.shape
    if resize and (ih, iw) != (h, w):
        log.warning("%s: IR %dx%d resized to the visible size %dx%d", name, iw, ih, w, h)
        ir = resize_onto(ir, (w, h))
    return ir, vis


def load_engine(model: str, provider: str = "auto") -> FusionEngine:
    """A baseline by name, else whatever the engine factory builds (shipped networks, classical, an .onnx path)."""
    if model in BASELINES:
        return BASELINES[model]()
    return create_engine(model, provider)


def fuse_folder(
    engine: FusionEngine, ir_dir: Path, vis_dir: Path, out_dir: Path, progress: bool = True,
    calibration: Calibration | None = None,
) -> tuple[int, float]:
    """Fuse every pair into ``out_dir/<stem>.png``; returns the pair count and the mean engine seconds per pair
    (reading and writing excluded; the calibration's warp, which the engine applies, included)."""
    pairs = match_pairs(ir_dir, vis_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    seconds = 0.0
    for name, ir_path, vis_path in tqdm(pairs, desc=f"fuse {engine.name}", unit="pair", disable=not progress):
        ir, vis = load_pair(name, ir_path, vis_path, resize=calibration is None)
        warp = calibration.warp((ir.shape[1], ir.shape[0]), (vis.shape[1], vis.shape[0])) if calibration else None
        start = time.perf_counter()
        fused = engine.fuse(ir, vis, warp)
        seconds += time.perf_counter() - start
        target = out_dir / f"{name}.png"
        if not cv2.imwrite(str(target), fused):
            raise StreamFusionError(f"cannot write {target}")
    return len(pairs), seconds / len(pairs)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m stream_fusion.batch",
        description="Fuse every IR / visible pair of two folders (matched by name) into one PNG per pair.",
    )
    parser.add_argument("--ir", type=Path, required=True, help="folder of infrared images")
    parser.add_argument("--vis", type=Path, required=True, help="folder of visible images, same names")
    parser.add_argument("--out", type=Path, required=True, help="folder for the fused PNGs (created)")
    parser.add_argument("--model", default="default",
                        help="default | lite | base | cdfusion | classical | average | laplacian | path/to/model.onnx | "
                             "triton://HOST:PORT/NAME")
    parser.add_argument("--provider", default="auto", choices=("auto", *PROVIDERS),
                        help="ONNX Runtime provider for a network (default auto: TensorRT, CUDA, then CPU)")
    parser.add_argument("--calibration", type=Path, metavar="YAML",
                        help="IR -> visible warp from python -m stream_fusion.calibrate, applied to every IR image")
    args = parser.parse_args(argv)
    calibration = load_calibration(args.calibration) if args.calibration else None
    engine = load_engine(args.model, args.provider)
    count, per_pair = fuse_folder(engine, args.ir, args.vis, args.out, calibration=calibration)
    print(f"fused {count} pairs with {engine.name} ({engine.provider}), {per_pair * 1000:.1f} ms per pair "
          f"-> {args.out}")
    return 0


if __name__ == "__main__":
    run_cli(main)
