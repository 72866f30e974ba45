"""Training pairs from folders laid out like ``../shared/data/train``: ``ir/`` and ``vis/`` with the same file names.

All pairs are loaded once into memory (a few hundred MB at most): with 2 CPU cores, a worker pool re-decoding PNGs
every epoch would steal time from training. For the luminance networks, colour visible images contribute their Y
channel (YCrCb, exactly as the runtime engine splits them). The colour network (``colour=True``) trains on the pairs
whose visible image is colour, as BGR: a gray visible image says nothing about keeping colour. With ``gray=True`` it
also trains on the gray-visible pairs, as three equal channels: that is how the runtime feeds it a gray camera
(``engine.frames.fuse_colour``), and their brightness and detail are still the fusion's job.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from stream_fusion.capture import match_pairs
from stream_fusion.training import augment as camera
from stream_fusion.engine.frames import split_luma, to_gray
from stream_fusion.errors import StreamFusionError


def list_pairs(root: str | Path) -> list[tuple[Path, Path]]:
    """``(ir, vis)`` paths of every pair under ``root/ir`` and ``root/vis``, paired by name as every folder of pairs
    is (:func:`stream_fusion.capture.match_pairs`); mismatched names are an error."""
    root = Path(root)
    ir_dir, vis_dir = root / "ir", root / "vis"
    for folder in (ir_dir, vis_dir):
        if not folder.is_dir():
            raise StreamFusionError(f"training data folder not found: {folder} (expected {root}/ir and {root}/vis)")
    return [(ir, vis) for _, ir, vis in match_pairs(ir_dir, vis_dir)]


def read_8bit(path: Path) -> np.ndarray:
    """An 8-bit image as stored (gray, or BGR without its alpha channel); anything else is a one-line error."""
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise StreamFusionError(f"cannot read image {path}")
    if image.dtype != np.uint8:
        raise StreamFusionError(f"{path} is {image.dtype}; training expects 8-bit images")
    return np.ascontiguousarray(image[:, :, :3]) if image.ndim == 3 and image.shape[2] == 4 else image


def read_luma(path: Path) -> np.ndarray:
    """An 8-bit single-channel image: gray as is, colour as its YCrCb luma."""
    image = read_8bit(path)
    return split_luma(image)[0] if image.ndim == 3 and image.shape[2] == 3 else to_gray(image)


def read_bgr(path: Path) -> np.ndarray | None:
    """An 8-bit BGR image, or None when it is gray (single channel, or three equal channels)."""
    image = read_8bit(path)
    if image.ndim == 2 or image.shape[2] == 1:
        return None
    if np.array_equal(image[:, :, 0], image[:, :, 1]) and np.array_equal(image[:, :, 1], image[:, :, 2]):
        return None
    return image


class PairCrops:
    """Every pair in memory; serves batches of aligned random crops with random flips.

    ``colour=False``: IR and visible luma, N x 1 each. ``colour=True``: only the colour pairs, visible N x 3 (BGR);
    with ``gray=True`` the gray-visible pairs too, as three equal channels.
    ``names``: only these pairs (file names; the training side of a validation split). ``augment``: probabilities
    of the camera transforms (``stream_fusion.training.augment``), applied to each crop after the flips."""

    def __init__(self, root: str | Path, crop: int, colour: bool = False, names: set[str] | None = None,
                 augment: dict[str, float] | None = None, gray: bool = False) -> None:
        self.root = Path(root)
        self.crop = crop
        self.colour = colour
        self.augment = camera.check(augment)
        self.names: list[str] = []
        self.pairs: list[tuple[np.ndarray, np.ndarray]] = []
        self.skipped_gray = 0
        for ir_path, vis_path in list_pairs(root):
            if names is not None and ir_path.name not in names:
                continue
            ir = read_luma(ir_path)
            vis = read_bgr(vis_path) if colour else read_luma(vis_path)
            if vis is None and gray:
                vis = cv2.cvtColor(read_luma(vis_path), cv2.COLOR_GRAY2BGR)
            if vis is None:
                self.skipped_gray += 1
                continue
            if ir.shape != vis.shape[:2]:
                raise StreamFusionError(
                    f"pair {ir_path.name}: IR is {ir.shape[1]}x{ir.shape[0]}, visible {vis.shape[1]}x{vis.shape[0]}"
                )
            pad_h, pad_w = max(0, crop - ir.shape[0]), max(0, crop - ir.shape[1])
            if pad_h or pad_w:  # small images still give full crops
                ir = np.pad(ir, ((0, pad_h), (0, pad_w)), mode="reflect")
                vis = np.pad(vis, ((0, pad_h), (0, pad_w)) + ((0, 0),) * (vis.ndim - 2), mode="reflect")
            self.names.append(ir_path.name)
            self.pairs.append((ir, vis))
        if not self.pairs:
            raise StreamFusionError(f"no colour pairs under {root}: the colour model trains on colour visible images")

    def __len__(self) -> int:
        return len(self.pairs)

    def batch(self, indices: np.ndarray, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``(ir, vis)``: N x 1 (vis: N x 3 BGR when ``colour``) x crop x crop float32 in 0..1, the same crop
        window and flips for both."""
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
            a, b = a.astype(np.float32) / 255.0, b.astype(np.float32) / 255.0
            if any(self.augment.values()):  # no draws at all when off: the pre-augmentation recipe's crops stay
                a, b = camera.augment(a, b, self.augment, rng)
            irs.append(a)
            viss.append(b)
        ir_batch = np.stack(irs)[:, None]
        vis_batch = np.stack(viss).transpose(0, 3, 1, 2) if self.colour else np.stack(viss)[:, None]
        return torch.from_numpy(np.ascontiguousarray(ir_batch)), torch.from_numpy(np.ascontiguousarray(vis_batch))

    def epoch(self, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
        """Index batches of one epoch: every pair once, in a random order (the last batch may be smaller)."""
        order = rng.permutation(len(self.pairs))
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
