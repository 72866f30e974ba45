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

    def __init__(self, per_connection: int, period_s: float = 0.0) -> None:
        self.per_connection = per_connection
        self.period_s = period_s  # between frames, as a camera's frame rate spaces them
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
                for _ in range(stream.per_connection):
                    jpeg = cv2.imencode(".jpg", np.full((48, 64, 3), (10 * stream.served) % 256, np.uint8))[1]
                    stream.served += 1
                    self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % jpeg.size
                                     + jpeg.tobytes() + b"\r\n")
                    self.wfile.flush()
                    time.sleep(stream.period_s)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/video.mjpg"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
