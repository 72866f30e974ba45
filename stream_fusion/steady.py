"""Steady video: a static-region temporal filter on each stream's fused frames (issue 15, "steady video").

A fusion network fuses every frame on its own, and a small change of its inputs anywhere in its receptive field (the
sensors' noise included) moves its output where nothing moved: the default network changes static regions by about
1.5x what its inputs change there (docs/evaluation.md). That is flicker the fusion adds, so it is taken out where the
fusion's output leaves the engine, whatever the engine is (a local ONNX session, a classical fusion, a fusion
server): per stream, each fused frame is blended with the previous output, per pixel, only where nothing moved.

* **Still pixels** (``still_levels``): where both inputs (the IR on the fused frame's grid and every channel of
  the visible frame) changed by less than ``still_levels`` gray levels since the previous frame, the output is
  ``strength`` of the previous output plus the rest of the new fused frame (a recursive, exponential blend). The
  gate is soft: the blend fades out linearly up to twice ``still_levels``, so there is no seam between held and
  passed pixels. A pixel's inputs that change by more pass the new fused frame untouched.
* **Moving areas** (``motion_levels``, ``margin_px``): where the inputs' mean change over a small window reaches
  ``motion_levels`` (a walking person, a car; sensor noise stays far below), the new fused frame passes untouched
  within ``margin_px`` of it too (the blend fading back in over the next ``FEATHER_PX``, without a seam): the network reshapes its output tens of pixels around a hot object (its receptive
  field), and holding that halo's old shape would leave a ghost behind a walking person.
* **Resets**: the first frame, a new frame size or channel count, a cut (more than ``cut_fraction`` of the frame
  moving: another scene, a pan, a camera swapped), and on a live stream a gap of more than ``max_gap_s`` between two
  frames' grab times (a stall or a reconnect: the last output is stale; frames the pipeline dropped on purpose in
  between are fine, since the gate compares the inputs of the two frames it blends, whatever came between them).

Colour frames are blended in every channel with the same weight (the hue is kept). The filter is stateful, one per
stream; batch fusion of unrelated images does not use it. Built from the ``steady:`` section (:meth:`from_config`).
"""
from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from stream_fusion.config import require
from stream_fusion.engine.frames import to_gray

MOTION_WINDOW = 9  # px side of the window the inputs' mean change is taken over to find moving areas
FEATHER_PX = 8  # beyond margin_px the blend fades back in over this many px: no seam where the margin ends


class SteadyFilter:
    """Blends each fused frame of one stream with the previous output where neither input changed; call it on every
    fused frame in order. ``resets`` counts the times it started afresh (the first frame included)."""

    def __init__(self, *, strength: float = 0.65, still_levels: float = 2.0, motion_levels: float = 12.0,
                 margin_px: int = 24, cut_fraction: float = 0.5, max_gap_s: float = 1.0) -> None:
        self.strength, self.still_levels, self.motion_levels = strength, still_levels, motion_levels
        self.margin_px, self.cut_fraction, self.max_gap_s = margin_px, cut_fraction, max_gap_s
        # The weight of the previous output for each input change of 0..255 levels: full strength below
        # still_levels, fading linearly to nothing at twice that (one table lookup per pixel).
        levels = np.arange(256, dtype=np.float32)
        fade = np.clip(2 - levels / still_levels, 0, 1) if still_levels > 0 else np.zeros_like(levels)
        self._weights = (strength * fade).astype(np.float32).reshape(256, 1)
        reach = margin_px + FEATHER_PX // 2  # dilated this far, then box-blurred over FEATHER_PX + 1: a linear fade
        self._margin = cv2.getStructuringElement(cv2.MORPH_RECT, (2 * reach + 1, 2 * reach + 1))
        self.resets = 0
        self._state: np.ndarray | None = None  # the previous output, float32, shaped like the fused frames
        self._ir: np.ndarray | None = None
        self._vis: np.ndarray | None = None
        self._time: float | None = None
        self._new: np.ndarray | None = None  # a float32 buffer for the new fused frame

    @classmethod
    def from_config(cls, steady_cfg: dict[str, Any]) -> SteadyFilter | None:
        """From the ``steady:`` section: None when ``enabled`` is false; ``strength`` in [0, 1) (the weight of the
        previous output in still pixels), ``still_levels`` >= 0, ``motion_levels`` > 0, ``margin_px`` >= 0,
        ``cut_fraction`` in (0, 1], ``max_gap_s`` > 0."""
        cfg = steady_cfg
        require(0 <= cfg["strength"] < 1, "steady.strength", cfg["strength"], "in [0, 1)")
        require(cfg["still_levels"] >= 0, "steady.still_levels", cfg["still_levels"], ">= 0")
        require(cfg["motion_levels"] > 0, "steady.motion_levels", cfg["motion_levels"], "> 0")
        # (a margin the size of the frame would just switch the filter off, at the cost of a huge dilation)
        require(0 <= cfg["margin_px"] <= 256, "steady.margin_px", cfg["margin_px"], "in [0, 256]")
        require(0 < cfg["cut_fraction"] <= 1, "steady.cut_fraction", cfg["cut_fraction"], "in (0, 1]")
        require(cfg["max_gap_s"] > 0, "steady.max_gap_s", cfg["max_gap_s"], "> 0")
        if not cfg["enabled"]:
            return None
        return cls(strength=cfg["strength"], still_levels=cfg["still_levels"], motion_levels=cfg["motion_levels"],
                   margin_px=cfg["margin_px"], cut_fraction=cfg["cut_fraction"], max_gap_s=cfg["max_gap_s"])

    def reset(self) -> None:
        """Forget the previous frame: the next one passes untouched and starts the blend afresh."""
        self._state = self._ir = self._vis = self._time = None

    def __call__(self, fused: np.ndarray, ir: np.ndarray, vis: np.ndarray, t: float | None = None) -> np.ndarray:
        """The output for ``fused`` (uint8, gray or BGR), fused from ``ir`` (on the fused frame's grid, gray or
        3-channel) and ``vis`` (as captured, gray or BGR); ``t``: the pair's grab time (monotonic seconds) on a live
        stream, None in a replay (no gap rule: a replay loses no frame)."""
        ir = to_gray(ir)
        weights = self._weights_for(fused, ir, vis, t)
        self._ir, self._vis, self._time = ir, vis, t
        if weights is None:
            self.resets += 1
            self._state = fused.astype(np.float32)
            self._new = np.empty_like(self._state)
            return fused
        state, new = self._state, self._new
        np.copyto(new, fused)  # as float32, into the buffer of the last frame (no allocation per frame)
        if fused.ndim == 3:
            weights = cv2.merge([weights] * fused.shape[2])
        # new + weights * (previous - new), in place on the state: exact where the weight is 0.
        cv2.subtract(state, new, dst=state)
        cv2.multiply(state, weights, dst=state)
        cv2.add(state, new, dst=state)
        return cv2.convertScaleAbs(state)  # rounded to uint8: a pixel with weight 0 is the new fused frame exactly

    def _weights_for(self, fused: np.ndarray, ir: np.ndarray, vis: np.ndarray, t: float | None) -> np.ndarray | None:
        """Per pixel, the weight of the previous output (float32, HxW); None where the filter must start afresh."""
        state, prev_ir, prev_vis = self._state, self._ir, self._vis
        if state is None or prev_ir is None or prev_vis is None or state.shape != fused.shape \
                or prev_ir.shape != ir.shape or prev_vis.shape != vis.shape:
            return None
        if t is not None and self._time is not None and abs(t - self._time) > self.max_gap_s:
            return None
        change = cv2.absdiff(vis, prev_vis)
        if change.ndim == 3:  # a colour change of equal luma is a change too: the largest of the channels
            channels = cv2.split(change)
            change = channels[0]
            for channel in channels[1:]:
                cv2.max(change, channel, dst=change)
        cv2.max(change, cv2.absdiff(ir, prev_ir), dst=change)
        moving = cv2.blur(change, (MOTION_WINDOW, MOTION_WINDOW)) >= self.motion_levels
        if np.count_nonzero(moving) > self.cut_fraction * moving.size:
            return None
        weights = cv2.LUT(change, self._weights).reshape(change.shape)
        # 1 within margin_px of a moving area, falling to 0 over the next FEATHER_PX: what passes untouched.
        near = cv2.blur(cv2.dilate(moving.view(np.uint8), self._margin).astype(np.float32),
                        (FEATHER_PX + 1, FEATHER_PX + 1))
        cv2.subtract(1.0, near, dst=near)
        cv2.multiply(weights, near, dst=weights)
        return weights
