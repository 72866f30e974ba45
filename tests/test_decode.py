"""Hostile messages from the network (issue #13 point 4): the subscriber CLI, a real process on a real socket on
127.0.0.1, skips each with one warning, counts it, keeps receiving, and bounds its memory."""
from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
import zmq

from stream_fusion.decode import MAX_PIXELS, BadMessage, decode, jpeg_size
from stream_fusion.publish import encode

REPO = Path(__file__).resolve().parents[1]
GOOD = np.full((48, 64, 3), 200, np.uint8)


def header(**fields: object) -> bytes:
    return json.dumps({"msg": "hostile", **fields}).encode()


def small_jpeg() -> bytes:
    return cv2.imencode(".jpg", GOOD)[1].tobytes()


def with_size(jpeg: bytes, width: int, height: int) -> bytes:
    """The same JPEG whose frame header (SOF0) claims another size: what a hostile sender would forge."""
    sof = jpeg.index(b"\xff\xc0")
    return jpeg[:sof + 5] + height.to_bytes(2, "big") + width.to_bytes(2, "big") + jpeg[sof + 9:]


# (what, message parts, the reason the warning must give)
HOSTILE = [
    ("one part", [header(dtype="uint8", shape=[2, 2])], "two-part message"),
    ("three parts", [header(), b"", b""], "got 3 part(s)"),
    ("non-JSON header", [b"\xff\xfe not json", b"1234"], "header is not JSON"),
    ("JSON list", [b"[1, 2, 3]", b""], "not an imagezmq header"),
    ("no msg key", [b'{"dtype": "uint8", "shape": [4, 4]}', b"\x00" * 16], "not an imagezmq header"),
    ("shape 100000x100000x3 with 16 bytes", [header(dtype="uint8", shape=[100000, 100000, 3]), b"\x00" * 16],
     f"(at most {MAX_PIXELS})"),
    ("shape that does not match the buffer", [header(dtype="uint8", shape=[4, 4, 3]), b"\x00" * 16],
     "cannot come in 16 bytes"),
    ("negative shape", [header(dtype="uint8", shape=[-4, -4]), b"\x00" * 16], "whole numbers >= 1"),
    ("overflowing shape", [header(dtype="uint8", shape=[2**63, 2**63, 3]), b"\x00" * 16], "pixels (at most"),
    ("shape past int64", [header(dtype="uint8", shape=[2**70, 1]), b"\x00" * 16], "pixels (at most"),
    ("non-finite shape", [b'{"msg": "x", "dtype": "uint8", "shape": [NaN, Infinity]}', b"\x00" * 16],
     "whole numbers >= 1"),
    ("fractional shape", [header(dtype="uint8", shape=[4.5, 4]), b"\x00" * 18], "whole numbers >= 1"),
    ("zero shape", [header(dtype="uint8", shape=[0, 4]), b""], "whole numbers >= 1"),
    ("one-dimensional", [header(dtype="uint8", shape=[16]), b"\x00" * 16], "'shape' [h, w]"),
    ("5 channels", [header(dtype="uint8", shape=[2, 2, 5]), b"\x00" * 20], "5 channels"),
    ("dtype object", [header(dtype="object", shape=[2, 2]), b"\x00" * 32], "not a plain number type"),
    ("dtype V0", [header(dtype="V0", shape=[2, 2]), b""], "not a plain number type"),
    ("structured dtype", [header(dtype="i4,i4", shape=[2, 2]), b"\x00" * 32], "not a plain number type"),
    ("dtype as a list", [header(dtype=[["a", "<i4"]], shape=[2, 2]), b"\x00" * 16], "needs a 'dtype' name"),
    ("unknown dtype", [header(dtype="float999", shape=[2, 2]), b"\x00" * 16], "unknown dtype"),
    ("JSON nested 200000 deep", [b'{"msg": ' + b"[" * 200000 + b"]" * 200000 + b"}", b""], "header of 400009 bytes"),
    ("JSON nested 30000 deep (under the size limit)", [b'{"msg": ' + b"[" * 30000 + b"]" * 30000 + b"}", b""],
     "nested too deep"),
    ("a 10^5000 number", [b'{"msg": ' + b"9" * 5000 + b"}", b""], "header is not JSON"),
    ("bad JPEG", [header(jpg=True), b"\xff\xd8 this is not a JPEG"], "corrupt JPEG"),
    ("not a JPEG at all", [header(jpg=True), b"GIF89a......"], "not a JPEG"),
    ("JPEG without a frame header", [header(jpg=True), b"\xff\xd8\xff\xd9"], "no frame header"),
    ("JPEG claiming 20000x20000", [header(jpg=True), with_size(small_jpeg(), 20000, 20000)],
     "JPEG of 20000x20000 = 400000000 pixels"),
    ("JPEG whose data is garbage", [header(jpg=True), small_jpeg()[:200] + b"\x00" * 50], "does not decode"),
]


@pytest.mark.parametrize(("what", "parts", "reason"), HOSTILE, ids=[case[0] for case in HOSTILE])
def test_decode_raises_one_line_bad_message(what: str, parts: list[bytes], reason: str) -> None:
    with pytest.raises(BadMessage) as error:
        decode(parts)
    assert reason in str(error.value) and "\n" not in str(error.value)


def test_decode_accepts_every_plain_number_type_and_reads_jpeg_sizes() -> None:
    for dtype in ("uint8", "uint16", ">u2", "int32", "float32", "float64"):
        array = np.arange(12, dtype=dtype).reshape(2, 2, 3)
        image, _ = decode([header(dtype=dtype, shape=[2, 2, 3]), array.tobytes()])
        np.testing.assert_array_equal(image, array)
    assert jpeg_size(small_jpeg()) == (64, 48, 3)
    assert jpeg_size(cv2.imencode(".jpg", GOOD[:, :, 0], [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])[1].tobytes()) == (64, 48, 1)


class Subscriber:
    """The subscriber CLI as a subprocess, its output lines collected by threads as they come."""

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen([sys.executable, "-m", "stream_fusion.subscribe", *args], cwd=REPO,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: dict[str, queue.Queue[str]] = {"out": queue.Queue(), "err": queue.Queue()}
        self.seen: dict[str, list[str]] = {"out": [], "err": []}
        for name, stream in (("out", self.process.stdout), ("err", self.process.stderr)):
            threading.Thread(target=lambda s=stream, q=self.lines[name]: [q.put(line) for line in s], daemon=True).start()

    def wait_for(self, stream: str, text: str, timeout: float = 20) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines[stream].get(timeout=0.1)
            except queue.Empty:
                continue
            self.seen[stream].append(line)
            if text in line:
                return line
        raise AssertionError(f"no {text!r} on std{stream} within {timeout} s; saw {self.seen[stream][-5:]}")

    def peak_rss_mb(self) -> float:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(status.split("VmHWM:")[1].split()[0]) / 1024

    def stop(self) -> tuple[int, str, str]:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=20)
        time.sleep(0.2)  # the reader threads take the last lines
        for name in ("out", "err"):
            while not self.lines[name].empty():
                self.seen[name].append(self.lines[name].get())
        return self.process.returncode, "".join(self.seen["out"]), "".join(self.seen["err"])


@pytest.fixture
def publisher() -> Iterator[tuple[zmq.Socket, str]]:
    context = zmq.Context()
    socket = context.socket(zmq.PUB)
    socket.bind("tcp://127.0.0.1:*")
    yield socket, socket.getsockopt_string(zmq.LAST_ENDPOINT)
    context.destroy(linger=0)


def send_good_until_received(pub: zmq.Socket, sub: Subscriber, index: int) -> None:
    """Send frame ``index`` until the subscriber prints it (the first one may go out before it is connected)."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        pub.send_multipart(encode(GOOD, {"index": index}))
        try:
            sub.wait_for("out", f"frame {index} ", timeout=0.5)
            return
        except AssertionError:
            continue
    raise AssertionError(f"frame {index} never arrived; stderr: {sub.seen['err'][-3:]}")


def test_subscriber_skips_each_hostile_message_with_one_warning_and_keeps_receiving(
        publisher: tuple[zmq.Socket, str]) -> None:
    pub, endpoint = publisher
    sub = Subscriber(endpoint, "--all")
    try:
        send_good_until_received(pub, sub, 0)
        for number, (what, parts, reason) in enumerate(HOSTILE, start=1):
            pub.send_multipart(parts)
            warning = sub.wait_for("err", "warning: skipped a bad message:")
            assert reason in warning, what
            pub.send_multipart(encode(GOOD, {"index": number}))  # the next good frame must arrive
            sub.wait_for("out", f"frame {number} ")
    finally:
        status, out, err = sub.stop()
    assert status == 0 and "Traceback" not in err
    assert f"summary: {len(HOSTILE) + 1} frames received, 0 missed" in out
    assert f"{len(HOSTILE)} bad messages skipped" in out
    assert len([line for line in err.splitlines() if line.startswith("warning: skipped a bad message")]) == len(HOSTILE)


def test_a_200_mb_message_is_refused_before_it_is_read_and_the_stream_goes_on(publisher: tuple[zmq.Socket, str]) -> None:
    """ZeroMQ drops the connection that sends a message over the limit (128 MiB by default) before allocating it; the
    subscriber connects again and receives the next frames. Before, such a message took 448 MB."""
    pub, endpoint = publisher
    sub = Subscriber(endpoint)
    try:
        send_good_until_received(pub, sub, 0)
        baseline = sub.peak_rss_mb()
        pub.send_multipart([header(dtype="uint8", shape=[10000, 20000]), bytes(200_000_000)])
        sub.wait_for("err", "connection to")
        send_good_until_received(pub, sub, 1)
        peak = sub.peak_rss_mb()
    finally:
        status, out, err = sub.stop()
    assert status == 0 and "Traceback" not in err
    assert peak - baseline < 50, f"peak RSS grew from {baseline:.0f} MB to {peak:.0f} MB"
    assert "warning: connection to " in err and "over --max-message-mb): connecting again" in err
    assert "1 reconnections" in out


def test_a_forged_20000x20000_jpeg_is_skipped_before_decoding(publisher: tuple[zmq.Socket, str]) -> None:
    pub, endpoint = publisher
    sub = Subscriber(endpoint)
    try:
        send_good_until_received(pub, sub, 0)
        baseline = sub.peak_rss_mb()
        # a real JPEG of 20000x20000 gray pixels would be 4.7 MB; the forged header alone is what gets checked
        pub.send_multipart([header(jpg=True), with_size(small_jpeg(), 20000, 20000)])
        sub.wait_for("err", "pixels (at most")
        send_good_until_received(pub, sub, 1)
        peak = sub.peak_rss_mb()
    finally:
        status, out, err = sub.stop()
    assert status == 0 and peak - baseline < 50
    assert "1 bad messages skipped" in out
