"""The threaded pipeline in-process: lossless replay to a real ZeroMQ subscriber, bounded live latency with
counted drops, source failure mid-stream, stop, recording and the display mosaic."""
from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import zmq

from stream_fusion import DEMO_IR, DEMO_VIS
from stream_fusion.align import AlignmentMonitor
from stream_fusion.capture import SourcePair, open_source
from stream_fusion.display import Display, make_mosaic
from stream_fusion.engine.classical import ClassicalEngine
from stream_fusion.pipeline import Pipeline
from stream_fusion.publish import Publisher
from stream_fusion.record import Recorder
from stream_fusion.sinks import Sinks
from stream_fusion.sync import STAGES, LivePairing
from stream_fusion.warp import IrWarp


class SlowEngine(ClassicalEngine):
    """A fuser slower than the source: what a big network on a small box looks like."""

    name = "slow"

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds

    def fuse(self, ir: np.ndarray, vis: np.ndarray, warp: IrWarp | None = None) -> np.ndarray:
        time.sleep(self.seconds)
        return super().fuse(ir, vis, warp)


def write_video(path: Path, frames: int, size: tuple[int, int] = (64, 48)) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 100, size)
    for i in range(frames):
        writer.write(np.full((size[1], size[0], 3), (i * 7) % 256, np.uint8))
    writer.release()


def test_demo_replay_delivers_every_pair_in_order_to_a_subscriber() -> None:
    engine = ClassicalEngine()
    publisher = Publisher("tcp://127.0.0.1:*", hwm=100)
    context = zmq.Context.instance()
    sub = context.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(publisher.endpoint)
    try:
        assert publisher.wait_for_subscriber(10)
        pipeline = Pipeline(SourcePair(open_source(DEMO_IR, "ir"), open_source(DEMO_VIS, "vis"), live=False), engine,
                            AlignmentMonitor(), queue_size=2, sinks=Sinks(publisher))
        summary = pipeline.run()
        received = []
        while sub.poll(5000):
            header, buffer = sub.recv_multipart()
            received.append((json.loads(header), buffer))
            if len(received) == 32:
                break
    finally:
        publisher.close()
        sub.close(linger=0)
    assert summary.frames == 32 and summary.error is None and summary.published == 32
    assert summary.drops == {"capture": 0, "unmatched": 0, "stages": 0, "alignment": 0, "publish": 0}
    assert [h["meta"]["index"] for h, _ in received] == list(range(32))
    header, buffer = received[5]
    assert header["dtype"] == "uint8" and header["shape"] == [270, 360]
    fused = np.frombuffer(buffer, np.uint8).reshape(270, 360)
    ir = cv2.imread(str(sorted(DEMO_IR.iterdir())[5]), cv2.IMREAD_UNCHANGED)
    vis = cv2.imread(str(sorted(DEMO_VIS.iterdir())[5]), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(fused, engine.fuse(ir, vis))  # policy warn: the IR reaches the engine untouched
    meta = header["meta"]
    assert set(meta) == {"index", "t_capture_ir", "t_capture_vis", "latency_ms", "alignment", "source", "engine",
                         "provider"}
    assert set(meta["latency_ms"]) == set(STAGES)
    assert meta["latency_ms"]["total"] >= meta["latency_ms"]["fuse"] > 0
    assert abs(meta["t_capture_ir"] - time.time()) < 60  # wall clock, usable on another machine
    assert set(meta["alignment"]) == {"dx", "dy", "confidence", "status", "measured"}
    assert meta["engine"] == "classical" and meta["source"]["ir"].endswith("ir")
    assert sum(summary.alignment.values()) == 32


def test_live_mode_keeps_latency_bounded_and_counts_drops(tmp_path: Path) -> None:
    """100 frames arrive at 200 fps, fusion takes 30 ms: a lossless queue would make the last frame ~2.5 s old."""
    write_video(tmp_path / "ir.avi", 100)
    write_video(tmp_path / "vis.avi", 100)
    sources = SourcePair(open_source(tmp_path / "ir.avi", "ir"), open_source(tmp_path / "vis.avi", "vis"), live=True,
                         pace_fps=200.0)
    pipeline = Pipeline(sources, SlowEngine(0.03), AlignmentMonitor(), pairing=LivePairing(0.004))
    summary = pipeline.run()
    assert summary.error is None
    dropped = summary.drops["capture"] + summary.drops["unmatched"] + summary.drops["stages"]
    assert 5 <= summary.frames < 60 and dropped > 30
    assert summary.frames + dropped >= 95  # every frame is either fused or counted as dropped
    median_total, p99_total = summary.latency_ms["total"]
    assert p99_total < 600  # ~3 fuse times in flight at most, not a queue that grows with the stream


def test_unpaced_replay_reports_processing_and_waiting_apart(tmp_path: Path) -> None:
    """An unpaced replay reads ahead of a 30 ms fuser: frames wait behind each other in the lossless queues. That
    waiting is the replay's backlog, reported on its own line and said so, not folded into a processing latency."""
    write_video(tmp_path / "ir.avi", 24)
    write_video(tmp_path / "vis.avi", 24)
    sources = SourcePair(open_source(tmp_path / "ir.avi", "ir"), open_source(tmp_path / "vis.avi", "vis"), live=False)
    summary = Pipeline(sources, SlowEngine(0.03), AlignmentMonitor(), queue_size=4).run()
    assert summary.frames == 24 and summary.unpaced_replay
    processing, waiting, total = (summary.latency_ms[key][0] for key in ("processing", "waiting", "total"))
    assert 30 <= processing < 100  # the 30 ms fuse plus the alignment check
    assert waiting > 2 * processing  # several frames ahead of it in the queues, each one fuse long
    assert processing + waiting == pytest.approx(total, rel=0.25)  # medians of per-frame sums: close, not exact
    processing_line, waiting_line = summary.lines()[1:3]
    assert processing_line.startswith("  processing ms (median/p99), the stages' own work on a frame: ")
    assert "(align " in processing_line and ", fuse " in processing_line
    assert waiting_line.startswith("  waiting ms (median/p99), in the pairing and the queues between stages: ")
    assert "(an unpaced replay reads ahead: this is its backlog, not lag)" in waiting_line

    paced = SourcePair(open_source(tmp_path / "ir.avi", "ir"), open_source(tmp_path / "vis.avi", "vis"), live=False,
                       pace_fps=20.0)
    summary = Pipeline(paced, SlowEngine(0.03), AlignmentMonitor(), queue_size=4).run()
    assert not summary.unpaced_replay and "backlog" not in "\n".join(summary.lines())
    assert summary.latency_ms["waiting"][0] < summary.latency_ms["processing"][0]  # keeps up: nothing piles up


def test_source_failure_mid_stream_delivers_what_came_before(tmp_path: Path) -> None:
    writer = cv2.VideoWriter(str(tmp_path / "full.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    rng = np.random.default_rng(0)
    for _ in range(20):
        writer.write(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    writer.release()
    data = (tmp_path / "full.avi").read_bytes()
    (tmp_path / "cut.avi").write_bytes(data[: len(data) // 2])
    write_video(tmp_path / "vis.avi", 20)
    recorder = Recorder(tmp_path / "out.avi", 10)
    sources = SourcePair(open_source(tmp_path / "cut.avi", "ir"), open_source(tmp_path / "vis.avi", "vis"), live=False)
    pipeline = Pipeline(sources, ClassicalEngine(), AlignmentMonitor(), sinks=Sinks(recorder=recorder))
    summary = pipeline.run()
    assert summary.error is not None and "truncated or corrupt" in str(summary.error)
    assert summary.stopped_by == "error"
    delivered = int(str(summary.error).split("ended after ")[1].split()[0])
    assert summary.frames == delivered == summary.recorded >= 3
    check = cv2.VideoCapture(str(tmp_path / "out.avi"))
    assert int(check.get(cv2.CAP_PROP_FRAME_COUNT)) == delivered


def test_stop_ends_every_thread_and_finishes_the_recording(tmp_path: Path) -> None:
    recorder = Recorder(tmp_path / "out.mp4", 6)
    sources = SourcePair(open_source(DEMO_IR, "ir"), open_source(DEMO_VIS, "vis"), live=False, pace_fps=50.0,
                         loop=True)
    pipeline = Pipeline(sources, ClassicalEngine(), AlignmentMonitor(), sinks=Sinks(recorder=recorder))
    threading.Timer(0.6, pipeline.stop, args=("test",)).start()
    summary = pipeline.run()
    assert summary.stopped_by == "test" and summary.error is None and summary.frames >= 3
    names = {"capture-ir", "capture-vis", "pair", "align", "fuse"}
    assert not [t.name for t in threading.enumerate() if t.name in names]  # run() returns with every stage ended
    check = cv2.VideoCapture(str(tmp_path / "out.mp4"))
    assert check.isOpened() and int(check.get(cv2.CAP_PROP_FRAME_COUNT)) == summary.recorded == summary.frames


def test_looped_replay_continues_indices_across_passes() -> None:
    seen: list[int] = []

    class Collect:
        sent = dropped = 0

        def send(self, image: np.ndarray, meta: dict) -> bool:
            seen.append(meta["index"])
            if len(seen) == 70:
                pipeline.stop("enough")
            return True

    sources = SourcePair(open_source(DEMO_IR, "ir"), open_source(DEMO_VIS, "vis"), live=False, loop=True)
    pipeline = Pipeline(sources, ClassicalEngine(), AlignmentMonitor(), sinks=Sinks(Collect()))
    pipeline.run()
    assert seen[:70] == list(range(70))


def test_status_line_reports_fps_latency_and_drops() -> None:
    lines: list[str] = []
    sources = SourcePair(open_source(DEMO_IR, "ir"), open_source(DEMO_VIS, "vis"), live=False, pace_fps=40.0)
    pipeline = Pipeline(sources, ClassicalEngine(), AlignmentMonitor(), status=lines.append, status_interval_s=0.2)
    summary = pipeline.run()
    assert summary.frames == 32 and lines
    assert all("fps | ms: align" in line and " waiting " in line and "drops: capture 0" in line for line in lines)
    text = "\n".join(summary.lines())
    assert text.startswith("summary: 32 frames fused in") and "capture to publish" in text
    assert "publish" not in summary.latency_ms


def test_live_recording_holds_frames_so_it_plays_at_scene_speed(tmp_path: Path) -> None:
    recorder = Recorder(tmp_path / "live.avi", fps=10)
    for i, t in enumerate((5.0, 5.1, 5.42, 5.5)):  # fused frames captured at 0, 100, 420 (slow fusion), 500 ms
        recorder.write(np.full((16, 16), 40 * i, np.uint8), t)
    recorder.close()
    assert recorder.frames == 6  # slots 0, 1, 2-3 (the 100 ms frame held), 4, 5
    capture = cv2.VideoCapture(str(tmp_path / "live.avi"))
    levels = [int(round(capture.read()[1].mean() / 40)) for _ in range(6)]
    assert levels == [0, 1, 1, 1, 2, 3]


def test_mosaic_puts_ir_visible_fused_side_by_side_with_a_hud() -> None:
    ir = np.full((40, 50), 10, np.uint8)
    vis = np.full((40, 50, 3), 20, np.uint8)
    fused = np.full((40, 50), 30, np.uint8)
    mosaic = make_mosaic(ir, vis, fused, "12.0 fps")
    assert mosaic.shape == (40 + 26, 150, 3)
    assert [int(mosaic[35, x, 0]) for x in (45, 95, 145)] == [10, 20, 30]  # below the labels
    assert make_mosaic(ir, vis, fused).shape == (40, 150, 3)


@pytest.mark.parametrize(
    ("display", "reason"),
    [(None, "no display found ($DISPLAY is unset)"), (":987", "cannot connect to the X display ':987'"),
     ("127.0.0.1:987.0", "cannot connect to the X display '127.0.0.1:987.0'")],
)
def test_display_switches_off_with_one_message_without_a_display(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, display: str | None, reason: str
) -> None:
    # Qt would abort the whole process on an unreachable display: the check must catch it before any window.
    if display is None:
        monkeypatch.delenv("DISPLAY", raising=False)
    else:
        monkeypatch.setenv("DISPLAY", display)
    monkeypatch.setattr("sys.platform", "linux")
    with caplog.at_level(logging.WARNING):
        assert Display.open() is None
    assert [r.getMessage() for r in caplog.records] == [
        f"{reason}: display switched off (use --no-display to skip it)"
    ]
