"""Pairing IR and visible frames into registered pairs.

* Replay pairs by index: frame i of one file goes with frame i of the other. If one source ends first the stream
  stops at the shorter, with a warning (pairing on would fuse unrelated frames).
* Live pairs by the monotonic capture time taken at grab: two frames form a pair when they were grabbed within a
  tolerance (default half the faster source's frame period, so every frame of the slower camera finds a partner);
  a frame whose partner cannot come any more is dropped and counted as unmatched.

Sizes: the fusion engines take registered pairs on one grid, so an IR frame of another size is resized to the
visible frame's size, with one warning for the whole stream. With a calibration the IR is left as captured and the
pair carries the calibration's warp, which the fusion engine applies (on the GPU when it runs there).
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from stream_fusion.capture import EndOfStream, Frame
from stream_fusion.warp import IrWarp, register, resize_onto

log = logging.getLogger(__name__)

ASSUMED_FPS = 30.0  # for the live tolerance when neither source reports its rate
LIVE_BUFFER = 4  # frames per side waiting for a partner; older ones cannot be "latest" any more


@dataclass
class PairedFrame:
    """One pair on its way through align -> fuse -> sinks; stages fill in the later fields."""

    index: int
    ir: Frame
    vis: Frame
    ir_image: np.ndarray  # the IR on the visible grid, or as captured when ``ir_warp`` brings it there
    t_paired: float  # monotonic
    ir_warp: IrWarp | None = None  # calibration (and, after the align stage, correction) for the engine to apply
    alignment: Any = None  # stream_fusion.align.Alignment once checked
    fused: np.ndarray | None = None
    latency_ms: dict[str, float] = field(default_factory=dict)

    @property
    def registered_ir(self) -> np.ndarray:
        """The IR on the visible grid, as the engine fuses it (warped on the host: for display, not per frame)."""
        return register(self.ir_image, self.ir_warp)

    @property
    def t_captured(self) -> float:
        """Monotonic grab time of the older input: latencies are counted from it, the conservative choice."""
        return min(self.ir.t_mono, self.vis.t_mono)


class Calibrated(Protocol):
    def warp(self, ir_size: tuple[int, int], size: tuple[int, int]) -> IrWarp: ...


class GridMatcher:
    """Brings each IR frame onto the visible grid, or with a calibration pairs it with the calibration's warp;
    warns once per stream when the sizes differ without one."""

    def __init__(self, calibration: Calibrated | None = None) -> None:
        self.calibration = calibration
        self.warned = False
        self._warp: IrWarp | None = None

    def __call__(self, ir: np.ndarray, vis: np.ndarray) -> tuple[np.ndarray, IrWarp | None]:
        """The IR image and the warp still to apply to it (None: it is on the visible grid)."""
        height, width = vis.shape[:2]
        if self.calibration is not None:
            sizes = ((ir.shape[1], ir.shape[0]), (width, height))
            if self._warp is None or (self._warp.ir_size, self._warp.size) != sizes:
                self._warp = self.calibration.warp(*sizes)  # once per frame size, not per frame
            return ir, self._warp
        if ir.shape[:2] == (height, width):
            return ir, None
        if not self.warned:
            self.warned = True
            log.warning(
                "IR frames are %dx%d but visible frames are %dx%d: resizing IR to the visible grid "
                "(without a calibration the fields of view are assumed to match)",
                ir.shape[1], ir.shape[0], width, height,
            )
        return resize_onto(ir, (width, height)), None


def default_tolerance(fps_ir: float | None, fps_vis: float | None) -> float:
    """Half the frame period of the faster source (seconds)."""
    rates = [fps for fps in (fps_ir, fps_vis) if fps]
    return 0.5 / (max(rates) if rates else ASSUMED_FPS)


class LivePairing:
    """Matches frames by grab time; ``unmatched`` counts frames dropped for want of a partner."""

    def __init__(self, tolerance_s: float) -> None:
        self.tolerance_s = tolerance_s
        self.unmatched = 0
        self._waiting: dict[str, deque[Frame]] = {"ir": deque(), "vis": deque()}

    def add(self, frame: Frame) -> list[tuple[Frame, Frame]]:
        """Take one frame; return the (ir, vis) pairs it completes, oldest first."""
        waiting = self._waiting[frame.role]
        waiting.append(frame)
        if len(waiting) > LIVE_BUFFER:
            waiting.popleft()
            self.unmatched += 1
        pairs = []
        ir_side, vis_side = self._waiting["ir"], self._waiting["vis"]
        while ir_side and vis_side:
            ir, vis = ir_side[0], vis_side[0]
            gap = ir.t_mono - vis.t_mono
            if abs(gap) <= self.tolerance_s:
                pairs.append((ir_side.popleft(), vis_side.popleft()))
            else:  # the older frame's partner would have to be older still: it will not come
                (ir_side if gap < 0 else vis_side).popleft()
                self.unmatched += 1
        return pairs


class Inbox(Protocol):
    def get(self, timeout: float) -> Any: ...


Emit = Callable[[PairedFrame], bool]


def _next(inbox: Inbox, stop: threading.Event) -> Any:
    while not stop.is_set():
        try:
            return inbox.get(timeout=0.1)
        except queue.Empty:
            continue
    return None


def pair_replay(ir_in: Inbox, vis_in: Inbox, emit: Emit, stop: threading.Event, grid: GridMatcher) -> int:
    """Pair by index until either source ends (warning when the other had more); returns the pairs made."""
    pairs = 0
    while True:
        ir, vis = _next(ir_in, stop), _next(vis_in, stop)
        if ir is None or vis is None:
            return pairs
        ir_ended, vis_ended = isinstance(ir, EndOfStream), isinstance(vis, EndOfStream)
        if ir_ended or vis_ended:
            if ir_ended != vis_ended and not (ir if ir_ended else vis).failed:
                shorter, longer = ("IR", "visible") if ir_ended else ("visible", "IR")
                log.warning(
                    "%s source ended after %d frames but the %s source has more: stopping at the shorter",
                    shorter, pairs, longer,
                )
            return pairs
        image, warp = grid(ir.image, vis.image)
        if not emit(PairedFrame(ir.index, ir, vis, image, time.monotonic(), warp)):
            return pairs
        pairs += 1


def pair_live(inbox: Inbox, emit: Emit, stop: threading.Event, grid: GridMatcher, matcher: LivePairing) -> int:
    """Pair by grab time until either source ends; returns the pairs made."""
    pairs = 0
    while True:
        item = _next(inbox, stop)
        if item is None or isinstance(item, EndOfStream):
            return pairs
        for ir, vis in matcher.add(item):
            image, warp = grid(ir.image, vis.image)
            if not emit(PairedFrame(pairs, ir, vis, image, time.monotonic(), warp)):
                return pairs
            pairs += 1
