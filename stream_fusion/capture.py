"""Frame sources behind one interface, each read in its own thread.

A source spec is what the user types after ``--ir`` / ``--vis``: a camera index (``0``), a URL OpenCV can open
(``rtsp://...``, ``http://...``), a video file, or a folder of images (read in name order). Cameras and URLs are
*live* (frames arrive whether or not we keep up), files and folders *replay* (we pull frames at our own pace).

Folders of still pairs (the batch command, the evaluation, the training data) pair up by one rule, by file name:
:func:`match_pairs`.

Every failure a user can cause (missing path, camera that does not open, undecodable or truncated file, unreadable
image) is a ``StreamFusionError`` naming the source, raised at open time where possible so nothing starts on bad
input, else at the frame where it happens, after every earlier frame has been handed on. A live source that stops
delivering (a camera unplugged, an RTSP server restarting, Wi-Fi dropping) is reopened for up to ``reconnect_s``
(``source.reconnect_s``) before that becomes the stream's error: on a rig a brief outage should cost frames, not the
run.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable
from typing import Any, Protocol

import cv2
import numpy as np

from stream_fusion import DEMO_FPS, DEMO_IR, DEMO_VIS
from stream_fusion.config import require
from stream_fusion.errors import StreamFusionError
from stream_fusion.redact import redact
from stream_fusion.timing import STALL_REOPEN_S, ArrivalRate

# OpenCV and FFmpeg print their own multi-line complaints for every failed open (camera probing, "moov atom not
# found"); we report each failure once, in one line, so theirs are silenced.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
if hasattr(cv2.utils, "logging"):  # OpenCV 4.12+ / 5
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
else:  # OpenCV 4.11, what pip resolves beside numpy<2 (the [serve] install): no cv2.utils.logging, same level 0
    cv2.setLogLevel(0)

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".pgm", ".ppm", ".webp"}
# Smallest frame side a source may deliver: below it there is no camera image to fuse, and the alignment check's
# grids and the network's padding have nothing to work on (README, "Inputs").
MIN_FRAME_SIDE = 16


@dataclass(frozen=True)
class Frame:
    """One grabbed image. ``t_mono`` (monotonic) pairs and times frames here; ``t_wall`` tells other machines."""

    role: str  # "ir" | "vis"
    index: int  # position in the source, counting on across --loop passes
    image: np.ndarray
    t_mono: float
    t_wall: float


@dataclass(frozen=True)
class EndOfStream:
    """Marker a capture thread queues after its last frame (never dropped by the live queue)."""

    role: str
    failed: bool = False  # the source broke: its error is reported, so no "different lengths" warning too


class SourceLost(StreamFusionError):
    """A live source (camera, stream URL) stopped delivering frames: worth reopening, unlike a file's error."""


class Source(Protocol):
    """What every source offers the capture thread."""

    role: str
    description: str  # the spec as the user gave it, credentials masked (redact): for messages and frame metadata
    live: bool
    fps: float | None  # None when the source does not say (image folders, some cameras)
    length: int | None  # frames per pass; None for cameras, endless streams and files that do not say
    size: tuple[int, int] | None  # (width, height) when known before the first frame

    def read(self) -> np.ndarray | None:
        """The next frame, or None at the end of a replay source. Raises StreamFusionError on failure."""
        ...

    def restart(self) -> None:
        """Go back to the first frame (for --loop), or reopen a lost live source; StreamFusionError if it cannot."""
        ...

    def close(self) -> None: ...


class VideoSource:
    """A camera index, a URL or a video file, read through ``cv2.VideoCapture``."""

    def __init__(self, spec: str, role: str) -> None:
        self.role = role
        self.description = redact(spec)  # published, printed, logged: never the password
        self.kind = "camera" if spec.isdigit() else "stream" if "://" in spec else "video"
        self.live = self.kind != "video"
        self._target: int | str = int(spec) if self.kind == "camera" else spec
        self.read_timeout_s = STALL_REOPEN_S  # streams: a read that waits longer fails, and the stream is reopened
        self._capture = self._open()
        self.bits = 16 if self.role == "ir" and delivers_16_bit(self._capture) else 8
        fps = self._capture.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if 0 < fps < 1000 else None
        count = int(self._capture.get(cv2.CAP_PROP_FRAME_COUNT))
        # A URL may be a finite file (HTTP): then it has a frame count and its end is an end, not a failure.
        self.length = count if self.kind != "camera" and count > 0 else None
        width, height = (int(self._capture.get(prop)) for prop in (cv2.CAP_PROP_FRAME_WIDTH, cv2.CAP_PROP_FRAME_HEIGHT))
        self.size = (width, height) if width > 0 and height > 0 else None
        self._read = 0

    def _open(self) -> cv2.VideoCapture:
        if self.kind == "stream":  # FFmpeg's own read timeout is 30 s: a frozen stream must fail fast to be reopened
            capture = cv2.VideoCapture(self._target, cv2.CAP_FFMPEG,
                                       [cv2.CAP_PROP_READ_TIMEOUT_MSEC, round(self.read_timeout_s * 1000)])
        else:
            capture = cv2.VideoCapture(self._target)
        if capture.isOpened():
            if self.role == "ir" and delivers_16_bit(capture):
                capture.set(cv2.CAP_PROP_CONVERT_RGB, 0)  # the counts as they are, not squeezed into 8-bit BGR
            return capture
        capture.release()
        if self.kind == "camera":
            raise StreamFusionError(f"cannot open {self.role} camera {self.description}: no such device, or it is busy")
        if self.kind == "stream":
            raise StreamFusionError(f"cannot open {self.role} stream {self.description}: unreachable or not a video")
        raise StreamFusionError(
            f"cannot open {self.role} video {self.description}: not a video OpenCV can decode (corrupt or truncated?)"
        )

    def read(self) -> np.ndarray | None:
        ok, image = self._capture.read()
        if ok and image is not None:
            self._read += 1
            return image
        if self.length is None:
            if self.live:  # a camera or an endless stream has no end: it broke
                raise SourceLost(f"{self.role} {self.kind} {self.description} stopped delivering frames")
            return None
        # Containers round their frame count; a shortfall of more than one frame means the file was cut or damaged.
        if self._read < self.length - 1:
            raise StreamFusionError(
                f"{self.role} {self.kind} {self.description} ended after {self._read} of its {self.length} frames: "
                "the file is truncated or corrupt"
            )
        return None

    def restart(self) -> None:
        self._capture.release()
        self._capture = self._open()
        self._read = 0

    def close(self) -> None:
        self._capture.release()


def delivers_16_bit(capture: cv2.VideoCapture) -> bool:
    """Whether a capture's frames are 16-bit gray: a camera in Y16 (V4L2 / UVC, what radiometric thermal cores
    send) or a video whose decoder gives 16-bit gray (FFV1 or raw GRAY16 files, FFmpeg's tag ``Y1`` + bit depth)."""
    fourcc, pixel_format = ((int(capture.get(prop)) & 0xFFFFFFFF).to_bytes(4, "little")
                            for prop in (cv2.CAP_PROP_FOURCC, cv2.CAP_PROP_CODEC_PIXEL_FORMAT))
    little_endian = pixel_format[:2] == b"Y1" and pixel_format[3] > 8
    big_endian = pixel_format[2:] == b"1Y" and pixel_format[0] > 8
    return fourcc == b"Y16 " or little_endian or big_endian


class FolderSource:
    """Images of a folder in name order: registered datasets and exported sequences come this way."""

    live = False
    fps = None

    def __init__(self, folder: Path, role: str) -> None:
        self.role = role
        self.description = str(folder)
        self._files = image_files(folder)
        if not self._files:
            raise StreamFusionError(f"{role} folder {folder} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        self.length = len(self._files)
        self._next = 0
        first = cv2.imread(str(self._files[0]), cv2.IMREAD_UNCHANGED)
        self.size = (first.shape[1], first.shape[0]) if first is not None else None
        self.bits = 16 if first is not None and first.dtype == np.uint16 else 8

    def read(self) -> np.ndarray | None:
        if self._next >= len(self._files):
            return None
        path = self._files[self._next]
        image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if image is None:
            raise StreamFusionError(f"cannot read {self.role} image {path}: missing, unreadable or not an image")
        if image.dtype != np.uint8 and not (image.dtype == np.uint16 and self.role == "ir"):
            depth = "8-bit images only" if self.role == "vis" else "8- or 16-bit images only"
            raise StreamFusionError(f"{self.role} image {path} is {image.dtype}; {depth}")
        if image.ndim == 3 and image.shape[2] == 4:
            image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
        self._next += 1
        return image

    def restart(self) -> None:
        self._next = 0

    def close(self) -> None:
        pass


def check_frame_size(size: tuple[int, int] | None, role: str, description: str) -> None:
    """Refuse frames (``size``: w, h; None: not known yet) smaller than ``MIN_FRAME_SIDE`` on a side, in one line."""
    if size is not None and min(size) < MIN_FRAME_SIDE:
        raise StreamFusionError(f"{role} source {description} delivers {size[0]}x{size[1]} frames: at least "
                                f"{MIN_FRAME_SIDE}x{MIN_FRAME_SIDE} px are needed")


def image_files(folder: Path) -> list[Path]:
    """The image files of ``folder`` (by suffix, any case), in name order."""
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def list_images(folder: Path, role: str) -> dict[str, Path]:
    """Image files of ``folder`` by stem; ``role`` ("IR", "visible", "fused") names the folder in errors."""
    if not folder.is_dir():
        raise StreamFusionError(f"{role} folder {folder} does not exist or is not a folder")
    images: dict[str, Path] = {}
    for path in image_files(folder):
        if path.stem in images:
            raise StreamFusionError(f"{role} folder {folder} holds two images named {path.stem!r}: "
                                    f"{images[path.stem].name} and {path.name}")
        images[path.stem] = path
    if not images:
        raise StreamFusionError(f"{role} folder {folder} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return images


def _unmatched(names: set[str]) -> str:
    shown = sorted(names)[:3]
    return ", ".join(shown) + (f" and {len(names) - len(shown)} more" if len(names) > len(shown) else "")


def match_pairs(ir_dir: Path, vis_dir: Path) -> list[tuple[str, Path, Path]]:
    """(stem, IR path, visible path) for every name in both folders, sorted: the one rule by which folders of pairs
    pair up (the batch command, the evaluation, the training data). ``a.png`` pairs with ``a.png`` or ``a.jpg``. Any
    unpaired name is an error, since silently skipping it would drop data from a batch, an evaluation or training."""
    ir, vis = list_images(ir_dir, "IR"), list_images(vis_dir, "visible")
    if ir.keys() != vis.keys():
        missing_vis, missing_ir = ir.keys() - vis.keys(), vis.keys() - ir.keys()
        parts = []
        if missing_vis:
            parts.append(f"no visible image for IR {_unmatched(missing_vis)}")
        if missing_ir:
            parts.append(f"no IR image for visible {_unmatched(missing_ir)}")
        raise StreamFusionError(f"IR and visible file names differ ({ir_dir}, {vis_dir}): {'; '.join(parts)}")
    return [(name, ir[name], vis[name]) for name in sorted(ir)]


def open_source(spec: str | int | Path, role: str) -> Source:
    """Open what the user named: camera index, URL, image folder or video file."""
    text = str(spec).strip()
    if not text:
        raise StreamFusionError(f"empty {role} source")
    if text.isdigit() or "://" in text:
        return VideoSource(text, role)
    path = Path(text).expanduser()
    if path.is_dir():
        return FolderSource(path, role)
    if path.is_file():
        return VideoSource(str(path), role)
    raise StreamFusionError(f"{role} source not found: {redact(text)} (expected a camera index, URL, video file or image folder)")


@dataclass
class SourcePair:
    """The two opened sources of one stream and how they are read: live (latest frame wins) or replay (every frame),
    and a replay's pace and looping."""

    ir: Source
    vis: Source
    live: bool
    pace_fps: float | None = None  # replay: the rate it is paced at; None: as fast as the pipeline goes
    loop: bool = False  # replay: start again at the end
    reconnect_s: float = 0.0  # live: how long a lost camera or stream is reopened for (0: not at all)
    fps: float | None = None  # the stream's frame rate where known: the configured one, else a source's
    demo: bool = False  # the bundled demo clip (neither source given)

    @classmethod
    def from_config(cls, source_cfg: dict[str, Any]) -> SourcePair:
        """Open the ``source:`` section's two sources (the demo clip when neither is given). ``mode`` auto is live as
        soon as one source is a camera or URL (it cannot be paused to wait); ``realtime`` null paces the demo clip
        only, so a newcomer sees it play while other replays run as fast as the pipeline goes."""
        mode, realtime, fps, reconnect_s = (source_cfg[key] for key in ("mode", "realtime", "fps", "reconnect_s"))
        require(mode in ("auto", "live", "replay"), "source.mode", mode, "auto, live or replay")
        require(realtime is None or isinstance(realtime, bool), "source.realtime", realtime,
                "true, false or null (null: paced for the demo clip only)")
        require(fps is None or (isinstance(fps, (int, float)) and fps > 0), "source.fps", fps, "> 0")
        require(isinstance(reconnect_s, (int, float)) and reconnect_s >= 0, "source.reconnect_s", reconnect_s, ">= 0")
        ir_spec, vis_spec = source_cfg["ir"], source_cfg["vis"]
        demo = ir_spec is None and vis_spec is None
        if demo:
            ir_spec, vis_spec = DEMO_IR, DEMO_VIS
        elif ir_spec is None or vis_spec is None:
            raise StreamFusionError("give both --ir and --vis (or neither, for the bundled demo clip)")
        ir = open_source(ir_spec, "ir")
        try:
            vis = open_source(vis_spec, "vis")
        except StreamFusionError:
            ir.close()
            raise
        try:
            for source in (ir, vis):
                check_frame_size(source.size, source.role, source.description)
        except StreamFusionError:
            ir.close()
            vis.close()
            raise
        pair = cls(ir, vis, live=ir.live or vis.live if mode == "auto" else mode == "live", loop=source_cfg["loop"],
                   reconnect_s=reconnect_s, fps=fps or (DEMO_FPS if demo else None) or ir.fps or vis.fps, demo=demo)
        if demo if realtime is None else realtime:
            if not pair.live and pair.fps is None:
                pair.close()
                raise StreamFusionError("--realtime needs --fps N here: image folders carry no frame rate")
            pair.pace_fps = pair.fps
        return pair

    def close(self) -> None:
        self.ir.close()
        self.vis.close()


class Queue(Protocol):
    def put(self, item: object, droppable: bool = True) -> bool: ...


class CaptureThread(threading.Thread):
    """Reads one source into a queue until the end, an error, or ``stop``.

    Replay pacing (``pace_fps``) schedules frame i at ``start + i / fps`` on a clock shared by both sources, so IR
    and visible stay in step. ``limit`` caps each pass (both sources of a looped replay stop at the shorter).
    A live source that is lost is reopened until ``reconnect_s`` have passed without a frame (0: not at all).
    A failure is kept in ``error`` and the stream ends normally, so frames already read still reach the sinks.
    ``convert`` maps each image first (the IR's 16-bit gain). A live source's arrivals are measured (``rate``):
    :meth:`check_stall`, called by whoever watches the run, declares and counts a stall after two frame periods
    without a frame, while the read that waits is still blocked; the read gives up after ``STALL_REOPEN_S`` and the
    source is reopened, the reconnect window counting from its last frame.
    """

    def __init__(
        self,
        source: Source,
        out: Queue,
        stop: threading.Event,
        *,
        pace_fps: float | None = None,
        start: float | None = None,
        limit: int | None = None,
        loop: bool = False,
        reconnect_s: float = 0.0,
        convert: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> None:
        super().__init__(name=f"capture-{source.role}", daemon=True)  # daemon: a camera read cannot be interrupted
        self.source = source
        self.out = out
        self.stop_event = stop
        self.pace_fps = pace_fps
        self.start_time = start
        self.limit = limit
        self.loop = loop
        self.reconnect_s = reconnect_s
        self.convert = convert
        self.reconnects = 0
        self.stalls = 0
        self.rate = ArrivalRate(source.fps)
        self._stalled = False
        self._reconnecting = False  # a lost source being reopened is counted as a reconnect, not as a stall
        self.frames = 0
        self.error: StreamFusionError | None = None
        self._lost_since: float | None = None  # monotonic time of the last frame before a loss, until a new frame

    def run(self) -> None:
        try:
            self._read_all()
        except StreamFusionError as error:
            self.error = error
        except Exception as error:  # noqa: BLE001 - a decoder crash must end this stream, not hang the pipeline
            self.error = StreamFusionError(f"{self.source.role} capture failed: {type(error).__name__}: {error}")
        self.out.put(EndOfStream(self.source.role, failed=self.error is not None), droppable=False)

    def _read_all(self) -> None:
        start = self.start_time if self.start_time is not None else time.monotonic()
        in_pass = 0
        while not self.stop_event.is_set():
            if self.pace_fps:
                delay = start + self.frames / self.pace_fps - time.monotonic()
                if delay > 0 and self.stop_event.wait(delay):
                    return
            try:
                image = None if self.limit is not None and in_pass >= self.limit else self.source.read()
            except SourceLost as lost:
                if not self._reconnect(lost):
                    return
                continue
            self._lost_since = None
            if image is None:
                if not self.loop or in_pass == 0:
                    return
                self.source.restart()
                in_pass = 0
                continue
            check_frame_size((image.shape[1], image.shape[0]), self.source.role, self.source.description)
            if self.convert is not None:
                image = self.convert(image)
            frame = Frame(self.source.role, self.frames, image, time.monotonic(), time.time())
            self.rate.add(frame.index, frame.t_mono)
            self._stalled = self._reconnecting = False
            if not self.out.put(frame):
                return
            self.frames += 1
            in_pass += 1

    def check_stall(self, now: float) -> float | None:
        """Seconds since a live source's last frame once that is a stall (``rate.stall_after()``), else None. The
        first call that sees a stall counts it and says so once."""
        last = self.rate.last_arrival
        if not self.source.live or last is None or not self.is_alive():
            return None
        silent = now - last
        if silent < self.rate.stall_after():
            return None
        if not self._stalled and not self._reconnecting:
            self._stalled = True
            self.stalls += 1
            log.warning("%s %s stalled: no frame for %.2f s (frame period %.0f ms)", self.source.role,
                        self.source.description, silent, self.rate.period * 1000)
        return silent

    def _reconnect(self, lost: SourceLost) -> bool:
        """Reopen a lost live source, retrying with a growing pause (0.25 s up to 2 s) until ``reconnect_s`` have
        passed since its last frame; True once it is open again, False when the pipeline stops meanwhile. A source
        that reopens but delivers nothing counts against the same deadline, so a dead camera cannot loop forever."""
        self._reconnecting = True
        first = self._lost_since is None
        if first:  # the window counts from the last frame, not from when the read gave up waiting for the next
            self._lost_since = self.rate.last_arrival or time.monotonic()
        if hasattr(self.source, "read_timeout_s"):  # a camera slower than the default timeout must not time out
            self.source.read_timeout_s = max(STALL_REOPEN_S, 2.0 * self.rate.period)
        deadline = self._lost_since + self.reconnect_s
        if time.monotonic() >= deadline and not (first and self.reconnect_s > 0):  # a window asked: one try at least
            raise StreamFusionError(
                f"{lost} and did not come back within {self.reconnect_s:g} s" if self.reconnect_s > 0 else str(lost)
            ) from None
        if first:
            log.warning("%s: reconnecting (for up to %g s)", lost, self.reconnect_s)
        pause = 0.25
        while True:
            if self.stop_event.wait(min(pause, max(0.0, deadline - time.monotonic()))):
                return False
            try:
                self.source.restart()
            except StreamFusionError as error:
                if time.monotonic() >= deadline:
                    raise StreamFusionError(
                        f"{lost} and did not come back within {self.reconnect_s:g} s ({error})"
                    ) from None
                pause = min(2 * pause, 2.0)
                continue
            self.reconnects += 1
            self.rate.reopened()
            log.warning("%s %s reopened after %.1f s", self.source.role, self.source.description,
                        time.monotonic() - self._lost_since)
            return True
