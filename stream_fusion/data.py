"""Training pairs from folders laid out like ``../shared/data/train``: ``ir/`` and ``vis/`` with the same file names.

All pairs are loaded once into memory as 8-bit luminance (a few hundred MB at most): with 2 CPU cores, a worker
pool re-decoding PNGs every epoch would steal time from training. Colour visible images contribute their Y channel
(YCrCb, exactly as the runtime engine splits them), since the network fuses luminance only.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from stream_fusion.engine import split_luma, to_gray
from stream_fusion.errors import StreamFusionError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}


def list_pairs(root: str | Path) -> list[tuple[Path, Path]]:
    """``(ir, vis)`` paths of every pair under ``root/ir`` and ``root/vis``; mismatched names are an error."""
    root = Path(root)
    ir_dir, vis_dir = root / "ir", root / "vis"
    for folder in (ir_dir, vis_dir):
        if not folder.is_dir():
            raise StreamFusionError(f"training data folder not found: {folder} (expected {root}/ir and {root}/vis)")
    ir = {p.name for p in ir_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
    vis = {p.name for p in vis_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
    if ir != vis:
        only_ir, only_vis = sorted(ir - vis), sorted(vis - ir)
        detail = f"{len(only_ir)} only in ir/ (e.g. {only_ir[:1]}), {len(only_vis)} only in vis/ (e.g. {only_vis[:1]})"
        raise StreamFusionError(f"IR and visible file names differ under {root}: {detail}")
    if not ir:
        raise StreamFusionError(f"no images in {ir_dir}")
    return [(ir_dir / name, vis_dir / name) for name in sorted(ir)]


def read_luma(path: Path) -> np.ndarray:
    """An 8-bit single-channel image: gray as is, colour as its YCrCb luma."""
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise StreamFusionError(f"cannot read image {path}")
    if image.dtype != np.uint8:
        raise StreamFusionError(f"{path} is {image.dtype}; training expects 8-bit images")
    if image.ndim == 3 and image.shape[2] == 4:
        image = image[:, :, :3]
    return split_luma(image)[0] if image.ndim == 3 and image.shape[2] == 3 else to_gray(image)


class PairCrops:
    """Every pair in memory; serves batches of aligned random crops with random flips."""

    def __init__(self, root: str | Path, crop: int) -> None:
        self.root = Path(root)
        self.crop = crop
        self.names: list[str] = []
        self.pairs: list[tuple[np.ndarray, np.ndarray]] = []
        for ir_path, vis_path in list_pairs(root):
            ir, vis = read_luma(ir_path), read_luma(vis_path)
            if ir.shape != vis.shape:
                raise StreamFusionError(
                    f"pair {ir_path.name}: IR is {ir.shape[1]}x{ir.shape[0]}, visible {vis.shape[1]}x{vis.shape[0]}"
                )
            pad_h, pad_w = max(0, crop - ir.shape[0]), max(0, crop - ir.shape[1])
            if pad_h or pad_w:  # small images still give full crops
                ir = np.pad(ir, ((0, pad_h), (0, pad_w)), mode="reflect")
                vis = np.pad(vis, ((0, pad_h), (0, pad_w)), mode="reflect")
            self.names.append(ir_path.name)
            self.pairs.append((ir, vis))

    def __len__(self) -> int:
        return len(self.pairs)

    def batch(self, indices: np.ndarray, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``(ir, vis)``: N x 1 x crop x crop float32 in 0..1, the same crop window and flips for both."""
        c = self.crop
        irs, viss = [], []
        for i in indices:
            ir, vis = self.pairs[int(i)]
            y = int(rng.integers(0, ir.shape[0] - c + 1))
            x = int(rng.integers(0, ir.shape[1] - c + 1))
            a, b = ir[y : y + c, x : x + c], vis[y : y + c, x : x + c]
            if rng.random() < 0.5:
                a, b = a[:, ::-1], b[:, ::-1]
            if rng.random() < 0.5:
                a, b = a[::-1], b[::-1]
            irs.append(a)
            viss.append(b)
        to_tensor = lambda arrays: torch.from_numpy(np.stack(arrays)[:, None].astype(np.float32) / 255.0)  # noqa: E731
        return to_tensor(irs), to_tensor(viss)

    def epoch(self, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
        """Index batches of one epoch: every pair once, in a random order (the last batch may be smaller)."""
        order = rng.permutation(len(self.pairs))
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
