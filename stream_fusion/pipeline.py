"""The threaded pipeline: capture (one thread per source) -> pair -> align -> fuse -> sinks.

Stages hand frames over through bounded queues whose behaviour is the mode:

* live: drop-oldest queues of one frame between stages. A slow stage always gets the newest pair, every dropped
  frame is counted, and latency is bounded by the pipeline depth, never by how long the stream has run.
* replay: blocking queues. The readers wait for the slowest stage, so every input pair gives exactly one fused
  frame, in order.

The sinks (ZeroMQ publisher, recorder, window) run on the calling thread: GUI toolkits want the main thread, and it
is also where signals arrive. A source failure ends the stream the normal way (frames already read are fused and
delivered) and is then reported; ``stop()`` (Ctrl-C, SIGTERM, q in the window) ends every thread within 2 s.
"""
from __future__ import annotations

import collections
import itertools
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from stream_fusion.align import Verdict
from stream_fusion.capture import CaptureThread, EndOfStream, Source
from stream_fusion.display import Display, make_mosaic
from stream_fusion.engine import FusionEngine
from stream_fusion.errors import StreamFusionError
from stream_fusion.queues import LatestQueue, LosslessQueue
from stream_fusion.record import Recorder
from stream_fusion.sync import LivePairing, PairedFrame, default_tolerance, pair_live, pair_replay
from stream_fusion.warp import IrRegistration, IrWarp

STAGES = ("capture_to_pair", "align", "fuse", "total")  # the latencies every frame's metadata carries
JOIN_BUDGET_S = 1.5  # of the 2 s a stop may take
FPS_WINDOW = 30
LATENCY_HISTORY = 100_000  # frames of latency kept for the summary's median / p99 (about 1 h at 30 fps)
LIVE_INBOX = 8  # frames of both live sources waiting to be paired; the pairer is fast, so it rarely holds more than 2


class Monitor(Protocol):
    def process(self, ir: np.ndarray, vis: np.ndarray, warp: IrWarp | None = None) -> Verdict: ...


class Publisher(Protocol):
    sent: int  # frames queued for at least one subscriber
    dropped: int  # frames refused because a subscriber was too slow

    def send(self, image: np.ndarray, meta: dict) -> bool: ...


@dataclass
class Summary:
    """What a run did: printed at the end, written by the benchmark."""

    frames: int = 0
    seconds: float = 0.0
    latency_ms: dict[str, tuple[float, float]] = field(default_factory=dict)  # stage -> (median, p99)
    drops: dict[str, int] = field(default_factory=dict)
    reconnects: dict[str, int] = field(default_factory=dict)  # live source -> times it was lost and reopened
    alignment: dict[str, int] = field(default_factory=dict)
    published: int = 0
    recorded: int = 0
    stopped_by: str = "end of input"
    error: StreamFusionError | None = None

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def lines(self) -> list[str]:
        latency = ", ".join(f"{stage} {med:.1f}/{p99:.1f}" for stage, (med, p99) in self.latency_ms.items())
        over = f" of the last {LATENCY_HISTORY} frames" if self.frames > LATENCY_HISTORY else ""
        return [
            f"summary: {self.frames} frames fused in {self.seconds:.2f} s ({self.fps:.1f} fps), stopped by {self.stopped_by}",
            f"  latency ms (median/p99{over}): {latency or 'n/a'}",
            "  drops: " + ", ".join(f"{name} {count}" for name, count in self.drops.items())
            + ("; reconnects: " + ", ".join(f"{role} {n}" for role, n in self.reconnects.items()) if self.reconnects
               else ""),
            "  alignment: " + (", ".join(f"{name} {count}" for name, count in sorted(self.alignment.items())) or "n/a"),
            f"  published {self.published}, recorded {self.recorded}",
        ]


class Pipeline:
    """One run over two opened sources; build it, call ``run()`` once, read the ``Summary``."""

    def __init__(
        self,
        ir: Source,
        vis: Source,
        engine: FusionEngine,
        monitor: Monitor,
        *,
        live: bool,
        pace_fps: float | None = None,
        loop: bool = False,
        reconnect_s: float = 0.0,
        tolerance_s: float | None = None,
        queue_size: int = 4,
        registration: IrRegistration | None = None,
        publisher: Publisher | None = None,
        recorder: Recorder | None = None,
        display: Display | None = None,
        status: Callable[[str], None] | None = None,
        status_interval_s: float = 1.0,
    ) -> None:
        self.ir, self.vis = ir, vis
        self.engine, self.monitor = engine, monitor
        self.live = live
        self.publisher, self.recorder, self.display = publisher, recorder, display
        self.status, self.status_interval_s = status, status_interval_s
        self.registration = registration or IrRegistration()
        self.stop_event = threading.Event()  # everything stops
        self._capture_stop = threading.Event()  # the readers stop (pairing ended or everything stops)
        self.stopped_by = "end of input"
        self.error: StreamFusionError | None = None
        self._crash: BaseException | None = None
        self.last: PairedFrame | None = None  # the newest delivered frame, for --snapshot
        self.pairing = LivePairing(tolerance_s or default_tolerance(ir.fps, vis.fps))

        def make_queue(size: int) -> LatestQueue | LosslessQueue:
            return LatestQueue(size) if live else LosslessQueue(size, self.stop_event)

        limit = None
        if loop and ir.length and vis.length:
            limit = min(ir.length, vis.length)  # a looped replay must wrap both sources at the same frame
        if live:
            inbox = LatestQueue(LIVE_INBOX)
            ir_out, vis_out = inbox, inbox
            self._inboxes = [inbox]
        else:
            ir_out = LosslessQueue(queue_size, self._capture_stop)
            vis_out = LosslessQueue(queue_size, self._capture_stop)
            self._inboxes = [ir_out, vis_out]
        # Only files are paced: a camera or URL delivers at its own rate, and waiting on it would only add lag.
        self._captures = [
            CaptureThread(source, out, self._capture_stop, pace_fps=None if source.live else pace_fps, limit=limit,
                          loop=loop, reconnect_s=reconnect_s if source.live else 0.0)
            for source, out in ((ir, ir_out), (vis, vis_out))
        ]
        stage_size = 1 if live else queue_size
        self._pairs, self._aligned, self._fused = make_queue(stage_size), make_queue(stage_size), make_queue(stage_size)
        self._align_dropped = 0
        self._threads = [
            threading.Thread(target=self._pair_stage, args=(ir_out, vis_out), name="pair", daemon=True),
            threading.Thread(
                target=self._stage, args=("align", self._align, self._pairs, self._aligned), name="align", daemon=True
            ),
            threading.Thread(
                target=self._stage, args=("fuse", self._fuse, self._aligned, self._fused), name="fuse", daemon=True
            ),
        ]
        # Bounded so that a stream running for days does not grow memory: the summary covers the newest frames.
        self._latencies: dict[str, collections.deque[float]] = {
            stage: collections.deque(maxlen=LATENCY_HISTORY) for stage in (*STAGES, "publish")
        }
        self._frames = 0
        self._alignment_counts: collections.Counter[str] = collections.Counter()
        self._delivered: collections.deque[float] = collections.deque(maxlen=FPS_WINDOW)

    # --- control -------------------------------------------------------------------------------------------------
    def stop(self, reason: str = "request") -> None:
        """Ask every thread to end (safe from a signal handler or another thread)."""
        if not self.stop_event.is_set():
            self.stopped_by = reason
        self.stop_event.set()
        self._capture_stop.set()

    def _fail(self, error: BaseException) -> None:
        if isinstance(error, StreamFusionError):
            self.error = self.error or error
        else:
            self._crash = self._crash or error
        self.stop("error")

    # --- stages (worker threads) ---------------------------------------------------------------------------------
    def _pair_stage(self, ir_in: Any, vis_in: Any) -> None:
        try:
            if self.live:
                pair_live(ir_in, self._pairs.put, self.stop_event, self.registration, self.pairing)
            else:
                pair_replay(ir_in, vis_in, self._pairs.put, self.stop_event, self.registration)
        except BaseException as error:  # noqa: BLE001 - reported by run()
            self._fail(error)
        self._capture_stop.set()
        self._pairs.put(EndOfStream("pairs"), droppable=False)

    def _stage(self, name: str, work: Callable[[PairedFrame], bool], inbox: Any, out: Any) -> None:
        try:
            while not self.stop_event.is_set():
                try:
                    item = inbox.get(timeout=0.1)
                except queue.Empty:
                    continue
                if isinstance(item, EndOfStream):
                    break
                started = time.perf_counter()
                keep = work(item)
                item.latency_ms[name] = (time.perf_counter() - started) * 1000.0
                if keep:
                    out.put(item)
        except BaseException as error:  # noqa: BLE001 - reported by run()
            self._fail(error)
        out.put(EndOfStream(name), droppable=False)

    def _align(self, item: PairedFrame) -> bool:
        fuse, item.ir_warp, item.alignment = self.monitor.process(item.ir_image, item.vis.image, item.ir_warp)
        if not fuse:  # policy "drop": this pair is too far off to fuse
            self._align_dropped += 1
            self._alignment_counts[item.alignment.status] += 1
        return fuse

    def _fuse(self, item: PairedFrame) -> bool:
        item.fused = self.engine.fuse(item.ir_image, item.vis.image, item.ir_warp)
        return True

    # --- sinks (calling thread) ----------------------------------------------------------------------------------
    def metadata(self, item: PairedFrame) -> dict[str, Any]:
        """The header that rides with each published frame (see docs/pipeline.md, wire format)."""
        return {
            "index": item.index,
            "t_capture_ir": item.ir.t_wall,
            "t_capture_vis": item.vis.t_wall,
            "latency_ms": {stage: round(item.latency_ms.get(stage, 0.0), 3) for stage in STAGES},
            "alignment": item.alignment.as_dict(),
            "source": {"ir": self.ir.description, "vis": self.vis.description},
            "engine": self.engine.name,
            "provider": self.engine.provider,
        }

    def _deliver(self, item: PairedFrame) -> None:
        now = time.monotonic()
        item.latency_ms["capture_to_pair"] = (item.t_paired - item.t_captured) * 1000.0
        item.latency_ms["total"] = (now - item.t_captured) * 1000.0
        if self.publisher is not None:
            started = time.perf_counter()
            self.publisher.send(item.fused, self.metadata(item))
            self._latencies["publish"].append((time.perf_counter() - started) * 1000.0)
        if self.recorder is not None:
            self.recorder.write(item.fused, item.t_captured if self.live else None)
        for stage in STAGES:
            self._latencies[stage].append(item.latency_ms.get(stage, 0.0))
        self._frames += 1
        self._alignment_counts[item.alignment.status] += 1
        self._delivered.append(now)
        self.last = item
        if self.display is not None and not self.display.show(self.snapshot(item)):
            self.stop("user (q, Esc or window closed)")

    def snapshot(self, item: PairedFrame) -> np.ndarray:
        """The IR | visible | fused mosaic of ``item`` with its heads-up line."""
        return make_mosaic(item.registered_ir, item.vis.image, item.fused, self.hud(item))

    def hud(self, item: PairedFrame) -> str:
        a = item.alignment
        return (
            f"#{item.index}  {self.current_fps():.1f} fps  latency {item.latency_ms.get('total', 0.0):.0f} ms  "
            f"align {a.status} ({a.dx:+.1f}, {a.dy:+.1f}) px  {self.engine.name}/{self.engine.provider}"
        )

    def current_fps(self) -> float:
        if len(self._delivered) < 2:
            return 0.0
        span = self._delivered[-1] - self._delivered[0]
        return (len(self._delivered) - 1) / span if span > 0 else 0.0

    def drops(self) -> dict[str, int]:
        """Frames lost on purpose, by where: every drop is counted, none is silent."""
        return {
            "capture": sum(q.dropped for q in self._inboxes),
            "unmatched": self.pairing.unmatched,
            "stages": self._pairs.dropped + self._aligned.dropped + self._fused.dropped,
            "alignment": self._align_dropped,
            "publish": self.publisher.dropped if self.publisher is not None else 0,
        }

    def status_line(self) -> str:
        def recent(stage: str) -> float:
            values = list(itertools.islice(reversed(self._latencies[stage]), FPS_WINDOW))
            return float(np.median(values)) if values else 0.0

        state = self.last.alignment.status if self.last is not None else "-"
        drops = " ".join(f"{name} {count}" for name, count in self.drops().items())
        return (
            f"{self._frames} frames {self.current_fps():5.1f} fps | ms: pair {recent('capture_to_pair'):.1f} "
            f"align {recent('align'):.1f} fuse {recent('fuse'):.1f} total {recent('total'):.1f} | drops: {drops} | "
            f"align {state}"
        )

    # --- run -----------------------------------------------------------------------------------------------------
    def run(self) -> Summary:
        """Run to the end of the input, a stop or an error; always closes everything and returns the summary."""
        started = time.monotonic()
        next_status = started + self.status_interval_s
        for capture in self._captures:  # one pacing clock for both sources, from now (not from construction)
            capture.start_time = started + 0.05
        for thread in (*self._captures, *self._threads):
            thread.start()
        try:
            while not self.stop_event.is_set():
                if self.status is not None and time.monotonic() >= next_status:
                    self.status(self.status_line())
                    next_status = time.monotonic() + self.status_interval_s
                try:
                    item = self._fused.get(timeout=0.05)
                except queue.Empty:
                    if self.display is not None and self.last is not None and not self.display.poll():
                        self.stop("user (q, Esc or window closed)")
                    continue
                if isinstance(item, EndOfStream):
                    break
                self._deliver(item)
        except BaseException as error:
            self._fail(error)
        finally:
            seconds = time.monotonic() - started
            self._shutdown()
        if self._crash is not None:
            raise self._crash
        return self._summary(seconds)

    def _shutdown(self) -> None:
        self.stop_event.set()
        self._capture_stop.set()
        deadline = time.monotonic() + JOIN_BUDGET_S
        for thread in (*self._threads, *self._captures):
            thread.join(max(0.0, deadline - time.monotonic()))
        for capture in self._captures:
            if capture.error is not None:
                self.error = self.error or capture.error
            if not capture.is_alive():  # a camera stuck in read() is left to process exit
                capture.source.close()
        if self.recorder is not None:
            self.recorder.close()
        if self.display is not None:
            self.display.close()

    def _summary(self, seconds: float) -> Summary:
        latency = {
            stage: (float(np.median(values)), float(np.percentile(values, 99)))
            for stage, values in self._latencies.items()
            if values
        }
        return Summary(
            frames=self._frames,
            seconds=seconds,
            latency_ms=latency,
            drops=self.drops(),
            reconnects={c.source.role: c.reconnects for c in self._captures if c.reconnects},
            alignment=dict(self._alignment_counts),
            published=self.publisher.sent if self.publisher is not None else 0,
            recorded=self.recorder.frames if self.recorder is not None else 0,
            stopped_by="error" if self.error is not None else self.stopped_by,
            error=self.error,
        )
