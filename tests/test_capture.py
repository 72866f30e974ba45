"""Sources and capture threads on real files written here: folders, videos, broken videos, bad specs."""
from __future__ import annotations

import functools
import http.server
import logging
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from stream_fusion import DATA_DIR
from stream_fusion.capture import CaptureThread, EndOfStream, Frame, FolderSource, VideoSource, open_source
from stream_fusion.errors import StreamFusionError
from stream_fusion.queues import LosslessQueue
from mjpeg import MjpegStream

SHARED = DATA_DIR


def write_video(path: Path, frames: int, size: tuple[int, int] = (64, 48), fourcc: str = "mp4v") -> list[np.ndarray]:
    """A real video whose frame i is filled with a distinct pattern; returns what was written."""
    rng = np.random.default_rng(frames)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 10, size)
    written = []
    for i in range(frames):
        image = np.full((size[1], size[0], 3), (i * 20) % 256, np.uint8)
        image[: size[1] // 2] = rng.integers(0, 255, (size[1] // 2, size[0], 3), dtype=np.uint8)
        writer.write(image)
        written.append(image)
    writer.release()
    return written


def drain(source, **kwargs) -> tuple[list, CaptureThread]:
    """Run a capture thread to the end and return everything it queued."""
    stop = threading.Event()
    out = LosslessQueue(1000, stop)
    thread = CaptureThread(source, out, stop, **kwargs)
    thread.start()
    thread.join(10)
    assert not thread.is_alive()
    items = []
    while len(out):
        items.append(out.get(timeout=0))
    return items, thread


def test_folder_reads_images_in_name_order(tmp_path: Path) -> None:
    for value, name in [(30, "c.png"), (10, "a.png"), (20, "b.png")]:
        cv2.imwrite(str(tmp_path / name), np.full((4, 6), value, np.uint8))
    (tmp_path / "notes.txt").write_text("not an image")
    source = open_source(tmp_path, "ir")
    assert isinstance(source, FolderSource) and not source.live
    assert (source.length, source.size, source.fps) == (3, (6, 4), None)
    values = [int(source.read()[0, 0]) for _ in range(3)]
    assert values == [10, 20, 30]
    assert source.read() is None
    source.restart()
    assert int(source.read()[0, 0]) == 10


def test_demo_sequence_from_shared_data_is_32_gray_frames() -> None:
    source = open_source(SHARED / "sequences" / "nato_camp" / "ir", "ir")
    assert source.length == 32 and source.size == (360, 270)
    assert source.read().shape == (270, 360)


def test_video_file_is_replayed_in_full(tmp_path: Path) -> None:
    written = write_video(tmp_path / "clip.mp4", 12)
    source = open_source(str(tmp_path / "clip.mp4"), "vis")
    assert isinstance(source, VideoSource) and not source.live
    assert (source.length, source.size, source.fps) == (12, (64, 48), 10.0)
    items, thread = drain(source)
    frames = [item for item in items if isinstance(item, Frame)]
    assert [f.index for f in frames] == list(range(12))
    assert isinstance(items[-1], EndOfStream) and not items[-1].failed and thread.error is None
    # Lossy codec: the flat lower half of frame i (value 20 i) comes back nearest to 20 i, so the order is right.
    levels = np.array([float(w[30:, :, 0].mean()) for w in written])
    assert [int(np.abs(levels - f.image[30:, :, 0].mean()).argmin()) for f in frames] == list(range(12))
    assert all(f.role == "vis" for f in frames)
    assert all(a.t_mono <= b.t_mono for a, b in zip(frames, frames[1:]))


def test_loop_restarts_and_limit_cuts_each_pass(tmp_path: Path) -> None:
    for i in range(5):
        cv2.imwrite(str(tmp_path / f"{i}.png"), np.full((16, 16), i, np.uint8))
    stop = threading.Event()
    out = LosslessQueue(100, stop)
    thread = CaptureThread(open_source(tmp_path, "ir"), out, stop, limit=3, loop=True)
    thread.start()
    values = [int(out.get(timeout=5).image[0, 0]) for _ in range(8)]
    stop.set()
    thread.join(5)
    assert values == [0, 1, 2, 0, 1, 2, 0, 1]
    assert not thread.is_alive()


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("/nonexistent/clip.mp4", "ir source not found: /nonexistent/clip.mp4"),
        ("99", "cannot open ir camera 99"),
        ("rtsp://127.0.0.1:9/none", "cannot open ir stream rtsp://127.0.0.1:9/none"),
        ("", "empty ir source"),
    ],
)
def test_bad_specs_fail_at_open_with_one_line(spec: str, message: str) -> None:
    with pytest.raises(StreamFusionError, match="^" + message.replace(".", r"\.")) as caught:
        open_source(spec, "ir")
    assert "\n" not in str(caught.value)


def test_corrupt_and_truncated_mp4_fail_at_open(tmp_path: Path) -> None:
    (tmp_path / "corrupt.mp4").write_bytes(b"not a video at all " * 200)
    write_video(tmp_path / "full.mp4", 20)
    data = (tmp_path / "full.mp4").read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])  # OpenCV writes the mp4 index last: it is cut off
    for name in ("corrupt.mp4", "cut.mp4"):
        with pytest.raises(StreamFusionError, match=f"cannot open vis video .*{name}: not a video OpenCV can decode"):
            open_source(tmp_path / name, "vis")


def test_truncated_avi_delivers_its_frames_then_fails(tmp_path: Path) -> None:
    write_video(tmp_path / "full.avi", 20, fourcc="MJPG")
    data = (tmp_path / "full.avi").read_bytes()
    (tmp_path / "cut.avi").write_bytes(data[: len(data) // 2])
    source = open_source(tmp_path / "cut.avi", "ir")
    assert source.length == 20  # the header still promises 20
    items, thread = drain(source)
    frames = [item for item in items if isinstance(item, Frame)]
    assert 3 <= len(frames) < 19
    assert [f.index for f in frames] == list(range(len(frames)))
    assert isinstance(items[-1], EndOfStream) and items[-1].failed
    assert f"ended after {len(frames)} of its 20 frames: the file is truncated or corrupt" in str(thread.error)


def test_folder_problems_are_named(tmp_path: Path) -> None:
    with pytest.raises(StreamFusionError, match="holds no images"):
        open_source(tmp_path, "vis")
    cv2.imwrite(str(tmp_path / "0.png"), np.zeros((16, 16), np.uint8))
    (tmp_path / "1.png").write_bytes(b"\x89PNG broken")
    source = open_source(tmp_path, "vis")
    items, thread = drain(source)
    assert len([i for i in items if isinstance(i, Frame)]) == 1
    assert "cannot read vis image" in str(thread.error) and "1.png" in str(thread.error)


def test_pacing_spaces_frames_by_the_frame_period(tmp_path: Path) -> None:
    for i in range(4):
        cv2.imwrite(str(tmp_path / f"{i}.png"), np.zeros((16, 16), np.uint8))
    items, _ = drain(open_source(tmp_path, "ir"), pace_fps=20.0)
    times = [f.t_mono for f in items if isinstance(f, Frame)]
    # Frame i is released no earlier than i / fps after the start (a lower bound; no upper bound is asserted).
    assert all(b - a >= 0.045 for a, b in zip(times, times[1:]))


def test_url_source_is_live_and_a_finite_http_file_ends_cleanly(tmp_path: Path) -> None:
    write_video(tmp_path / "clip.avi", 9, fourcc="MJPG")
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        source = open_source(f"http://127.0.0.1:{server.server_address[1]}/clip.avi", "vis")
        assert isinstance(source, VideoSource) and source.live and source.length == 9
        items, thread = drain(source)
    finally:
        server.shutdown()
        server.server_close()
    assert [item.index for item in items if isinstance(item, Frame)] == list(range(9))
    assert thread.error is None and isinstance(items[-1], EndOfStream)


class CountingQueue(LosslessQueue):
    """Takes ``wanted`` frames, then says stop (what the pipeline does when the user quits)."""

    def __init__(self, wanted: int, stop: threading.Event) -> None:
        super().__init__(1000, stop)
        self.wanted = wanted

    def put(self, item: object, droppable: bool = True) -> bool:
        super().put(item, droppable)
        return not isinstance(item, Frame) or len(self) < self.wanted


def test_a_live_stream_that_drops_is_reopened_and_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    stream = MjpegStream(per_connection=4)
    try:
        source = open_source(stream.url, "ir")
        assert isinstance(source, VideoSource) and source.live and source.length is None
        stop = threading.Event()
        out = CountingQueue(10, stop)
        thread = CaptureThread(source, out, stop, reconnect_s=5.0)
        with caplog.at_level(logging.WARNING):
            thread.start()
            thread.join(20)
    finally:
        stream.close()
    assert not thread.is_alive() and thread.error is None
    frames = [out.get(timeout=0) for _ in range(len(out))]
    assert [f.index for f in frames if isinstance(f, Frame)] == list(range(10))
    # Two drops, two reopenings: the frames of every connection arrive, in order, none twice.
    assert thread.reconnects == 2
    assert [int(f.image[0, 0, 0]) for f in frames if isinstance(f, Frame)] == [10 * k for k in range(10)]
    messages = [r.getMessage() for r in caplog.records]
    assert f"ir stream {stream.url} stopped delivering frames: reconnecting (for up to 5 s)" in messages
    assert sum(m.startswith(f"ir {stream.url} reopened after") for m in messages) == 2


@pytest.mark.parametrize("reconnect_s, message", [
    (0.0, "ir stream {url} stopped delivering frames"),
    (0.8, "ir stream {url} stopped delivering frames and did not come back within 0.8 s "
          "(cannot open ir stream {url}: unreachable or not a video)"),
])
def test_a_live_stream_that_stays_gone_ends_with_one_error(reconnect_s: float, message: str) -> None:
    """The camera goes away for good: with reconnect_s 0 the stream fails at once, otherwise after trying for
    reconnect_s; either way every frame it delivered before is handed on, and the error is one line."""
    stream = MjpegStream(per_connection=3)
    try:
        source = open_source(stream.url, "ir")
        stream.up = False
        items, thread = drain(source, reconnect_s=reconnect_s)
    finally:
        stream.close()
    assert [item.index for item in items if isinstance(item, Frame)] == [0, 1, 2]
    assert isinstance(items[-1], EndOfStream) and items[-1].failed
    assert str(thread.error) == message.format(url=stream.url)
