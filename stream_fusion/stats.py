"""What a run measures: per-stage latencies, frame rate and alignment states; the live status line and the summary.

The pipeline hands each delivered frame to :class:`RunStats`; the status line and the summary read from it. Memory is
bounded: latencies are kept for the newest ``LATENCY_HISTORY`` frames, so a stream running for days does not grow.

A frame's capture-to-publish time is two different things added up: *processing*, the time the stages worked on it
(align, fuse, publish), and *waiting*, the time it sat in the pairing and the queues between stages. They are
reported apart because they mean different things: live, waiting stays within a frame or two (the queues keep only
the newest pair); an unpaced replay reads ahead of the slowest stage, so there waiting is the replay's backlog
(seconds with a slow network), not lag a camera would see.
"""
from __future__ import annotations

import collections
import itertools
from dataclasses import dataclass, field

import numpy as np

from stream_fusion.errors import StreamFusionError
from stream_fusion.sync import STAGES, PairedFrame

FPS_WINDOW = 30  # frames the live fps and the status line's latencies are taken over
LATENCY_HISTORY = 100_000  # frames of latency kept for the summary's median / p99 (about 1 h at 30 fps)
WORK = ("align", "fuse", "publish")  # the stages whose own work makes a frame's processing time


@dataclass
class Summary:
    """What a run did: printed at the end, written by the benchmark."""

    frames: int = 0
    seconds: float = 0.0
    latency_ms: dict[str, tuple[float, float]] = field(default_factory=dict)  # stage -> (median, p99)
    drops: dict[str, int] = field(default_factory=dict)
    reconnects: dict[str, int] = field(default_factory=dict)  # live source -> times it was lost and reopened
    stalls: dict[str, int] = field(default_factory=dict)  # live source -> times it stopped delivering (open, silent)
    timing: str = ""  # live: the measured source rates and the pairing tolerance they gave
    alignment: dict[str, int] = field(default_factory=dict)
    published: int = 0
    recorded: int = 0
    stopped_by: str = "end of input"
    error: StreamFusionError | None = None
    unpaced_replay: bool = False  # read ahead as fast as the files go: waiting is the backlog, not lag

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def _ms(self, stage: str) -> str:
        median, p99 = self.latency_ms.get(stage, (None, None))
        return "n/a" if median is None else f"{median:.1f}/{p99:.1f}"

    def lines(self) -> list[str]:
        over = f" of the last {LATENCY_HISTORY} frames" if self.frames > LATENCY_HISTORY else ""
        stages = ", ".join(f"{stage} {self._ms(stage)}" for stage in WORK if stage in self.latency_ms)
        backlog = " (an unpaced replay reads ahead: this is its backlog, not lag)" if self.unpaced_replay else ""
        return [
            f"summary: {self.frames} frames fused in {self.seconds:.2f} s ({self.fps:.1f} fps), stopped by {self.stopped_by}",
            f"  processing ms (median/p99{over}), the stages' own work on a frame: {self._ms('processing')}"
            + (f" ({stages})" if stages else ""),
            f"  waiting ms (median/p99{over}), in the pairing and the queues between stages: {self._ms('waiting')}"
            f"{backlog}; capture to publish {self._ms('total')}",
            "  drops: " + ", ".join(f"{name} {count}" for name, count in self.drops.items())
            + ("; reconnects: " + ", ".join(f"{role} {n}" for role, n in self.reconnects.items()) if self.reconnects
               else ""),
            *([f"  live: {self.timing}; stalls: "
               + (", ".join(f"{role} {n}" for role, n in self.stalls.items()) if self.stalls else "none")]
              if self.timing else []),
            "  alignment: " + (", ".join(f"{name} {count}" for name, count in sorted(self.alignment.items())) or "n/a"),
            f"  published {self.published}, recorded {self.recorded}",
        ]


class RunStats:
    """Counts and times the frames a run delivers (and the alignment states of the pairs it drops)."""

    def __init__(self) -> None:
        self.frames = 0
        self.latencies: dict[str, collections.deque[float]] = {
            stage: collections.deque(maxlen=LATENCY_HISTORY) for stage in (*STAGES, "publish", "processing", "waiting")
        }
        self.alignment: collections.Counter[str] = collections.Counter()
        self._delivered: collections.deque[float] = collections.deque(maxlen=FPS_WINDOW)

    def add(self, item: PairedFrame, publish_ms: float | None, now: float) -> None:
        """One delivered frame: its stage latencies, the send's (None: not published), its alignment state; ``now``
        (monotonic) is when it was delivered."""
        if publish_ms is not None:
            self.latencies["publish"].append(publish_ms)
        for stage in STAGES:
            self.latencies[stage].append(item.latency_ms.get(stage, 0.0))
        work = item.latency_ms.get("align", 0.0) + item.latency_ms.get("fuse", 0.0)
        self.latencies["processing"].append(work + (publish_ms or 0.0))
        self.latencies["waiting"].append(max(0.0, item.latency_ms.get("total", 0.0) - work))
        self.frames += 1
        self.alignment[item.alignment.status] += 1
        self._delivered.append(now)

    def add_dropped(self, status: str) -> None:
        """A pair the alignment policy dropped: its state counts in the summary too."""
        self.alignment[status] += 1

    def current_fps(self, now: float | None = None) -> float:
        """Delivered frames per second over the last ``FPS_WINDOW`` frames; with ``now`` (monotonic), a gap since
        the last frame that is longer than the usual interval counts too, so a stalled stream decays to 0, not
        keeps its last rate."""
        if len(self._delivered) < 2:
            return 0.0
        first, last = self._delivered[0], self._delivered[-1]
        if now is not None:
            last = max(last, now - (last - first) / (len(self._delivered) - 1))
        span = last - first
        return (len(self._delivered) - 1) / span if span > 0 else 0.0

    def status_line(self, drops: dict[str, int], alignment_state: str, now: float | None = None) -> str:
        """The live one-line status: frames, fps, recent processing (per stage) and waiting times, drops by where, the
        alignment state."""
        def recent(stage: str) -> float:
            values = list(itertools.islice(reversed(self.latencies[stage]), FPS_WINDOW))
            return float(np.median(values)) if values else 0.0

        counts = " ".join(f"{name} {count}" for name, count in drops.items())
        return (
            f"{self.frames} frames {self.current_fps(now):5.1f} fps | ms: align {recent('align'):.1f} fuse "
            f"{recent('fuse'):.1f} processing {recent('processing'):.1f} waiting {recent('waiting'):.1f} | "
            f"drops: {counts} | align {alignment_state}"
        )

    def summary(
        self, seconds: float, *, drops: dict[str, int], reconnects: dict[str, int], published: int, recorded: int,
        stopped_by: str, error: StreamFusionError | None, stalls: dict[str, int] | None = None, timing: str = "",
        unpaced_replay: bool = False,
    ) -> Summary:
        latency = {
            stage: (float(np.median(values)), float(np.percentile(values, 99)))
            for stage, values in self.latencies.items()
            if values
        }
        return Summary(frames=self.frames, seconds=seconds, latency_ms=latency, drops=drops, reconnects=reconnects,
                       stalls=stalls or {}, timing=timing, alignment=dict(self.alignment), published=published,
                       recorded=recorded, stopped_by=stopped_by, error=error, unpaced_replay=unpaced_replay)
