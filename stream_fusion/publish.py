"""ZeroMQ publisher of fused frames, in imagezmq's wire format so that anyone can subscribe.

Each frame is one two-part ZeroMQ message: a JSON header, then the image buffer (see docs/wire-format.md):

* raw: ``{"msg": NAME, "dtype": "uint8", "shape": [h, w] or [h, w, 3], "meta": {...}}`` + the C-ordered pixels;
* jpg: ``{"msg": NAME, "jpg": true, "meta": {...}}`` + a JPEG file.

That is exactly what ``imagezmq.ImageSender.send_image`` / ``send_jpg`` put on the wire (imagezmq reads only the
keys it knows), so an unmodified ``imagezmq.ImageHub(open_port=..., REQ_REP=False)`` receives our frames; our
metadata rides along under ``"meta"``. ``"msg"`` is a stable sender name (``stream_fusion@HOST:PORT``), because
imagezmq programs use it to tell senders apart (typically as the window title); per-frame data lives in ``"meta"``.

The pipeline must never wait for a subscriber, so sends are non-blocking with a tiny send high-water mark and
``XPUB_NODROP``: when a subscriber's queue is full ZeroMQ refuses the frame instead of silently discarding it, which is
what lets us count drops. An XPUB socket (rather than PUB) also shows us subscriptions, so a replay can wait until
its subscriber is connected and deliver every frame.
"""
from __future__ import annotations

import json
import socket as _socket
import time
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
import zmq

from stream_fusion.config import require
from stream_fusion.endpoint import check_bind_address, is_loopback
from stream_fusion.errors import StreamFusionError
from stream_fusion.redact import redact
from stream_fusion.sync import STAGES

if TYPE_CHECKING:
    from stream_fusion.engine import FusionEngine
    from stream_fusion.sync import PairedFrame

FORMATS = ("raw", "jpg")
# Frames ZeroMQ may queue per subscriber when the config does not say. Live: 2, so a slow subscriber gets recent frames,
# not a backlog. Replay: enough to absorb bursts (a replay runs as fast as the pipeline) so a subscriber that keeps up
# on average sees every frame; the send still never blocks, a subscriber that falls further behind loses frames,
# counted.
LIVE_HWM, REPLAY_HWM = 2, 64
# A peer that answers no heartbeat for this long is dead (cable pulled, machine crashed, process stopped): drop the
# connection so its full queue stops refusing frames meant for the other subscribers (see docs/wire-format.md).
HEARTBEAT_IVL_MS = 1000
HEARTBEAT_TIMEOUT_MS = 5000
# A full queue right after a successful send is usually a burst (a replay delivering several frames at once) that
# ZeroMQ's I/O thread has not moved to the network yet, not a slow subscriber: give it this long to catch up.
BURST_GRACE_S = 0.005


def _json_default(value: Any) -> Any:
    """Numpy scalars and arrays appear in metadata (latencies, alignment offsets); JSON wants Python numbers."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"metadata value of type {type(value).__name__} is not JSON serialisable")


def frame_metadata(item: PairedFrame, sources: dict[str, str], engine: FusionEngine) -> dict[str, Any]:
    """The ``meta`` that rides with each published frame (docs/wire-format.md): its index, the wall-clock capture
    times of both inputs, the per-stage latencies, the alignment record, the ``sources`` (role -> description) and
    the engine with its provider."""
    return {
        "index": item.index,
        "t_capture_ir": item.ir.t_wall,
        "t_capture_vis": item.vis.t_wall,
        "latency_ms": {stage: round(item.latency_ms.get(stage, 0.0), 3) for stage in STAGES},
        "alignment": item.alignment.as_dict(),
        "source": {role: redact(text) for role, text in sources.items()},  # every subscriber reads it
        "engine": engine.name,
        "provider": engine.provider,
    }


def encode(image: np.ndarray, meta: dict[str, Any], fmt: str = "raw", jpeg_quality: int = 90,
           msg: str = "stream_fusion") -> list[bytes]:
    """The two message parts (header, buffer) for one frame, in the wire format described in the module docstring."""
    if not (isinstance(image, np.ndarray) and image.dtype == np.uint8
            and (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3))):
        kind = f"{image.dtype} array of shape {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise StreamFusionError(f"publish: expected a uint8 image of shape (h, w) or (h, w, 3), got a {kind}")
    if fmt == "raw":
        header: dict[str, Any] = {"msg": msg, "dtype": "uint8", "shape": list(image.shape)}
        # tobytes copies: the caller (display, recorder) may draw on this array right after send returns.
        buffer = np.ascontiguousarray(image).tobytes()
    elif fmt == "jpg":
        header = {"msg": msg, "jpg": True}
        ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
        if not ok:
            raise StreamFusionError(f"publish: JPEG encoding failed for an image of shape {image.shape}")
        buffer = jpeg.tobytes()
    else:
        raise StreamFusionError(f"publish: unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    header["meta"] = meta
    return [json.dumps(header, separators=(",", ":"), default=_json_default).encode(), buffer]


class Publisher:
    """Binds a ZeroMQ XPUB socket and publishes fused frames; a slow or absent subscriber never holds the caller up.

    Counters: ``sent`` (queued for every subscriber), ``dropped`` (refused because a subscriber's queue was full:
    it is too slow or stuck), ``unheard`` (published while nobody was subscribed; ZeroMQ discards those).
    Use one Publisher from one thread at a time: ZeroMQ sockets are not thread-safe.
    """

    def __init__(self, address: str = "tcp://127.0.0.1:5555", fmt: str = "raw", jpeg_quality: int = 90,
                 hwm: int = 2) -> None:
        if fmt not in FORMATS:
            raise StreamFusionError(f"publish format must be one of {', '.join(FORMATS)}, got {fmt!r}")
        if isinstance(jpeg_quality, bool) or not isinstance(jpeg_quality, int) or not 1 <= jpeg_quality <= 100:
            raise StreamFusionError(f"JPEG quality must be an integer from 1 to 100, got {jpeg_quality!r}")
        if isinstance(hwm, bool) or not isinstance(hwm, int) or hwm < 1:
            # 0 would mean "unbounded" to ZeroMQ: a slow subscriber would then queue frames and lag without limit.
            raise StreamFusionError(f"publish high-water mark must be an integer >= 1, got {hwm!r}")
        check_bind_address(address)
        self.fmt = fmt
        self.jpeg_quality = jpeg_quality
        self.sent = 0
        self.dropped = 0
        self.unheard = 0
        self._topics: set[bytes] = set()  # subscribed prefixes that have at least one subscriber
        self._dropping = False  # the last frame was dropped: a subscriber is slow, so drop without waiting
        self._context = zmq.Context()
        self._socket = self._context.socket(zmq.XPUB)
        self._socket.setsockopt(zmq.SNDHWM, hwm)
        self._socket.setsockopt(zmq.XPUB_NODROP, 1)
        self._socket.setsockopt(zmq.HEARTBEAT_IVL, HEARTBEAT_IVL_MS)
        self._socket.setsockopt(zmq.HEARTBEAT_TIMEOUT, HEARTBEAT_TIMEOUT_MS)
        try:
            self._socket.bind(address)
        except zmq.ZMQError as error:
            self._socket.close(linger=0)
            self._context.term()
            hint = ("another program (another run_stream?) is bound to it: choose another port"
                    if error.errno == zmq.EADDRINUSE else "expected e.g. tcp://127.0.0.1:5555 or tcp://0.0.0.0:5555")
            raise StreamFusionError(f"cannot publish on {address!r}: {error.strerror}; {hint}") from None
        self.endpoint: str = self._socket.getsockopt_string(zmq.LAST_ENDPOINT)
        where = _socket.gethostname() + (":" + self.endpoint.rpartition(":")[2] if address.startswith("tcp") else "")
        self.msg = f"stream_fusion@{where}"  # the header's "msg": stable per stream, distinct per sender and port

    @classmethod
    def from_config(cls, publish_cfg: dict[str, Any], live: bool) -> Publisher | None:
        """From the ``publish:`` section; None when ``zmq`` is none (no publishing). ``hwm`` null: ``LIVE_HWM`` for
        a live stream, ``REPLAY_HWM`` for a replay."""
        wait = publish_cfg["wait_subscriber"]
        require(wait >= 0, "publish.wait_subscriber", wait, ">= 0")
        address = publish_cfg["zmq"]
        if not address or address.lower() == "none":
            return None
        hwm = publish_cfg["hwm"] or (LIVE_HWM if live else REPLAY_HWM)
        return cls(address, publish_cfg["format"], publish_cfg["jpeg_quality"], hwm)

    def _read_subscriptions(self, timeout_ms: int = 0) -> None:
        """Apply pending (un)subscription notices; XPUB reports only a prefix's first subscribe and last unsubscribe."""
        while self._socket.poll(timeout_ms, zmq.POLLIN):
            notice = self._socket.recv()
            if notice[:1] == b"\x01":
                self._topics.add(notice[1:])
            elif notice[:1] == b"\x00":
                self._topics.discard(notice[1:])
            timeout_ms = 0

    def wait_for_subscriber(self, timeout_s: float) -> bool:
        """True as soon as some subscriber is subscribed (at once if one already is), False after ``timeout_s``.

        A replay calls this before its first frame, so a subscriber started before it misses nothing: ZeroMQ has
        already registered the subscription when its notice reaches us here.
        """
        deadline_ms = max(0, int(timeout_s * 1000))
        self._read_subscriptions()
        while not self._topics and deadline_ms > 0:
            step = min(deadline_ms, 50)
            self._read_subscriptions(step)
            deadline_ms -= step
        return bool(self._topics)

    @property
    def subscribed(self) -> bool:
        """Whether at least one subscriber is subscribed now."""
        self._read_subscriptions()
        return bool(self._topics)

    def send(self, image: np.ndarray, meta: dict[str, Any]) -> bool:
        """Publish one frame with its metadata without waiting for subscribers (see ``_queue`` for the one exception).

        True when the frame was queued for every subscriber; False when it was dropped (a subscriber's queue was
        full) or nobody is subscribed. Counted in ``sent``, ``dropped`` and ``unheard`` respectively.
        """
        parts = encode(image, meta, self.fmt, self.jpeg_quality, self.msg)
        listening = self.subscribed
        self._dropping = not self._queue(parts)
        if self._dropping:
            self.dropped += 1
            return False
        if not listening:
            self.unheard += 1
            return False
        self.sent += 1
        return True

    def _queue(self, parts: list[bytes]) -> bool:
        """Queue a message without blocking; at the start of a burst, wait up to ``BURST_GRACE_S`` for room.

        While frames are being dropped (a slow or stuck subscriber) it never waits, so such a subscriber costs the
        pipeline at most one grace period per run of drops.
        """
        deadline = time.monotonic() + (0.0 if self._dropping else BURST_GRACE_S)
        while True:
            try:
                self._socket.send_multipart(parts, flags=zmq.NOBLOCK)
                return True
            except zmq.Again:
                if time.monotonic() >= deadline:
                    return False
                time.sleep(0.0001)  # yield the CPU to ZeroMQ's I/O thread

    def close(self, linger_s: float = 0.5) -> None:
        """Close the socket, giving queued frames ``linger_s`` to leave (the end of a replay) but never hanging."""
        if self._socket.closed:
            return
        self._socket.close(linger=int(linger_s * 1000))
        self._context.term()

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
