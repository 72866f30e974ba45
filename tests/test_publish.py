"""Publisher over real ZeroMQ sockets on 127.0.0.1: wire format, imagezmq compatibility, never blocking, errors."""
from __future__ import annotations

import json
import socket as net
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import imagezmq
import numpy as np
import pytest
import zmq

import stream_fusion.publish as publish
from stream_fusion import DATA_DIR
from stream_fusion.align import AlignmentMonitor
from stream_fusion.capture import SourcePair, open_source
from stream_fusion.engine.classical import ClassicalEngine
from stream_fusion.errors import StreamFusionError
from stream_fusion.pipeline import Pipeline
from stream_fusion.publish import Publisher, encode
from stream_fusion.sinks import Sinks
from stream_fusion.subscribe import receive

DATA = DATA_DIR
FRAME = DATA / "sequences" / "nato_camp" / "ir" / "1800.png"
ANY_PORT = "tcp://127.0.0.1:*"


@pytest.fixture
def context() -> Iterator[zmq.Context]:
    ctx = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


def subscriber(context: zmq.Context, endpoint: str, rcvhwm: int = 1000) -> zmq.Socket:
    socket = context.socket(zmq.SUB)
    socket.setsockopt(zmq.RCVHWM, rcvhwm)
    socket.setsockopt(zmq.SUBSCRIBE, b"")
    socket.connect(endpoint)
    return socket


def real_frame(colour: bool) -> np.ndarray:
    gray = cv2.imread(str(FRAME), cv2.IMREAD_GRAYSCALE)
    assert gray is not None and gray.shape == (270, 360)
    return cv2.applyColorMap(gray, cv2.COLORMAP_INFERNO) if colour else gray


def receive_within(socket: zmq.Socket, timeout_s: float = 10) -> tuple[np.ndarray, dict]:
    """Receive one frame, failing (not hanging) if none comes: a lost frame must fail the test."""
    assert socket.poll(int(timeout_s * 1000)), "no frame arrived"
    return receive(socket)


def send_in_thread(publisher: Publisher, frames: int, image: np.ndarray) -> list[bool]:
    """Send ``frames`` frames from a thread; a send that blocked would leave the thread alive after the deadline."""
    results: list[bool] = []
    thread = threading.Thread(target=lambda: results.extend(
        publisher.send(image, {"index": i}) for i in range(frames)), daemon=True)
    thread.start()
    thread.join(timeout=60)  # a hang guard, not a speed check: the sends take milliseconds
    assert not thread.is_alive(), "Publisher.send blocked"
    return results


@pytest.mark.parametrize("colour", [False, True])
def test_raw_round_trip_keeps_pixels_and_metadata(context: zmq.Context, colour: bool) -> None:
    image = real_frame(colour)
    meta = {"index": 7, "t_capture_ir": 1700000000.25, "t_capture_vis": 1700000000.5,
            "latency_ms": {"fuse": np.float32(2.5)}, "alignment": {"dx": np.float64(-1.25), "status": "ok"},
            "engine": "classical"}
    with Publisher(ANY_PORT) as publisher:
        socket = subscriber(context, publisher.endpoint)
        assert publisher.wait_for_subscriber(10)
        assert publisher.send(image, meta)
        received, header = receive_within(socket)
    assert received.dtype == np.uint8 and received.shape == image.shape
    np.testing.assert_array_equal(received, image)
    assert header["dtype"] == "uint8" and header["shape"] == list(image.shape)
    assert header["msg"] == publisher.msg and header["msg"].startswith("stream_fusion@")
    assert header["meta"] == {"index": 7, "t_capture_ir": 1700000000.25, "t_capture_vis": 1700000000.5,
                              "latency_ms": {"fuse": 2.5}, "alignment": {"dx": -1.25, "status": "ok"},
                              "engine": "classical"}
    assert (publisher.sent, publisher.dropped, publisher.unheard) == (1, 0, 0)


@pytest.mark.parametrize("colour", [False, True])
def test_jpg_round_trip_is_a_faithful_jpeg(context: zmq.Context, colour: bool) -> None:
    image = real_frame(colour)
    with Publisher(ANY_PORT, fmt="jpg", jpeg_quality=95) as publisher:
        socket = subscriber(context, publisher.endpoint)
        assert publisher.wait_for_subscriber(10)
        assert publisher.send(image, {"index": 3})
        assert socket.poll(10000), "no frame arrived"
        parts = socket.recv_multipart()
    header = json.loads(parts[0])
    assert header == {"msg": publisher.msg, "jpg": True, "meta": {"index": 3}}
    assert parts[1][:2] == b"\xff\xd8"  # a JPEG file, as imagezmq.send_jpg carries
    decoded = cv2.imdecode(np.frombuffer(parts[1], np.uint8), cv2.IMREAD_UNCHANGED)
    assert decoded.shape == image.shape
    error = np.abs(decoded.astype(np.int16) - image.astype(np.int16))
    assert error.mean() < 3.0, error.mean()  # quality 95 of a real frame: close, not exact
    assert len(parts[1]) < image.nbytes / 2  # and actually compressed


def test_unmodified_imagezmq_hub_receives_raw_and_jpg() -> None:
    image = real_frame(colour=True)
    with Publisher(ANY_PORT) as publisher:
        with imagezmq.ImageHub(open_port=publisher.endpoint, REQ_REP=False) as hub:
            assert publisher.wait_for_subscriber(10)
            assert publisher.send(image, {"index": 0})
            assert hub.zmq_socket.poll(10000), "no frame arrived"
            msg, received = hub.recv_image()
    assert msg == publisher.msg
    np.testing.assert_array_equal(received, image)

    with Publisher(ANY_PORT, fmt="jpg") as publisher:
        with imagezmq.ImageHub(open_port=publisher.endpoint, REQ_REP=False) as hub:
            assert publisher.wait_for_subscriber(10)
            assert publisher.send(image, {"index": 1})
            assert hub.zmq_socket.poll(10000), "no frame arrived"
            msg, jpg_buffer = hub.recv_jpg()
    assert msg == publisher.msg
    decoded = cv2.imdecode(np.frombuffer(jpg_buffer, np.uint8), cv2.IMREAD_COLOR)
    assert decoded.shape == image.shape and np.abs(decoded.astype(int) - image).mean() < 5.0


def test_no_subscriber_never_blocks_and_counts_unheard_frames() -> None:
    image = np.zeros((512, 640, 3), np.uint8)
    with Publisher(ANY_PORT) as publisher:
        results = send_in_thread(publisher, 300, image)
        assert results == [False] * 300
        assert (publisher.sent, publisher.dropped, publisher.unheard) == (0, 0, 300)


def test_subscriber_that_never_reads_never_blocks_send_and_drops_are_counted(context: zmq.Context) -> None:
    image = np.zeros((512, 640, 3), np.uint8)
    with Publisher(ANY_PORT, hwm=2) as publisher:
        stuck = subscriber(context, publisher.endpoint, rcvhwm=1)
        stuck.setsockopt(zmq.RCVBUF, 1 << 16)
        assert publisher.wait_for_subscriber(10)
        results = send_in_thread(publisher, 500, image)
        assert publisher.sent + publisher.dropped == 500 and publisher.unheard == 0
        assert results.count(True) == publisher.sent and results.count(False) == publisher.dropped
        # Queues hold 2 (send) + 1 (receive) frames + socket buffers: most of 500 1-MB frames cannot be queued.
        assert publisher.sent >= 1 and publisher.dropped > 400
        assert stuck.poll(0)  # the stuck subscriber still holds its first frame: it was delivered, not lost in a hang


def test_a_burst_reaches_a_reading_subscriber_whole_and_in_order(
        context: zmq.Context, monkeypatch: pytest.MonkeyPatch) -> None:
    """Frames handed over back to back, more than the high-water mark at once, wait for room instead of dropping.

    The grace is raised here so that the test checks the mechanism, not whether this loaded 2-core machine schedules
    ZeroMQ's I/O thread within the default 5 ms (without the retry, the third frame of a burst is lost).
    """
    monkeypatch.setattr(publish, "BURST_GRACE_S", 2.0)
    image = real_frame(colour=True)
    with Publisher(ANY_PORT, hwm=2) as publisher:
        socket = subscriber(context, publisher.endpoint)
        assert publisher.wait_for_subscriber(10)
        results = [publisher.send(image, {"index": index}) for index in range(32)]
        assert results == [True] * 32 and publisher.dropped == 0
        indices = [receive_within(socket)[1]["meta"]["index"] for _ in range(32)]
    assert indices == list(range(32))


def test_a_stuck_subscriber_is_cut_off_so_a_healthy_one_gets_frames_again(
        context: zmq.Context, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(publish, "HEARTBEAT_IVL_MS", 200)
    monkeypatch.setattr(publish, "HEARTBEAT_TIMEOUT_MS", 1000)
    image = np.zeros((512, 640, 3), np.uint8)
    with Publisher(ANY_PORT) as publisher:
        stuck = subscriber(context, publisher.endpoint, rcvhwm=1)
        stuck.setsockopt(zmq.RCVBUF, 1 << 16)
        assert publisher.wait_for_subscriber(10)
        healthy = subscriber(context, publisher.endpoint)
        for _ in range(500):  # XPUB announces only a topic's first subscriber: probe until the healthy one is in
            publisher.send(np.zeros((2, 2), np.uint8), {"index": -1})
            if healthy.poll(20):
                break
        while healthy.poll(0):
            healthy.recv_multipart()
        first_drop = None
        received_after_drop: list[int] = []
        for index in range(1000):  # 20 s at most; ends after ~1.5 s once the heartbeat cuts the stuck peer off
            if not publisher.send(image, {"index": index}) and first_drop is None:
                first_drop = index
            while healthy.poll(0):
                _, header = receive(healthy)
                if first_drop is not None and header["meta"]["index"] > first_drop:
                    received_after_drop.append(header["meta"]["index"])
            if len(received_after_drop) >= 5:
                break
            time.sleep(0.02)
    assert first_drop is not None, "the stuck subscriber never filled its queue"
    assert len(received_after_drop) >= 5, "frames stayed blocked for every subscriber"
    assert received_after_drop == sorted(received_after_drop)


def test_wait_for_subscriber_false_then_true_then_false_after_it_leaves(context: zmq.Context) -> None:
    with Publisher(ANY_PORT) as publisher:
        assert publisher.wait_for_subscriber(0.2) is False
        socket = subscriber(context, publisher.endpoint)
        assert publisher.wait_for_subscriber(10) is True
        assert publisher.subscribed
        socket.close(linger=0)
        deadline = time.monotonic() + 10  # the unsubscribe notice arrives asynchronously
        while publisher.subscribed and time.monotonic() < deadline:
            time.sleep(0.02)
        assert publisher.subscribed is False
        assert publisher.wait_for_subscriber(0.1) is False


def free_port() -> int:
    with net.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_subscriber_started_first_gets_the_first_frame(context: zmq.Context) -> None:
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    socket = subscriber(context, endpoint)  # connects before anyone binds; ZeroMQ keeps retrying
    with Publisher(endpoint, hwm=8) as publisher:  # room for the 3 frames sent back to back
        assert publisher.wait_for_subscriber(10)
        for index in range(3):
            assert publisher.send(np.full((4, 5), index, np.uint8), {"index": index})
        frames = [receive_within(socket) for _ in range(3)]
    assert [header["meta"]["index"] for _, header in frames] == [0, 1, 2]
    assert [int(image[0, 0]) for image, _ in frames] == [0, 1, 2]


def test_close_with_queued_frames_returns_and_is_idempotent(context: zmq.Context) -> None:
    publisher = Publisher(ANY_PORT)
    stuck = subscriber(context, publisher.endpoint, rcvhwm=1)
    assert publisher.wait_for_subscriber(10)
    send_in_thread(publisher, 50, np.zeros((512, 640), np.uint8))
    closer = threading.Thread(target=publisher.close, daemon=True)
    closer.start()
    closer.join(timeout=30)  # hang guard: close lingers 0.5 s at most
    assert not closer.is_alive(), "close hung on a stuck subscriber"
    publisher.close()
    stuck.close(linger=0)


def test_port_in_use_is_a_one_line_error() -> None:
    with Publisher(ANY_PORT) as publisher:
        with pytest.raises(StreamFusionError, match="cannot publish on .*Address already in use.*another port"):
            Publisher(publisher.endpoint)


@pytest.mark.parametrize("address", ["127.0.0.1:5555", "tcp://127.0.0.1:notaport", "bogus://x:1",
                                     "tcp://999.1.1.1:5555"])
def test_bad_address_is_a_one_line_error(address: str) -> None:
    with pytest.raises(StreamFusionError, match="cannot publish on") as error:
        Publisher(address)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(("address", "message"), [
    ("tcp://127.0.0.1:99999", "port 99999 is not a number from 1 to 65535 (or * for any free port)"),  # not 34463
    ("tcp://127.0.0.1:65536", "port 65536 is not a number from 1 to 65535 (or * for any free port)"),
    ("tcp://127.0.0.1:0", "port 0 is not a number from 1 to 65535 (or * for any free port)"),
    ("tcp://127.0.0.1", "no port: expected tcp://HOST:PORT, e.g. tcp://127.0.0.1:5555"),
])
def test_port_out_of_range_or_missing_is_refused_not_wrapped(address: str, message: str) -> None:
    with pytest.raises(StreamFusionError) as error:
        Publisher(address)
    assert str(error.value) == f"cannot publish on {address!r}: {message}"


@pytest.mark.parametrize("kwargs, message", [
    ({"fmt": "png"}, "format must be one of raw, jpg"),
    ({"jpeg_quality": 0}, "JPEG quality"),
    ({"jpeg_quality": 90.0}, "JPEG quality"),
    ({"hwm": 0}, "high-water mark"),
])
def test_bad_options_are_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(StreamFusionError, match=message):
        Publisher(ANY_PORT, **kwargs)


@pytest.mark.parametrize("image", [np.zeros((4, 4), np.float32), np.zeros((4, 4, 4), np.uint8),
                                   np.zeros((4,), np.uint8)])
def test_encode_rejects_images_outside_the_wire_format(image: np.ndarray) -> None:
    with pytest.raises(StreamFusionError, match="expected a uint8 image"):
        encode(image, {})


def test_encode_raw_matches_imagezmq_header_exactly() -> None:
    image = np.arange(24, dtype=np.uint8).reshape(2, 4, 3)[:, ::2]  # non-contiguous: must still go out C-ordered
    header, buffer = encode(image, {"index": 1}, msg="cam")
    assert json.loads(header) == {"msg": "cam", "dtype": "uint8", "shape": [2, 2, 3], "meta": {"index": 1}}
    assert buffer == np.ascontiguousarray(image).tobytes()


def test_live_pipeline_with_a_subscriber_that_never_reads_runs_to_the_end_and_counts_publish_drops(
        context: zmq.Context, tmp_path: Path) -> None:
    """A stuck subscriber neither blocks nor hides anything: the live run ends, every frame is accounted for."""
    for role in ("ir", "vis"):
        writer = cv2.VideoWriter(str(tmp_path / f"{role}.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 50, (320, 256))
        for index in range(100):
            writer.write(np.full((256, 320, 3), (index * 3) % 256, np.uint8))
        writer.release()
    with Publisher(ANY_PORT, hwm=2) as publisher:
        stuck = subscriber(context, publisher.endpoint, rcvhwm=1)
        stuck.setsockopt(zmq.RCVBUF, 1 << 16)
        assert publisher.wait_for_subscriber(10)
        sources = SourcePair(open_source(tmp_path / "ir.avi", "ir"), open_source(tmp_path / "vis.avi", "vis"),
                             live=True, pace_fps=50.0)
        pipeline = Pipeline(sources, ClassicalEngine(), AlignmentMonitor(), sinks=Sinks(publisher))
        summaries = []
        runner = threading.Thread(target=lambda: summaries.append(pipeline.run()), daemon=True)
        runner.start()
        runner.join(timeout=120)  # hang guard: a blocking send would stall the pipeline here
        assert not runner.is_alive(), "the pipeline stalled on a subscriber that never reads"
        assert stuck.poll(0)  # it was subscribed and got the first frames
    summary = summaries[0]
    assert summary.error is None and summary.frames > 0
    assert summary.drops["publish"] == publisher.dropped > 0
    assert publisher.sent + publisher.dropped == summary.frames and publisher.unheard == 0
    assert summary.published == publisher.sent
