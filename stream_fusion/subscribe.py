"""Subscribe to a stream_fusion publisher: decode its frames, report latency and gaps, save or show frames.

``python -m stream_fusion.subscribe tcp://HOST:5555 [--count N] [--save DIR] [--show] [--timeout S] [--all]
[--keys NAME.key_secret --server-key server.key]``

The subscriber always works on the newest frame: after each wait it reads everything that has arrived and keeps only
the last message, so a subscriber slower than the stream skips frames (reported as gaps in the frame index) instead
of falling ever further behind. ZeroMQ's CONFLATE option would do this for single-part messages only; ours have
two parts (header, buffer), hence the explicit drain. ``decode`` (:mod:`stream_fusion.decode`) and ``receive`` are the
reusable half of the wire format (docs/wire-format.md); the encoding half is ``stream_fusion.publish.encode``.

Whatever arrives is untrusted: a message that is not a valid frame is skipped with a warning and counted, never the
end of the run; ZeroMQ drops a connection that sends a message over ``--max-message-mb``, and the subscriber then
connects again.
"""
from __future__ import annotations

import argparse
import math
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
from zmq.utils.monitor import recv_monitor_message

from stream_fusion.curve import use_client_keys
from stream_fusion.decode import MAX_MESSAGE_BYTES, MAX_PIXELS, BadMessage, decode
from stream_fusion.display import Display, display_missing
from stream_fusion.endpoint import check_connect_address
from stream_fusion.errors import StreamFusionError, run_cli

# Small, so frames never pile up inside this process while it saves or shows one: the publisher drops them instead.
RCVHWM = 4
RCVHWM_ALL = 1000  # with --all, room to absorb a burst (a replay running faster than we save)
POLL_MS = 100  # how often an idle subscriber wakes up (to service its window and notice the timeout)
CAPTURE_KEYS = ("t_capture_ir", "t_capture_vis")  # wall-clock capture times (time.time()) in the pipeline's meta
WARNINGS_SHOWN = 50  # bad messages warned about one by one; the rest are only counted (a flood must not flood stderr)
# Connection events that end the run: a handshake that failed will fail again the same way.
HANDSHAKE_FAILED = (zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)


def receive(socket: zmq.Socket, flags: int = 0) -> tuple[np.ndarray, dict[str, Any]]:
    """Receive and decode one frame (blocking unless ``flags`` says otherwise)."""
    return decode(socket.recv_multipart(flags, copy=False))


def newest_message(socket: zmq.Socket, timeout_ms: int, drain: bool = True) -> tuple[list[zmq.Frame], int] | None:
    """The parts of the newest message that arrives within ``timeout_ms`` and how many older ones were skipped;
    None if none. ``drain=False`` returns the oldest waiting message instead (every message, in order)."""
    if not socket.poll(timeout_ms, zmq.POLLIN):
        return None
    parts = socket.recv_multipart(copy=False)
    skipped = 0
    while drain and socket.poll(0, zmq.POLLIN):
        parts = socket.recv_multipart(copy=False)
        skipped += 1
    return parts, skipped


def receive_latest(socket: zmq.Socket, timeout_ms: int,
                   drain: bool = True) -> tuple[np.ndarray, dict[str, Any], int] | None:
    """The newest frame that arrives within ``timeout_ms`` and how many older ones were skipped; None if none.

    Only the newest message is decoded: decoding a JPEG only to throw it away would make a slow subscriber slower.
    ``drain=False`` returns the oldest waiting frame instead (every frame, in order). A bad message raises
    :class:`stream_fusion.decode.BadMessage`.
    """
    got = newest_message(socket, timeout_ms, drain)
    if got is None:
        return None
    image, header = decode(got[0])
    return image, header, got[1]


def capture_latency_ms(meta: dict[str, Any], received_wall: float) -> float | None:
    """Wall-clock time from the older of the frame's two captures to ``received_wall``; None if it says no times.

    The older capture bounds the frame's age; wall clocks make this comparable across machines (if they agree).
    """
    times = [meta.get(key) for key in CAPTURE_KEYS]
    values = [t for t in times if isinstance(t, (int, float)) and not isinstance(t, bool) and math.isfinite(t)]
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
    """What the subscriber saw: frames, gaps in the frame index, frames skipped here to stay current, bad messages
    skipped, reconnections, latencies."""

    received: int = 0
    gaps: int = 0
    skipped: int = 0
    bad: int = 0
    reconnects: int = 0
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

    def add_bad(self, error: BadMessage, skipped: int) -> None:
        """A message that is not a valid frame: warned about (the first ``WARNINGS_SHOWN``), counted, skipped."""
        self.bad += 1
        self.skipped += skipped
        if self.bad <= WARNINGS_SHOWN:
            print(f"warning: skipped a bad message: {error}", file=sys.stderr, flush=True)
        if self.bad == WARNINGS_SHOWN:
            print("warning: further bad messages are only counted (see the summary)", file=sys.stderr, flush=True)

    def summary(self) -> str:
        text = (f"summary: {self.received} frames received, {self.gaps} missed (gaps in index; {self.skipped} skipped"
                f" here to stay current), {self.bad} bad messages skipped")
        if self.reconnects:
            text += f", {self.reconnects} reconnections"
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
    parser.add_argument("--save", type=Path, metavar="DIR",
                        help="save each frame as DIR/<index>.png (.npy for frames PNG cannot hold, e.g. float)")
    parser.add_argument("--all", action="store_true",
                        help="take every frame in order instead of skipping to the newest (to save a whole replay);"
                             " a subscriber slower than the stream then makes the publisher drop frames")
    parser.add_argument("--show", action="store_true", help="show the frames in a window (q or Esc quits)")
    parser.add_argument("--timeout", type=float, metavar="S",
                        help="stop after S seconds without a frame (an error if no frame came at all, or fewer than"
                             " --count)")
    parser.add_argument("--keys", type=Path, metavar="NAME.key_secret",
                        help="CURVE: this subscriber's secret certificate (python -m stream_fusion.keys DIR --client"
                             " NAME); needs --server-key")
    parser.add_argument("--server-key", type=Path, metavar="server.key",
                        help="CURVE: the publisher's public certificate (its DIR/server.key); needs --keys")
    parser.add_argument("--max-pixels", type=int, default=MAX_PIXELS, metavar="N",
                        help="skip frames of more pixels, checked before decoding (default: %(default)s, 8K fits)")
    parser.add_argument("--max-message-mb", type=float, default=MAX_MESSAGE_BYTES / 2**20, metavar="MB",
                        help="ZeroMQ drops a connection that sends a larger message, before reading it; the subscriber"
                             " then connects again (default: %(default)g MiB)")
    args = parser.parse_args(argv)
    if args.count is not None and args.count < 1:
        raise StreamFusionError(f"--count must be at least 1, got {args.count}")
    if args.timeout is not None and not (args.timeout > 0 and math.isfinite(args.timeout)):
        raise StreamFusionError(f"--timeout must be a positive number of seconds, got {args.timeout}")
    if (args.keys is None) != (args.server_key is None):
        raise StreamFusionError("--keys and --server-key go together: this subscriber's NAME.key_secret and the"
                                " publisher's server.key")
    if args.max_pixels < 1:
        raise StreamFusionError(f"--max-pixels must be at least 1, got {args.max_pixels}")
    if not (math.isfinite(args.max_message_mb) and 0 < args.max_message_mb <= 2**20):
        raise StreamFusionError(f"--max-message-mb must be a number from 0 to 1048576, got {args.max_message_mb}")
    return args


def open_socket(args: argparse.Namespace) -> tuple[zmq.Context, zmq.Socket, zmq.Socket]:
    """The SUB socket (CURVE client with ``--keys``, messages capped at ``--max-message-mb``), connected, and a
    monitor socket for its connection events."""
    check_connect_address(args.address)
    context = zmq.Context()
    socket = context.socket(zmq.SUB)
    try:
        if args.keys is not None:
            use_client_keys(socket, args.keys, args.server_key)
        socket.setsockopt(zmq.RCVHWM, RCVHWM_ALL if args.all else RCVHWM)
        socket.setsockopt(zmq.MAXMSGSIZE, int(args.max_message_mb * 2**20))
        socket.setsockopt(zmq.LINGER, 0)
        socket.setsockopt(zmq.SUBSCRIBE, b"")
        monitor = socket.get_monitor_socket(zmq.EVENT_DISCONNECTED | HANDSHAKE_FAILED)
        socket.connect(args.address)
    except (zmq.ZMQError, StreamFusionError) as error:
        socket.close(linger=0)
        context.destroy(linger=0)
        if isinstance(error, StreamFusionError):
            raise
        raise StreamFusionError(
            f"cannot connect to {args.address!r}: {error.strerror}; expected tcp://HOST:PORT") from None
    return context, socket, monitor


def handshake_failure(event: int, secure: bool) -> str:
    """What a failed handshake means, and what to do about it."""
    if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
        return ("the publisher refused this subscriber's key: its public NAME.key must be in the publisher's key"
                " folder, under clients/")
    if secure:
        return "the handshake failed: --server-key is not this publisher's server.key, or it does not use CURVE"
    return ("the handshake failed: the publisher uses CURVE (give --keys NAME.key_secret --server-key server.key),"
            " or it is not a ZeroMQ publisher")


def watch_connection(monitor: zmq.Socket, socket: zmq.Socket, address: str, tally: Tally, secure: bool) -> None:
    """React to connection events: a failed secure handshake is an error (it will not fix itself); a lost connection
    is made again. ZeroMQ reconnects on its own after a publisher restart, but not after it cut a connection that
    sent a message over the size limit, so the subscriber does it, the same way for both."""
    while monitor.poll(0, zmq.POLLIN):
        event = recv_monitor_message(monitor)["event"]
        if event & HANDSHAKE_FAILED:
            raise StreamFusionError(f"cannot subscribe to {address}: {handshake_failure(event, secure)}")
        tally.reconnects += 1
        if tally.reconnects == 1:
            print(f"warning: connection to {address} lost (the publisher stopped, or sent a message over"
                  " --max-message-mb): connecting again", file=sys.stderr, flush=True)
        try:
            socket.disconnect(address)
        except zmq.ZMQError:
            pass  # ZeroMQ had forgotten the endpoint already
        socket.connect(address)


def save_frame(folder: Path, name: str, image: np.ndarray) -> None:
    """``name``.png for 8- and 16-bit frames, ``name``.npy for any other number type (PNG cannot hold those)."""
    if image.dtype in (np.uint8, np.uint16):
        path = folder / f"{name}.png"
        if not cv2.imwrite(str(path), image):
            raise StreamFusionError(f"cannot write {str(path)!r}")
        return
    try:
        np.save(folder / f"{name}.npy", image)
    except OSError as error:
        raise StreamFusionError(f"cannot write {str(folder / name)!r}.npy: {error.strerror}") from None


def viewable(image: np.ndarray) -> np.ndarray:
    """An 8-bit version of any numeric frame for the window: other number types are stretched min to max."""
    if image.dtype == np.uint8:
        return image
    values = np.nan_to_num(image.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    return cv2.normalize(values, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)


def frame_index(meta: dict[str, Any]) -> int | None:
    """The publisher's frame number, if it sent a plausible one (it names saved files)."""
    index = meta.get("index")
    return index if type(index) is int and 0 <= index < 10**12 else None  # noqa: E721 - not bool


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.save is not None:
        try:
            args.save.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise StreamFusionError(f"cannot create --save folder {str(args.save)!r}: {error.strerror}") from None
    context, socket, monitor = open_socket(args)
    secure = " (CURVE)" if args.keys is not None else ""
    print(f"subscribed to {args.address}{secure}, waiting for frames", file=sys.stderr, flush=True)
    window = open_window(f"stream_fusion {args.address}") if args.show else None
    previous_handler = signal.signal(signal.SIGTERM, _interrupt)
    tally = Tally()
    silent_since = time.monotonic()
    timed_out = False
    try:
        while args.count is None or tally.received < args.count:
            watch_connection(monitor, socket, args.address, tally, args.keys is not None)
            got = newest_message(socket, POLL_MS, drain=not args.all)
            if got is None:
                if window is not None and not window.poll():
                    break
                if args.timeout is not None and time.monotonic() - silent_since >= args.timeout:
                    timed_out = True
                    break
                continue
            parts, skipped = got
            try:
                image, header = decode(parts, args.max_pixels)
            except BadMessage as error:
                tally.add_bad(error, skipped)
                continue
            received_wall, silent_since = time.time(), time.monotonic()
            meta = header["meta"] if isinstance(header.get("meta"), dict) else {}  # absent from plain imagezmq
            latency = capture_latency_ms(meta, received_wall)
            index = frame_index(meta)
            tally.add(index, skipped, latency)
            line = f"frame {index if index is not None else '?'}  {'x'.join(map(str, image.shape))}"
            line += f"  latency {latency:.1f} ms" if latency is not None else "  latency n/a (no capture times)"
            print(line + (f"  (skipped {skipped} older)" if skipped else ""), flush=True)
            if args.save is not None:
                save_frame(args.save, f"{index if index is not None else tally.received - 1:06d}", image)
            if window is not None and not window.show(viewable(image)):
                break
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous_handler)
        socket.disable_monitor()
        monitor.close(linger=0)
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
