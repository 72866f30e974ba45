"""The network as a ``FusionEngine`` straight from a checkpoint, through torch (training side only).

The runtime serves the ONNX export; this engine exists so training runs, tests and quick evaluations can fuse real
frames with exactly the same colour handling and padding as the runtime, without exporting first.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from stream_fusion.engine.frames import fuse_colour, fuse_luma
from stream_fusion.training.model.checkpoint import load_checkpoint
from stream_fusion.warp import IrWarp, fuse_registered


def fuse_tensors(model: torch.nn.Module, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
    """Any H x W: reflect-pad to the network's size multiple, fuse, crop back (reflect avoids dark borders)."""
    h, w = ir.shape[-2:]
    m = model.size_multiple
    pad = (0, (-w) % m, 0, (-h) % m)
    mode = "reflect" if pad[1] < w and pad[3] < h else "replicate"  # reflect needs the pad smaller than the image
    device = next(model.parameters()).device  # a network training on a GPU scores itself there
    with torch.no_grad():
        fused = model(F.pad(ir, pad, mode=mode).to(device), F.pad(vis, pad, mode=mode).to(device))
    return fused[..., :h, :w].cpu()


class TorchEngine:
    """Fuses uint8 frames with a checkpoint: a luminance network fuses IR with the visible luma and the visible
    chroma is put back (YCrCb); the colour network fuses the BGR frame directly (as :class:`OnnxEngine` does)."""

    provider = "torch-cpu"

    def __init__(self, checkpoint: str | Path | torch.nn.Module) -> None:
        """A checkpoint file, or a network in memory (a training run scoring itself on its validation pairs)."""
        if isinstance(checkpoint, torch.nn.Module):
            self.model, preset = checkpoint, checkpoint.preset
        else:
            self.model, preset = load_checkpoint(checkpoint)
        self.name = f"difffuse-{preset['name']}"
        self.colour = getattr(self.model, "vis_channels", 1) == 3

    def fuse(self, ir: np.ndarray, vis: np.ndarray, warp: IrWarp | None = None) -> np.ndarray:
        return fuse_registered(ir, vis, warp, self._fuse_registered)

    def _fuse_registered(self, ir: np.ndarray, vis: np.ndarray) -> np.ndarray:
        return fuse_colour(ir, vis, self._fuse_bgr) if self.colour else fuse_luma(ir, vis, self._fuse_y)

    def _fuse_bgr(self, ir: np.ndarray, bgr: np.ndarray) -> np.ndarray:
        planes = torch.from_numpy(np.ascontiguousarray(bgr.transpose(2, 0, 1)).astype(np.float32) / 255.0)[None]
        ir_plane = torch.from_numpy(ir.astype(np.float32) / 255.0)[None, None]
        fused = fuse_tensors(self.model, ir_plane, planes)[0].numpy().transpose(1, 2, 0)
        return np.ascontiguousarray(np.clip(np.rint(fused * 255.0), 0, 255).astype(np.uint8))

    def _fuse_y(self, ir: np.ndarray, vis_y: np.ndarray) -> np.ndarray:
        as_tensor = lambda x: torch.from_numpy(x.astype(np.float32) / 255.0)[None, None]  # noqa: E731
        fused = fuse_tensors(self.model, as_tensor(ir), as_tensor(vis_y))[0, 0].numpy()
        return np.clip(np.rint(fused * 255.0), 0, 255).astype(np.uint8)
