"""Subscribe to a stream_fusion publisher: decode its frames, report latency and gaps, save or show frames.

``python -m stream_fusion.subscribe tcp://HOST:5555 [--count N] [--save DIR] [--show] [--timeout S] [--all]``

The subscriber always works on the newest frame: after each wait it reads everything that has arrived and keeps only
the last message, so a subscriber slower than the stream skips frames (reported as gaps in the frame index) instead
of falling ever further behind. ZeroMQ's CONFLATE option would do this for single-part messages only; ours have
two parts (header, buffer), hence the explicit drain. ``decode``/``receive`` are the reusable half of the wire format
(docs/wire-format.md); the encoding half is ``stream_fusion.publish.encode``.
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import cv2
import numpy as np
import zmq

from stream_fusion.display import Display, display_missing
from stream_fusion.endpoint import check_connect_address
from stream_fusion.errors import StreamFusionError, run_cli

# Small, so frames never pile up inside this process while it saves or shows one: the publisher drops them instead.
RCVHWM = 4
RCVHWM_ALL = 1000  # with --all, room to absorb a burst (a replay running faster than we save)
POLL_MS = 100  # how often an idle subscriber wakes up (to service its window and notice the timeout)
CAPTURE_KEYS = ("t_capture_ir", "t_capture_vis")  # wall-clock capture times (time.time()) in the pipeline's meta


def decode(parts: list[bytes] | list[zmq.Frame]) -> tuple[np.ndarray, dict[str, Any]]:
    """The image and JSON header of one message: raw (``dtype`` + ``shape``) or JPEG (``"jpg": true``)."""
    if len(parts) != 2:
        raise StreamFusionError(f"expected a two-part message (JSON header, image), got {len(parts)} part(s)")
    header_bytes, buffer = bytes(memoryview(parts[0])), memoryview(parts[1])
    try:
        header = json.loads(header_bytes)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise StreamFusionError(f"message header is not JSON: {error}") from None
    if not isinstance(header, dict) or "msg" not in header:
        raise StreamFusionError("message header is not an imagezmq header (a JSON object with a 'msg' key)")
    if header.get("jpg"):
        image = cv2.imdecode(np.frombuffer(buffer, np.uint8), cv2.IMREAD_UNCHANGED)
        if image is None:
            raise StreamFusionError(f"message says JPEG but its {len(buffer)}-byte buffer does not decode")
        return image, header
    try:
        dtype, shape = np.dtype(header["dtype"]), tuple(int(n) for n in header["shape"])
    except (KeyError, TypeError, ValueError) as error:
        raise StreamFusionError(f"raw message header needs a valid 'dtype' and 'shape': {error}") from None
    if int(np.prod(shape)) * dtype.itemsize != len(buffer):
        raise StreamFusionError(f"raw message of shape {list(shape)} {dtype} cannot come in {len(buffer)} bytes")
    # A writable copy: callers draw on frames (HUDs), and the message buffer is read-only.
    return np.frombuffer(buffer, dtype).reshape(shape).copy(), header


def receive(socket: zmq.Socket, flags: int = 0) -> tuple[np.ndarray, dict[str, Any]]:
    """Receive and decode one frame (blocking unless ``flags`` says otherwise)."""
    return decode(socket.recv_multipart(flags, copy=False))


def receive_latest(socket: zmq.Socket, timeout_ms: int,
                   drain: bool = True) -> tuple[np.ndarray, dict[str, Any], int] | None:
    """The newest frame that arrives within ``timeout_ms`` and how many older ones were skipped; None if none.

    Only the newest message is decoded: decoding a JPEG only to throw it away would make a slow subscriber slower.
    ``drain=False`` returns the oldest waiting frame instead (every frame, in order).
    """
    if not socket.poll(timeout_ms, zmq.POLLIN):
        return None
    parts = socket.recv_multipart(copy=False)
    skipped = 0
    while drain and socket.poll(0, zmq.POLLIN):
        parts = socket.recv_multipart(copy=False)
        skipped += 1
    image, header = decode(parts)
    return image, header, skipped


def capture_latency_ms(meta: dict[str, Any], received_wall: float) -> float | None:
    """Wall-clock time from the older of the frame's two captures to ``received_wall``; None if it says no times.

    The older capture bounds the frame's age; wall clocks make this comparable across machines (if they agree).
    """
    times = [meta.get(key) for key in CAPTURE_KEYS]
    values = [t for t in times if isinstance(t, (int, float)) and not isinstance(t, bool)]
    return (received_wall - min(values)) * 1000.0 if values else None


def open_window(title: str) -> Display | None:
    """A window for ``--show``, or None with one message: a headless machine keeps receiving (Qt would abort)."""
    reason = display_missing()
    if reason is not None:
        print(f"{reason}: --show is off, continuing headless", file=sys.stderr)
        return None
    return Display.open(title)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    """SIGTERM ends the run like Ctrl-C, so the summary is still printed."""
    raise KeyboardInterrupt


@dataclass
class Tally:
    """What the subscriber saw: frames, gaps in the frame index, frames skipped here to stay current, latencies."""

    received: int = 0
    gaps: int = 0
    skipped: int = 0
    last_index: int | None = None
    latencies: list[float] = field(default_factory=list)

    def add(self, index: int | None, skipped: int, latency_ms: float | None) -> None:
        if index is not None and self.last_index is not None and index > self.last_index:
            self.gaps += index - self.last_index - 1  # an index that goes back: the publisher restarted, no gap
        self.last_index = index if index is not None else self.last_index
        self.received += 1
        self.skipped += skipped
        if latency_ms is not None:
            self.latencies.append(latency_ms)

    def summary(self) -> str:
        text = (f"summary: {self.received} frames received, {self.gaps} missed (gaps in index; {self.skipped} skipped"
                " here to stay current)")
        if self.latencies:
            text += (f", capture-to-receipt latency median {np.median(self.latencies):.1f} ms,"
                     f" p99 {np.percentile(self.latencies, 99):.1f} ms")
        return text


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m stream_fusion.subscribe",
        description="Receive a stream_fusion ZeroMQ stream: print each frame's index and capture-to-receipt latency.")
    parser.add_argument("address", nargs="?", default="tcp://127.0.0.1:5555",
                        help="publisher to connect to (default: %(default)s)")
    parser.add_argument("--count", type=int, help="exit after N frames")
    parser.add_argument("--save", type=Path, metavar="DIR", help="save each frame as DIR/<index>.png")
    parser.add_argument("--all", action="store_true",
                        help="take every frame in order instead of skipping to the newest (to save a whole replay);"
                             " a subscriber slower than the stream then makes the publisher drop frames")
    parser.add_argument("--show", action="store_true", help="show the frames in a window (q or Esc quits)")
    parser.add_argument("--timeout", type=float, metavar="S",
                        help="stop after S seconds without a frame (an error if no frame came at all, or fewer than"
                             " --count)")
    args = parser.parse_args(argv)
    if args.count is not None and args.count < 1:
        raise StreamFusionError(f"--count must be at least 1, got {args.count}")
    if args.timeout is not None and not args.timeout > 0:
        raise StreamFusionError(f"--timeout must be a positive number of seconds, got {args.timeout}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.save is not None:
        try:
            args.save.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise StreamFusionError(f"cannot create --save folder {str(args.save)!r}: {error.strerror}") from None
    check_connect_address(args.address)
    context = zmq.Context()
    socket = context.socket(zmq.SUB)
    socket.setsockopt(zmq.RCVHWM, RCVHWM_ALL if args.all else RCVHWM)
    socket.setsockopt(zmq.LINGER, 0)
    socket.setsockopt(zmq.SUBSCRIBE, b"")
    try:
        socket.connect(args.address)
    except zmq.ZMQError as error:
        socket.close()
        context.term()
        raise StreamFusionError(
            f"cannot connect to {args.address!r}: {error.strerror}; expected tcp://HOST:PORT") from None
    print(f"subscribed to {args.address}, waiting for frames", file=sys.stderr, flush=True)
    window = open_window(f"stream_fusion {args.address}") if args.show else None
    previous_handler = signal.signal(signal.SIGTERM, _interrupt)
    tally = Tally()
    silent_since = time.monotonic()
    timed_out = False
    try:
        while args.count is None or tally.received < args.count:
            got = receive_latest(socket, POLL_MS, drain=not args.all)
            if got is None:
                if window is not None and not window.poll():
                    break
                if args.timeout is not None and time.monotonic() - silent_since >= args.timeout:
                    timed_out = True
                    break
                continue
            image, header, skipped = got
            received_wall, silent_since = time.time(), time.monotonic()
            meta = header["meta"] if isinstance(header.get("meta"), dict) else {}  # absent from plain imagezmq
            latency = capture_latency_ms(meta, received_wall)
            index = meta.get("index") if isinstance(meta.get("index"), int) else None
            tally.add(index, skipped, latency)
            line = f"frame {index if index is not None else '?'}  {'x'.join(map(str, image.shape))}"
            line += f"  latency {latency:.1f} ms" if latency is not None else "  latency n/a (no capture times)"
            print(line + (f"  (skipped {skipped} older)" if skipped else ""), flush=True)
            if args.save is not None:
                path = args.save / f"{index if index is not None else tally.received - 1:06d}.png"
                if not cv2.imwrite(str(path), image):
                    raise StreamFusionError(f"cannot write {str(path)!r}")
            if window is not None and not window.show(image):
                break
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous_handler)
        socket.close()
        context.term()
        if window is not None:
            window.close()
    print(tally.summary(), flush=True)
    if timed_out and tally.received == 0:
        raise StreamFusionError(f"no frame from {args.address} within {args.timeout:g} s (is the publisher running"
                                " and bound to that address?)")
    if timed_out and args.count is not None:
        raise StreamFusionError(f"only {tally.received} of {args.count} frames before {args.timeout:g} s without one")
    return 0


def cli() -> None:
    """The ``stream-fusion-subscribe`` console script: ``main`` with one-line errors (exit 2) instead of tracebacks."""
    run_cli(main)


if __name__ == "__main__":
    run_cli(main)
