"""Where fused frames go: the ZeroMQ publisher, the recording and the window.

They run on the pipeline's calling thread: GUI toolkits want the main thread, and it is also where signals arrive.
The publisher is closed by whoever opened it (after the summary has read its counters); the recording and the
window are finished here, at the end of the run.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from stream_fusion.display import Display
from stream_fusion.record import Recorder
from stream_fusion.sync import PairedFrame


class FramePublisher(Protocol):
    """What the pipeline needs of a publisher (:class:`stream_fusion.publish.Publisher` is one)."""

    sent: int  # frames queued for at least one subscriber
    dropped: int  # frames refused because a subscriber was too slow

    def send(self, image: np.ndarray, meta: dict) -> bool: ...


class Sinks:
    """The outputs of one run; any of them may be absent."""

    def __init__(
        self, publisher: FramePublisher | None = None, recorder: Recorder | None = None, display: Display | None = None
    ) -> None:
        self.publisher, self.recorder, self.display = publisher, recorder, display

    def deliver(self, item: PairedFrame, metadata: Callable[[PairedFrame], dict[str, Any]], live: bool) -> float | None:
        """Publish (with ``metadata(item)``) and record one fused frame; returns the ms the send took (None: not
        published). A live frame is recorded at its capture time, so the recording plays at the speed of the scene."""
        publish_ms = None
        if self.publisher is not None:
            started = time.perf_counter()
            self.publisher.send(item.fused, metadata(item))
            publish_ms = (time.perf_counter() - started) * 1000.0
        if self.recorder is not None:
            self.recorder.write(item.fused, item.t_captured if live else None)
        return publish_ms

    def show(self, view: Callable[[], np.ndarray]) -> bool:
        """Show ``view()`` in the window, if there is one; False once the user closed it."""
        return self.display is None or self.display.show(view())

    def poll(self) -> bool:
        """Service the window between frames (so it never looks hung); False once the user closed it."""
        return self.display is None or self.display.poll()

    @property
    def published(self) -> int:
        return self.publisher.sent if self.publisher is not None else 0

    @property
    def publish_dropped(self) -> int:
        return self.publisher.dropped if self.publisher is not None else 0

    @property
    def recorded(self) -> int:
        return self.recorder.frames if self.recorder is not None else 0

    def close(self) -> None:
        """Finish the recording (a playable file) and close the window."""
        if self.recorder is not None:
            self.recorder.close()
        if self.display is not None:
            self.display.close()
