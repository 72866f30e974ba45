"""Pairing IR and visible frames into registered pairs.

* Replay pairs by index: frame i of one file goes with frame i of the other. If one source ends first the stream
  stops at the shorter, with a warning (pairing on would fuse unrelated frames).
* Live pairs by the monotonic capture time taken at grab: two frames form a pair when they were grabbed within a
  tolerance (default half the slower source's frame period as measured from its arrivals, so every frame of the
  slower camera finds a partner whatever rate the cameras report); a frame whose partner cannot come any more is
  dropped and counted as unmatched.

Each pair's IR is brought onto the visible grid by :class:`stream_fusion.warp.IrRegistration` (resized, or left as
captured with the calibration's warp for the engine to apply).
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
from stream_fusion.config import require
from stream_fusion.timing import ArrivalRate
from stream_fusion.warp import IrRegistration, IrWarp, register

log = logging.getLogger(__name__)

STAGES = ("capture_to_pair", "align", "fuse", "total")  # the latencies (ms) every frame carries, in this order
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


class LivePairing:
    """Matches frames by grab time; ``unmatched`` counts frames dropped for want of a partner.

    The tolerance is fixed when given (``--tolerance-ms``); else it is half the measured frame period of the slower
    source (:class:`stream_fusion.timing.ArrivalRate`, the reported rates as the prior until enough frames came), so
    every frame of the slower camera finds its partner whatever rate the cameras claim. Of two partners within the
    tolerance, the nearer one that has arrived is taken."""

    def __init__(self, tolerance_s: float | None = None,
                 reported_fps: tuple[float | None, float | None] = (None, None)) -> None:
        self.fixed_tolerance_s = tolerance_s
        self.rates = {"ir": ArrivalRate(reported_fps[0]), "vis": ArrivalRate(reported_fps[1])}
        self.unmatched = 0
        self._waiting: dict[str, deque[Frame]] = {"ir": deque(), "vis": deque()}

    @classmethod
    def from_config(cls, sync_cfg: dict[str, Any], fps: tuple[float | None, float | None]) -> LivePairing:
        """From the ``sync:`` section: ``tolerance_ms``, or null for half the measured frame period of the slower
        of the two sources (``fps``: their reported rates, the prior until measured)."""
        tolerance_ms = sync_cfg["tolerance_ms"]
        require(tolerance_ms is None or (isinstance(tolerance_ms, (int, float)) and tolerance_ms > 0),
                "sync.tolerance_ms", tolerance_ms, "> 0")
        return cls(tolerance_ms / 1000.0 if tolerance_ms else None, fps)

    @property
    def tolerance_s(self) -> float:
        """The grab-time gap two frames of one pair may have, now."""
        if self.fixed_tolerance_s is not None:
            return self.fixed_tolerance_s
        return 0.5 * max(rate.period for rate in self.rates.values())

    def describe(self) -> str:
        """One line for the summary: the rates measured (and reported) and the tolerance they give."""
        rates = []
        for role, rate in self.rates.items():
            measured = f"{1 / rate.measured_period:.1f} fps" if rate.measured_period else "not measured"
            reported = f"{rate.reported_fps:g}" if rate.reported_fps else "none"
            rates.append(f"{role} {measured} (reported {reported})")
        how = "fixed" if self.fixed_tolerance_s is not None else "half the slower measured period"
        return f"{', '.join(rates)}; pairing tolerance {self.tolerance_s * 1000:.0f} ms ({how})"

    def add(self, frame: Frame) -> list[tuple[Frame, Frame]]:
        """Take one frame; return the (ir, vis) pairs it completes, oldest first."""
        self.rates[frame.role].add(frame.index, frame.t_mono)
        waiting = self._waiting[frame.role]
        waiting.append(frame)
        if len(waiting) > LIVE_BUFFER:
            waiting.popleft()
            self.unmatched += 1
        pairs = []
        tolerance = self.tolerance_s
        ir_side, vis_side = self._waiting["ir"], self._waiting["vis"]
        while ir_side and vis_side:
            ir, vis = ir_side[0], vis_side[0]
            gap = ir.t_mono - vis.t_mono
            older_side, newer = (ir_side, vis) if gap < 0 else (vis_side, ir)
            if abs(gap) > tolerance:  # the older frame's partner would have to be older still: it will not come
                older_side.popleft()
                self.unmatched += 1
            elif len(older_side) > 1 and abs(older_side[1].t_mono - newer.t_mono) < abs(gap):
                older_side.popleft()  # the next frame on that side is nearer in time: it is the partner
                self.unmatched += 1
            else:
                pairs.append((ir_side.popleft(), vis_side.popleft()))
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


def pair_replay(ir_in: Inbox, vis_in: Inbox, emit: Emit, stop: threading.Event, registration: IrRegistration) -> int:
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
        image, warp = registration(ir.image, vis.image)
        if not emit(PairedFrame(ir.index, ir, vis, image, time.monotonic(), warp)):
            return pairs
        pairs += 1


def pair_live(inbox: Inbox, emit: Emit, stop: threading.Event, registration: IrRegistration, matcher: LivePairing) -> int:
    """Pair by grab time until either source ends; returns the pairs made."""
    pairs = 0
    while True:
        item = _next(inbox, stop)
        if item is None or isinstance(item, EndOfStream):
            return pairs
        for ir, vis in matcher.add(item):
            image, warp = registration(ir.image, vis.image)
            if not emit(PairedFrame(pairs, ir, vis, image, time.monotonic(), warp)):
                return pairs
            pairs += 1
