"""Fusion served by Triton: a real ``python -m stream_fusion.serve`` (tritonserver, from .venv-serve) on 127.0.0.1,
and real clients: the remote engine, run_stream.py processes replaying real video files, publishing over ZeroMQ.

One server for the module (starting one takes tens of seconds on 2 cores); the tests that stop it start it again.
"""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import zmq

from stream_fusion.bench.server import SERVE_PYTHON, ServerProcess, free_port
from stream_fusion.engine import create_engine
from stream_fusion.errors import StreamFusionError
from stream_fusion.warp import IrWarp

ROOT = Path(__file__).resolve().parents[1]
MODELS = ["lite", "cdfusion"]

pytestmark = pytest.mark.skipif(
    not SERVE_PYTHON.is_file(),
    reason=f"no server environment at {SERVE_PYTHON}: the README's test command (and CI) creates it with "
           "pip install -e '.[serve]'",
)


@pytest.fixture(scope="module")
def started() -> ServerProcess:
    server = ServerProcess(MODELS, threads=1)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def server(started: ServerProcess) -> ServerProcess:
    """The module's server, running (a test before may have stopped it)."""
    if not started.running:
        started.start()
    return started


def write_video(path: Path, frames: int, size: tuple[int, int], seed: int) -> list[np.ndarray]:
    """A clip of smooth random scenes (MJPG), and its frames as a reader decodes them."""
    rng = np.random.default_rng(seed)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, size)
    for _ in range(frames):
        small = rng.integers(0, 256, (size[1] // 8, size[0] // 8, 3), np.uint8)
        writer.write(cv2.resize(small, size, interpolation=cv2.INTER_CUBIC))
    writer.release()
    capture = cv2.VideoCapture(str(path))
    decoded = []
    while (frame := capture.read())[0]:
        decoded.append(frame[1])
    assert len(decoded) == frames
    return decoded


def run_stream(model: str, *args: str) -> list[str]:
    return [sys.executable, str(ROOT / "run_stream.py"), "--no-display", "--model", model, *args]


def receive(port: int, count: int, into: list, timeout_s: float) -> None:
    """Subscribe on 127.0.0.1:port and keep up to ``count`` (header, frame) pairs."""
    sub = zmq.Context.instance().socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.setsockopt(zmq.RCVHWM, 1000)
    sub.connect(f"tcp://127.0.0.1:{port}")
    deadline = time.monotonic() + timeout_s
    while len(into) < count and time.monotonic() < deadline:
        if sub.poll(200):
            header, buffer = sub.recv_multipart()
            meta = json.loads(header)
            into.append((meta["meta"]["index"], np.frombuffer(buffer, np.uint8).reshape(meta["shape"])))
    sub.close(linger=0)


class Replay:
    """run_stream.py replaying an IR / visible pair of clips through a fusion server, with a subscriber."""

    def __init__(self, tmp: Path, name: str, model: str, frames: int, seed: int, *args: str) -> None:
        self.ir = write_video(tmp / f"{name}_ir.avi", frames, (96, 80), seed)
        self.vis = write_video(tmp / f"{name}_vis.avi", frames, (96, 80), seed + 100)
        port = free_port()
        self.received: list = []
        self.subscriber = threading.Thread(target=receive, args=(port, frames, self.received, 240), daemon=True)
        self.subscriber.start()
        self.process = subprocess.Popen(
            run_stream(model, "--ir", str(tmp / f"{name}_ir.avi"), "--vis", str(tmp / f"{name}_vis.avi"),
                       "--zmq", f"tcp://127.0.0.1:{port}", "--wait-subscriber", "30", *args),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)

    def finish(self, timeout_s: float = 240) -> tuple[int, str, str]:
        try:
            out, err = self.process.communicate(timeout=timeout_s)
        finally:
            self.process.kill()
        self.subscriber.join(5)
        return self.process.returncode, out, err


def test_fusing_through_the_server_gives_the_local_engines_frames(server: ServerProcess) -> None:
    """Both networks, colour and gray visible frames, an odd size, and an IR camera of its own size with a warp."""
    rng = np.random.default_rng(5)
    ir = cv2.resize(rng.integers(0, 256, (12, 16), np.uint8), (130, 98), interpolation=cv2.INTER_CUBIC)
    vis = cv2.resize(rng.integers(0, 256, (12, 16, 3), np.uint8), (130, 98), interpolation=cv2.INTER_CUBIC)
    small_ir = cv2.resize(ir, (80, 64))
    warp = IrWarp.resize((80, 64), (130, 98))
    for name in MODELS:
        remote, local = create_engine(server.url(name)), create_engine(name, "cpu")
        assert remote.colour == (name == "cdfusion")
        for args in ((ir, vis), (ir, cv2.cvtColor(vis, cv2.COLOR_BGR2GRAY)), (small_ir, vis, warp)):
            fused, expected = remote.fuse(*args), local.fuse(*args)
            assert fused.shape == expected.shape and fused.dtype == np.uint8
            assert np.abs(fused.astype(int) - expected).max() <= 2
            assert np.abs(fused.astype(int) - args[1]).mean() > 1  # fused, not the visible frame handed back


def test_two_pipelines_through_one_server_each_receive_every_frame(server: ServerProcess, tmp_path: Path) -> None:
    """Two edge boxes' streams at once (paced, so they overlap): every frame of each arrives, in order, and is the
    fusion of its own stream's pair (a batching server must not mix them up)."""
    frames = 24
    replays = [Replay(tmp_path, f"box{k}", server.url("lite"), frames, k, "--realtime", "--fps", "12")
               for k in range(2)]
    local = create_engine("lite", "cpu")
    for replay in replays:
        status, out, err = replay.finish()
        assert status == 0, err
        assert f"summary: {frames} frames fused" in out and "Traceback" not in err
        assert [index for index, _ in replay.received] == list(range(frames))
        for index, fused in replay.received[::6]:
            assert np.abs(fused.astype(int) - local.fuse(cv2.cvtColor(replay.ir[index], cv2.COLOR_BGR2GRAY),
                                                         replay.vis[index])).max() <= 2


def stop_after_frames(replay: Replay, server: ServerProcess, count: int) -> None:
    deadline = time.monotonic() + 120
    while len(replay.received) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(replay.received) >= count, "the replay did not start"
    server.stop()


def test_server_restarted_within_the_reconnect_window_the_replay_completes(
    server: ServerProcess, tmp_path: Path
) -> None:
    frames = 40
    replay = Replay(tmp_path, "restart", server.url("lite"), frames, 7, "--realtime", "--fps", "10",
                    "--reconnect", "180")
    stop_after_frames(replay, server, 5)
    server.start()
    status, out, err = replay.finish()
    assert status == 0, err
    assert f"summary: {frames} frames fused" in out and "reconnects: server 1" in out
    assert [index for index, _ in replay.received] == list(range(frames))  # none lost while it was away
    assert f"warning: fusion server {server.address} lost" in err and "Traceback" not in err


def test_server_not_back_within_the_reconnect_window_ends_with_one_line(server: ServerProcess, tmp_path: Path) -> None:
    replay = Replay(tmp_path, "lost", server.url("lite"), 40, 9, "--realtime", "--fps", "10", "--reconnect", "2")
    stop_after_frames(replay, server, 5)
    status, out, err = replay.finish()
    assert status == 2
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert errors == [f"error: fusion server {server.address} lost for 2 s (--reconnect): " + errors[0].split(": ", 2)[2]]
    assert "Traceback" not in err and "summary:" in out  # what was fused before is reported


def test_unknown_model_is_one_line_naming_the_served_models(server: ServerProcess) -> None:
    result = subprocess.run(run_stream(server.url("huge"), "--zmq", "none"), capture_output=True, text=True,
                            cwd=ROOT, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (f"error: fusion server {server.address} has no model 'huge' "
                                                      "ready: it serves cdfusion, lite")


def test_unreachable_server_at_start_is_one_line() -> None:
    with pytest.raises(StreamFusionError, match=r"^fusion server 127\.0\.0\.1:\d+ is unreachable \("):
        create_engine(f"triton://127.0.0.1:{free_port()}/lite")
    with pytest.raises(StreamFusionError, match="triton://HOST:PORT/NAME"):
        create_engine("triton://127.0.0.1:8001")


def test_server_refuses_bad_options_in_one_line() -> None:
    result = subprocess.run([str(SERVE_PYTHON), "-m", "stream_fusion.serve", "--models", "lite,huge"],
                            capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["error: --models 'lite,huge': choose among lite, base, cdfusion"]
