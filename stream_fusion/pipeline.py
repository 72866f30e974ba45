"""The threaded pipeline: capture (one thread per source) -> pair -> align -> fuse -> sinks. It only composes: the
sources, the pairing, the alignment check, the engine, the steady-video filter and the sinks are built elsewhere (each from its own config
section) and wired here by threads and queues; :mod:`stream_fusion.stats` counts what the run does.

Stages hand frames over through bounded queues whose behaviour is the mode:

* live: drop-oldest queues of one frame between stages. A slow stage always gets the newest pair, every dropped
  frame is counted, and latency is bounded by the pipeline depth, never by how long the stream has run.
* replay: blocking queues. The readers wait for the slowest stage, so every input pair gives exactly one fused
  frame, in order.

The sinks (:mod:`stream_fusion.sinks`: ZeroMQ publisher, recorder, window) run on the calling thread: GUI toolkits
want the main thread, and it is also where signals arrive. A source failure ends the stream the normal way (frames
already read are fused and delivered) and is then reported; ``stop()`` (Ctrl-C, SIGTERM, q in the window) ends every
thread within 2 s.
"""
from __future__ import annotations

import functools
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from stream_fusion.align import Verdict
from stream_fusion.capture import CaptureThread, EndOfStream, SourcePair
from stream_fusion.config import require
from stream_fusion.display import hud_text, make_mosaic
from stream_fusion.engine import FusionEngine
from stream_fusion.errors import StreamFusionError
from stream_fusion.gain import IrGain
from stream_fusion.publish import frame_metadata
from stream_fusion.queues import LatestQueue, LosslessQueue
from stream_fusion.sinks import Sinks
from stream_fusion.stats import RunStats, Summary
from stream_fusion.steady import SteadyFilter
from stream_fusion.sync import LivePairing, PairedFrame, pair_live, pair_replay
from stream_fusion.warp import IrRegistration, IrWarp

JOIN_BUDGET_S = 1.5  # of the 2 s a stop may take
LIVE_INBOX = 8  # frames of both live sources waiting to be paired; the pairer is fast, so it rarely holds more than 2


class Monitor(Protocol):
    def process(self, ir: np.ndarray, vis: np.ndarray, warp: IrWarp | None = None) -> Verdict: ...


class Pipeline:
    """One run over two opened sources; build it, call ``run()`` once, read the ``Summary``."""

    @classmethod
    def from_config(
        cls, pipeline_cfg: dict[str, Any], sources: SourcePair, engine: FusionEngine, monitor: Monitor, *,
        status: Callable[[str], None] | None = None, **parts: Any,
    ) -> Pipeline:
        """From the ``pipeline:`` section (``queue_size``, ``status_interval_s``: 0 for no status line) and the
        stages built from theirs; ``parts``: ``sinks``, ``registration``, ``pairing``, ``gain``, ``steady``."""
        queue_size, interval = pipeline_cfg["queue_size"], pipeline_cfg["status_interval_s"]
        require(queue_size >= 1, "pipeline.queue_size", queue_size, ">= 1")
        require(interval >= 0, "pipeline.status_interval_s", interval, ">= 0")
        return cls(sources, engine, monitor, queue_size=queue_size, status=status if interval > 0 else None,
                   status_interval_s=interval if interval > 0 else 1.0, **parts)

    def __init__(
        self,
        sources: SourcePair,
        engine: FusionEngine,
        monitor: Monitor,
        *,
        sinks: Sinks | None = None,
        registration: IrRegistration | None = None,
        pairing: LivePairing | None = None,
        gain: IrGain | None = None,
        steady: SteadyFilter | None = None,
        queue_size: int = 4,
        status: Callable[[str], None] | None = None,
        status_interval_s: float = 1.0,
    ) -> None:
        ir, vis = sources.ir, sources.vis
        self.sources, self.engine, self.monitor = sources, engine, monitor
        self.live = live = sources.live
        self.sinks = sinks or Sinks()
        self.status, self.status_interval_s = status, status_interval_s
        self.registration = registration or IrRegistration()
        self.gain = gain or IrGain()  # 16-bit IR to 8 bits (8-bit IR passes through)
        self.steady = steady  # the stream's static-region temporal filter on the fused frames (None: off)
        self.stats = RunStats()
        self.stop_event = threading.Event()  # everything stops
        self._capture_stop = threading.Event()  # the readers stop (pairing ended or everything stops)
        self.stopped_by = "end of input"
        self._hurry = False
        self.error: StreamFusionError | None = None
        self._crash: BaseException | None = None
        self.last: PairedFrame | None = None  # the newest delivered frame, for --snapshot
        self.pairing = pairing or LivePairing(None, (ir.fps, vis.fps))
        self._metadata = functools.partial(frame_metadata, sources={"ir": ir.description, "vis": vis.description},
                                           engine=engine)

        def make_queue(size: int) -> LatestQueue | LosslessQueue:
            return LatestQueue(size) if live else LosslessQueue(size, self.stop_event)

        limit = None
        if sources.loop and ir.length and vis.length:
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
            CaptureThread(source, out, self._capture_stop, pace_fps=None if source.live else sources.pace_fps,
                          limit=limit, loop=sources.loop, reconnect_s=sources.reconnect_s if source.live else 0.0,
                          convert=convert)
            for source, out, convert in ((ir, ir_out, self.gain), (vis, vis_out, None))
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

    # --- control -------------------------------------------------------------------------------------------------
    def stop(self, reason: str = "request") -> None:
        """Ask every thread to end (safe from a signal handler or another thread)."""
        if not self.stop_event.is_set():
            self.stopped_by = reason
        self.stop_event.set()
        self._capture_stop.set()

    def hurry(self) -> None:
        """Stop, and stop waiting for the readers and stages too (a second Ctrl-C): the fusion call in flight is
        still cancelled and waited for, the recording finished and the summary made."""
        self._hurry = True
        self.stop(self.stopped_by if self.stop_event.is_set() else "request")

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
            if not self.stop_event.is_set():  # once stopping, a failed call is the fusion call being cancelled
                self._fail(error)
        out.put(EndOfStream(name), droppable=False)

    def _align(self, item: PairedFrame) -> bool:
        fuse, item.ir_warp, item.alignment = self.monitor.process(item.ir_image, item.vis.image, item.ir_warp)
        if not fuse:  # policy "drop": this pair is too far off to fuse
            self._align_dropped += 1
            self.stats.add_dropped(item.alignment.status)
        return fuse

    def _fuse(self, item: PairedFrame) -> bool:
        fused = self.engine.fuse(item.ir_image, item.vis.image, item.ir_warp)
        if self.steady is not None:  # after the engine, whichever it is; grab times only where frames can be lost
            fused = self.steady(fused, item.registered_ir, item.vis.image, item.t_captured if self.live else None)
        item.fused = fused
        return True

    # --- delivery (calling thread) --------------------------------------------------------------------------------
    def _deliver(self, item: PairedFrame) -> None:
        now = time.monotonic()
        item.latency_ms["capture_to_pair"] = (item.t_paired - item.t_captured) * 1000.0
        item.latency_ms["total"] = (now - item.t_captured) * 1000.0
        publish_ms = self.sinks.deliver(item, self._metadata, self.live)
        self.stats.add(item, publish_ms, now)
        self.last = item
        if not self.sinks.show(lambda: self.snapshot(item)):
            self.stop("user (q, Esc or window closed)")

    def snapshot(self, item: PairedFrame) -> np.ndarray:
        """The IR | visible | fused mosaic of ``item`` with its heads-up line."""
        hud = hud_text(item, self.stats.current_fps(), self.engine)
        return make_mosaic(item.registered_ir, item.vis.image, item.fused, hud)

    def drops(self) -> dict[str, int]:
        """Frames lost on purpose, by where: every drop is counted, none is silent."""
        return {
            "capture": sum(q.dropped for q in self._inboxes),
            "unmatched": self.pairing.unmatched,
            "stages": self._pairs.dropped + self._aligned.dropped + self._fused.dropped,
            "alignment": self._align_dropped,
            "publish": self.sinks.publish_dropped,
        }

    def reconnects(self) -> dict[str, int]:
        """Times a live source, or the fusion server of a remote engine, was lost and found again."""
        counts = {c.source.role: c.reconnects for c in self._captures if c.reconnects}
        server = getattr(self.engine, "reconnects", 0)  # only a remote engine has a server to lose
        if server:
            counts["server"] = server
        return counts

    def stalled(self) -> dict[str, float]:
        """Live sources that stalled (seconds since their last frame), counting each new stall once."""
        now = time.monotonic()
        silent = {capture.source.role: capture.check_stall(now) for capture in self._captures}
        return {role: seconds for role, seconds in silent.items() if seconds is not None}

    def status_line(self) -> str:
        state = self.last.alignment.status if self.last is not None else "-"
        line = self.stats.status_line(self.drops(), state, now=time.monotonic())
        stalled = self.stalled()
        if stalled:
            line = "STALLED " + ", ".join(f"{role} {seconds:.1f} s" for role, seconds in stalled.items()) + " | " + line
        return line

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
                if self.live:
                    self.stalled()
                if self.status is not None and time.monotonic() >= next_status:
                    self.status(self.status_line())
                    next_status = time.monotonic() + self.status_interval_s
                try:
                    item = self._fused.get(timeout=0.05)
                except queue.Empty:
                    if self.last is not None and not self.sinks.poll():
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
        fuse = self._threads[-1]
        cancel = getattr(self.engine, "cancel", None)
        if fuse.is_alive() and cancel is not None:
            cancel()  # a long call (a 4K frame on the CPU: seconds) ends now, not when it is done
        deadline = time.monotonic() + (0.0 if self._hurry else JOIN_BUDGET_S)
        for thread in (*self._threads, *self._captures):
            thread.join(max(0.0, deadline - time.monotonic()))
        if cancel is not None:
            # An in-process session must outlive its last run: torn down under one (at exit) it aborts the process.
            # Cancelled, the run ends within one operator. (A remote engine's call just dies with the process.)
            fuse.join()
        for capture in self._captures:
            if capture.error is not None:
                self.error = self.error or capture.error
            if not capture.is_alive():  # a camera stuck in read() is left to process exit
                capture.source.close()
        self.sinks.close()

    def _summary(self, seconds: float) -> Summary:
        return self.stats.summary(
            seconds,
            drops=self.drops(),
            reconnects=self.reconnects(),
            stalls={c.source.role: c.stalls for c in self._captures if c.stalls},
            timing=self.pairing.describe() if self.live else "",
            published=self.sinks.published,
            recorded=self.sinks.recorded,
            stopped_by="error" if self.error is not None else self.stopped_by,
            error=self.error,
            unpaced_replay=not self.live and not self.sources.pace_fps,
        )
