"""A live source's frame timing as measured from its arrivals, not as it reports it.

Live sources misreport their rate: OpenCV's FFmpeg backend says 25 fps for an MJPEG-over-HTTP camera sending 10
(it has no rate to read and falls back to 25), cameras report the mode they were asked for, not what they deliver
in the dark. So the pairing tolerance and the stall detection both work from :class:`ArrivalRate`: the median
interval between the frames that actually arrived, over a sliding window, with the reported rate only as the prior
until enough frames came. The median ignores the odd long gap (a stall, a reconnect) and the odd burst.
"""
from __future__ import annotations

import statistics
from collections import deque

ASSUMED_FPS = 30.0  # the prior when a source reports no rate
WINDOW = 32  # arrival intervals the median is taken over (about 3 s at 10 fps)
MIN_INTERVALS = 5  # measured intervals before the measurement replaces the reported rate
WARMUP_S = 0.5  # arrivals this soon after a source (re)opened are not measured: they are the backlog of the open
MAX_STALL_S = 1.0  # a stall is declared after two frame periods, but never later than this...
STALL_REOPEN_S = 1.0  # ...and a live stream with no frame for this long is reopened (read timeout)


class ArrivalRate:
    """Measures a source's frame period from (frame index, arrival time) pairs. Indices may skip (frames dropped
    on the way): each interval is divided by the frames it spans. The first ``WARMUP_S`` after an open are not
    measured: a stream's frames buffered while it was opening arrive in a burst, milliseconds apart."""

    def __init__(self, reported_fps: float | None = None, window: int = WINDOW) -> None:
        self.reported_fps = reported_fps if reported_fps and reported_fps > 0 else None
        self._intervals: deque[float] = deque(maxlen=window)
        self._last: tuple[int, float] | None = None
        self._median: float | None = None
        self._measure_from: float | None = None

    def reopened(self) -> None:
        """The source was opened again: its next arrivals are a backlog again (the window measured so far stays)."""
        self._measure_from = None

    def add(self, index: int, t: float) -> None:
        """One frame arrived: its index in the source and its monotonic arrival time."""
        if self._measure_from is None:
            self._measure_from = t + WARMUP_S
        if t >= self._measure_from and self._last is not None and index > self._last[0] and t >= self._last[1]:
            self._intervals.append((t - self._last[1]) / (index - self._last[0]))
            if len(self._intervals) >= MIN_INTERVALS:
                self._median = statistics.median(self._intervals)
        self._last = (index, t)

    @property
    def measured_period(self) -> float | None:
        """The median measured interval (s), once ``MIN_INTERVALS`` were measured; else None."""
        return self._median

    @property
    def period(self) -> float:
        """The frame period (s): measured when it can be, else the reported one, else ``1 / ASSUMED_FPS``."""
        if self._median is not None and self._median > 0:
            return self._median
        return 1.0 / (self.reported_fps or ASSUMED_FPS)

    @property
    def fps(self) -> float:
        return 1.0 / self.period

    @property
    def last_arrival(self) -> float | None:
        return self._last[1] if self._last is not None else None

    def stall_after(self) -> float:
        """Seconds without a frame that make a stall: two measured periods, at most ``MAX_STALL_S`` (but at least
        1.5 periods, so a camera slower than 2 fps is not stalled between every two frames). Before the period is
        measured, ``MAX_STALL_S``: a misreported rate must not raise false alarms."""
        if self._median is None:
            return max(MAX_STALL_S, 1.5 / (self.reported_fps or ASSUMED_FPS))
        return max(1.5 * self._median, min(2.0 * self._median, MAX_STALL_S))
