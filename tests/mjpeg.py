"""A live MJPEG-over-HTTP camera on 127.0.0.1 for the reconnection tests (what many IP cameras serve)."""
from __future__ import annotations

import http.server
import threading
import time

import cv2
import numpy as np


class MjpegStream:
    """A live MJPEG-over-HTTP camera on 127.0.0.1 (what many IP cameras serve): each connection streams
    ``per_connection`` frames (``period_s`` apart), then the connection drops, as a camera rebooting or Wi-Fi failing
    would drop it.
    ``up`` False refuses new connections (the camera is gone). Frame k of the whole stream is filled with 10 * k."""

    def __init__(self, per_connection: int, period_s: float = 0.0, *, clock: float | None = None,
                 phase_s: float = 0.0, freeze_after: int | None = None) -> None:
        self.per_connection = per_connection
        self.period_s = period_s  # between frames, as a camera's frame rate spaces them
        # With ``clock`` (time.monotonic() shared by two streams), frames go out on its ticks plus ``phase_s``, as
        # two free-running cameras grab a fixed time apart. ``freeze_after``: the first connection sends that many
        # frames, then nothing more while staying open (a frozen camera); later connections stream normally.
        self.clock, self.phase_s, self.freeze_after = clock, phase_s, freeze_after
        self.frozen_at: float | None = None  # time.time() of the last frame before the freeze
        self.connections = 0
        self._closing = threading.Event()
        self.up = True
        self.served = 0
        stream = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                if not stream.up:
                    self.send_error(503)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                stream.connections += 1
                freeze = stream.freeze_after if stream.connections == 1 else None
                for sent in range(stream.per_connection):
                    if freeze is not None and sent == freeze:
                        stream.frozen_at = time.time()
                        stream._closing.wait()  # the connection stays open; nothing more comes
                        return
                    if stream.clock is not None:
                        ticks = (time.monotonic() - stream.clock - stream.phase_s) / stream.period_s
                        time.sleep(max(0.0, stream.clock + stream.phase_s + (int(ticks) + 1) * stream.period_s
                                       - time.monotonic()))
                    jpeg = cv2.imencode(".jpg", np.full((48, 64, 3), (10 * stream.served) % 256, np.uint8))[1]
                    stream.served += 1
                    self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % jpeg.size
                                     + jpeg.tobytes() + b"\r\n")
                    self.wfile.flush()
                    if stream.clock is None:
                        time.sleep(stream.period_s)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/video.mjpg"

    def close(self) -> None:
        self._closing.set()
        self.server.shutdown()
        self.server.server_close()
