"""Subscriber: message decoding, draining to the newest frame, and the CLI as a real subprocess on real sockets."""
from __future__ import annotations

import json
import os
import signal
import socket as net
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
import zmq

from stream_fusion.errors import StreamFusionError
from stream_fusion.publish import Publisher, encode
from stream_fusion.subscribe import capture_latency_ms, decode, main, receive_latest
from xvfb import find_window, needs_xvfb, press_q, virtual_display

REPO = Path(__file__).resolve().parents[1]


def frame(index: int) -> np.ndarray:
    """A distinct, reproducible colour frame per index, so a saved file proves which frame it is."""
    rows = np.arange(48)[:, None, None]
    cols = np.arange(64)[None, :, None]
    return ((rows * 3 + cols * 2 + np.array([0, 85, 170]) + index * 7) % 256).astype(np.uint8)


def free_port() -> int:
    with net.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stream_fusion.subscribe", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture
def pipe() -> Iterator[tuple[zmq.Socket, zmq.Socket]]:
    """A PUSH -> PULL pair over inproc: a sent message is in the receiver's queue as soon as send returns."""
    context = zmq.Context()
    pull = context.socket(zmq.PULL)
    pull.bind("inproc://frames")
    push = context.socket(zmq.PUSH)
    push.connect("inproc://frames")
    yield push, pull
    context.destroy(linger=0)


def test_receive_latest_returns_the_newest_frame_and_counts_the_skipped(pipe: tuple[zmq.Socket, zmq.Socket]) -> None:
    push, pull = pipe
    for index in range(5):
        push.send_multipart(encode(frame(index), {"index": index}, "jpg" if index % 2 else "raw"))
    image, header, skipped = receive_latest(pull, 1000)
    assert header["meta"]["index"] == 4 and skipped == 4
    np.testing.assert_array_equal(image, frame(4))
    assert receive_latest(pull, 0) is None


def test_receive_latest_without_drain_returns_every_frame_in_order(pipe: tuple[zmq.Socket, zmq.Socket]) -> None:
    push, pull = pipe
    for index in range(3):
        push.send_multipart(encode(frame(index), {"index": index}))
    got = [receive_latest(pull, 1000, drain=False) for _ in range(3)]
    assert [(header["meta"]["index"], skipped) for _, header, skipped in got] == [(0, 0), (1, 0), (2, 0)]
    assert receive_latest(pull, 0) is None


def test_decode_reads_a_plain_imagezmq_message_without_our_metadata() -> None:
    image = frame(1)
    header = json.dumps({"msg": "rpi-cam", "dtype": "uint8", "shape": [48, 64, 3]}).encode()
    decoded, parsed = decode([header, image.tobytes()])
    np.testing.assert_array_equal(decoded, image)
    assert parsed["msg"] == "rpi-cam" and decoded.flags.writeable


@pytest.mark.parametrize("parts, message", [
    ([b'{"msg": "x"}'], "two-part message"),
    ([b"not json", b""], "not JSON"),
    ([b'[1, 2]', b""], "not an imagezmq header"),
    ([b'{"msg": "x", "dtype": "uint8"}', b"\x00" * 4], "raw header needs a 'shape'"),
    ([b'{"msg": "x", "dtype": "uint8", "shape": [2, 3]}', b"\x00" * 5], "cannot come in 5 bytes"),
    ([b'{"msg": "x", "jpg": true}', b"no jpeg here"], "not a JPEG"),
])
def test_decode_rejects_malformed_messages_with_one_line(parts: list[bytes], message: str) -> None:
    with pytest.raises(StreamFusionError, match=message) as error:
        decode(parts)
    assert "\n" not in str(error.value)


def test_capture_latency_uses_the_older_capture() -> None:
    assert capture_latency_ms({"t_capture_ir": 100.0, "t_capture_vis": 100.25}, 100.5) == pytest.approx(500.0)
    assert capture_latency_ms({"t_capture_ir": 100.0}, 100.1) == pytest.approx(100.0)
    assert capture_latency_ms({"index": 3}, 100.0) is None


def test_cli_receives_count_frames_and_saves_them_by_index(tmp_path: Path) -> None:
    save = tmp_path / "frames"
    with Publisher("tcp://127.0.0.1:*") as publisher:
        process = subprocess.Popen(
            [sys.executable, "-m", "stream_fusion.subscribe", publisher.endpoint, "--count", "5", "--save", str(save),
             "--timeout", "60"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert publisher.wait_for_subscriber(60), "the subscriber never subscribed"
            index = 0
            while process.poll() is None and index < 3000:  # paced so it keeps up; it may still skip a frame
                now = time.time()
                publisher.send(frame(index), {"index": index, "t_capture_ir": now, "t_capture_vis": now})
                index += 1
                time.sleep(0.02)
            stdout, stderr = process.communicate(timeout=60)
        finally:
            process.kill()
    assert process.returncode == 0, stderr
    saved = sorted(save.glob("*.png"))
    assert len(saved) == 5
    indices = [int(path.stem) for path in saved]
    assert indices == sorted(set(indices)) and indices[-1] < index
    for path, shown in zip(saved, indices):
        np.testing.assert_array_equal(cv2.imread(str(path), cv2.IMREAD_UNCHANGED), frame(shown))
    lines = stdout.strip().splitlines()
    assert [line.split()[1] for line in lines[:5]] == [str(i) for i in indices]
    assert all("latency" in line and " ms" in line for line in lines[:5])
    assert lines[-1].startswith("summary: 5 frames received")
    assert "median" in lines[-1] and "p99" in lines[-1]


def test_cli_timeout_without_a_publisher_is_a_one_line_error() -> None:
    port = free_port()
    result = run_cli(f"tcp://127.0.0.1:{port}", "--timeout", "0.5")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [f"subscribed to tcp://127.0.0.1:{port}, waiting for frames",
                                          f"error: no frame from tcp://127.0.0.1:{port} within 0.5 s (is the"
                                          " publisher running and bound to that address?)"]
    assert "summary: 0 frames received" in result.stdout


def test_cli_bad_address_is_a_one_line_error() -> None:
    result = run_cli("localhost:5555", "--timeout", "1")
    assert result.returncode == 2
    assert result.stderr.startswith("error: cannot connect to 'localhost:5555'")
    assert "Traceback" not in result.stderr and result.stderr.strip().count("\n") == 0


def test_cli_unresolvable_host_is_a_one_line_error_at_once() -> None:
    result = run_cli("tcp://no-such-host.invalid:5555")  # without the check it would wait forever, silently
    assert result.returncode == 2
    assert result.stderr.startswith("error: cannot resolve host 'no-such-host.invalid' of")
    assert result.stderr.strip().count("\n") == 0


@pytest.mark.parametrize(("address", "message"), [
    ("tcp://127.0.0.1", "cannot connect to 'tcp://127.0.0.1': no port: expected tcp://HOST:PORT, e.g. tcp://127.0.0.1:5555"),
    ("tcp://:5555", "cannot connect to 'tcp://:5555': no host: expected tcp://HOST:PORT, e.g. tcp://127.0.0.1:5555"),
    ("tcp://127.0.0.1:99999", "cannot connect to 'tcp://127.0.0.1:99999': port 99999 is not a number from 1 to 65535"),
])
def test_cli_address_without_a_port_or_with_a_bad_one_says_so(address: str, message: str) -> None:
    result = run_cli(address, "--timeout", "5")
    assert (result.returncode, result.stderr) == (2, f"error: {message}\n")


@pytest.mark.parametrize("args, message", [(["--count", "0"], "--count must be at least 1"),
                                           (["--timeout", "-1"], "--timeout must be a positive")])
def test_cli_bad_options_are_errors(args: list[str], message: str) -> None:
    with pytest.raises(StreamFusionError, match=message):
        main(["tcp://127.0.0.1:5555", *args])


def test_cli_save_into_a_file_is_an_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StreamFusionError, match="cannot create --save folder"):
        main(["tcp://127.0.0.1:5555", "--save", str(blocker / "sub")])


def test_cli_show_without_display_says_so_and_runs_headless() -> None:
    if sys.platform != "linux":
        pytest.skip("the no-display check is for Linux")
    env_free = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    result = subprocess.run([sys.executable, "-m", "stream_fusion.subscribe", f"tcp://127.0.0.1:{free_port()}",
                             "--show", "--timeout", "0.3"], cwd=REPO, capture_output=True, text=True, timeout=60,
                            env=env_free)
    assert "no display" in result.stderr and "continuing headless" in result.stderr
    assert result.returncode == 2 and "error: no frame" in result.stderr  # it ran on, headless, until the timeout


@pytest.mark.skipif(sys.platform == "win32", reason="Windows has no SIGTERM delivery to a child, only termination")
def test_cli_sigterm_prints_the_summary_and_exits_0() -> None:
    with Publisher("tcp://127.0.0.1:*") as publisher:
        process = subprocess.Popen([sys.executable, "-m", "stream_fusion.subscribe", publisher.endpoint], cwd=REPO,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert publisher.wait_for_subscriber(60)
            assert publisher.send(frame(0), {"index": 0})
            assert process.stdout.readline().startswith("frame 0 ")  # it is in its receive loop
            process.send_signal(signal.SIGTERM)
            stdout, stderr = process.communicate(timeout=60)
        finally:
            process.kill()
    assert process.returncode == 0, stderr
    assert stdout.strip().splitlines()[-1].startswith("summary: 1 frames received, 0 missed")


def test_console_script_entry_point_gives_one_line_errors() -> None:
    """pyproject's ``stream-fusion-subscribe`` target must wrap ``main`` in run_cli, or errors become tracebacks."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    module, function = scripts["stream-fusion-subscribe"].split(":")
    result = subprocess.run([sys.executable, "-c", f"import sys; sys.argv[0] = 'stream-fusion-subscribe'; "
                             f"from {module} import {function}; sys.exit({function}())", "--count", "0"],
                            cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr == "error: --count must be at least 1, got 0\n"


@needs_xvfb
def test_cli_show_opens_a_window_on_a_real_x_display_and_q_quits() -> None:
    process = None
    with virtual_display("640x480x24") as display:
        env = {**os.environ, "DISPLAY": display}
        try:
            with Publisher("tcp://127.0.0.1:*") as publisher:
                process = subprocess.Popen(
                    [sys.executable, "-m", "stream_fusion.subscribe", publisher.endpoint, "--show"],
                    cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                )
                assert publisher.wait_for_subscriber(60)
                window = ""
                for index in range(300):  # a frame every 50 ms until the window is there
                    publisher.send(frame(index), {"index": index})
                    window = find_window("stream_fusion tcp", env)
                    if window:
                        break
                    time.sleep(0.05)
                if not window:
                    process.kill()
                    pytest.fail(f"no window appeared; subscriber stderr: {process.communicate()[1]!r}")
                stdout, stderr = press_q(process, window, env, timeout=30)
        finally:
            if process is not None:
                process.kill()
    assert process.returncode == 0, stderr
    assert "continuing headless" not in stderr
    assert stdout.strip().splitlines()[-1].startswith("summary: ")
