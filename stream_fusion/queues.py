"""The two hand-off queues between pipeline threads, one per mode.

* ``LatestQueue`` (live): ``put`` never blocks; when full it throws away the OLDEST frame and counts it, so a slow
  stage always works on the newest data and latency cannot grow with time.
* ``LosslessQueue`` (replay): ``put`` blocks while full (back-pressure to the reader), so every input frame arrives,
  in order; it gives up only when the pipeline is stopping.

Both hold end-of-stream markers (any object that is not droppable) that are never thrown away.
"""
from __future__ import annotations

import queue
import threading
from collections import deque
from typing import Any


class LatestQueue:
    """Bounded drop-oldest queue for live streams; ``dropped`` counts the frames thrown away."""

    def __init__(self, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be >= 1")
        self.maxsize = maxsize
        self.dropped = 0
        self._items: deque[tuple[Any, bool]] = deque()
        self._cond = threading.Condition()

    def put(self, item: Any, droppable: bool = True) -> bool:
        """Add ``item``; returns True (a live put always succeeds, at the expense of the oldest droppable item)."""
        with self._cond:
            if len(self._items) >= self.maxsize:
                for position, (_, can_drop) in enumerate(self._items):
                    if can_drop:
                        del self._items[position]
                        self.dropped += 1
                        break
            self._items.append((item, droppable))
            self._cond.notify()
        return True

    def get(self, timeout: float) -> Any:
        """The oldest item; raises ``queue.Empty`` after ``timeout`` seconds without one."""
        with self._cond:
            if not self._cond.wait_for(lambda: bool(self._items), timeout):
                raise queue.Empty
            return self._items.popleft()[0]

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)


class LosslessQueue:
    """Bounded blocking queue for replay: never drops; ``put`` waits for room unless ``stop`` is set."""

    def __init__(self, maxsize: int, stop: threading.Event) -> None:
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=maxsize)
        self._stop = stop
        self.dropped = 0  # always 0: kept so both queues report the same counters

    def put(self, item: Any, droppable: bool = True) -> bool:
        """Wait for room; False (item not queued) only when the pipeline is stopping."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def get(self, timeout: float) -> Any:
        return self._queue.get(timeout=timeout)

    def __len__(self) -> int:
        return self._queue.qsize()
