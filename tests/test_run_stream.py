"""run_stream.py as users run it: a subprocess, real sockets on 127.0.0.1, real video files written here.

Frames are small and clips short so that each run takes about a second.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import zmq

from stream_fusion import DATA_DIR
from xvfb import find_window, needs_xvfb, press_q, virtual_display

ROOT = Path(__file__).resolve().parents[1]
SHARED = DATA_DIR
DEMO_VIS = ROOT / "stream_fusion" / "assets" / "nato_camp" / "vis"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def command(*args: str, model: str = "classical") -> list[str]:
    # classical keeps most runs fast and independent of the shipped network; the engine has its own tests.
    return [sys.executable, str(ROOT / "run_stream.py"), "--no-display", "--model", model, *args]


def environment() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("DISPLAY", None)
    return env


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    port = free_port()
    return subprocess.run(command("--zmq", f"tcp://127.0.0.1:{port}", *args), capture_output=True, text=True,
                          timeout=timeout, env=environment(), cwd=ROOT)


def write_video(path: Path, frames: int, size: tuple[int, int] = (64, 48), seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, size)
    for _ in range(frames):
        writer.write(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
    writer.release()


def frame_count(path: Path) -> int:
    capture = cv2.VideoCapture(str(path))
    count = 0
    while capture.read()[0]:
        count += 1
    return count


def subscriber(port: int) -> zmq.Socket:
    sub = zmq.Context.instance().socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.setsockopt(zmq.RCVHWM, 1000)
    sub.connect(f"tcp://127.0.0.1:{port}")
    return sub


def test_demo_replay_delivers_all_32_frames_in_order() -> None:
    """What `python run_stream.py` does, with the shipped network, to a subscriber started first."""
    port = free_port()
    sub = subscriber(port)
    process = subprocess.Popen(command("--zmq", f"tcp://127.0.0.1:{port}", "--wait-subscriber", "30", model="default"),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment(), cwd=ROOT)
    received = []
    try:
        while len(received) < 32 and sub.poll(30_000):
            header, buffer = sub.recv_multipart()
            received.append((json.loads(header), buffer))
        out, err = process.communicate(timeout=30)
    finally:
        process.kill()
        sub.close(linger=0)
    assert process.returncode == 0, err
    assert [h["meta"]["index"] for h, _ in received] == list(range(32))
    for header, buffer in received:
        assert header["dtype"] == "uint8" and header["shape"] == [270, 360] and len(buffer) == 270 * 360
        meta = header["meta"]
        assert {"t_capture_ir", "t_capture_vis", "latency_ms", "alignment", "source", "engine"} <= set(meta)
        assert meta["latency_ms"]["total"] >= meta["latency_ms"]["fuse"] > 0
        assert meta["engine"] == "DiffFuseNet-lite" and meta["provider"] in ("cpu", "cuda", "tensorrt")
    # unpaced replays run as fast as they go; the demo plays at its clip's 6 fps so a newcomer sees it
    spread = received[-1][0]["meta"]["t_capture_vis"] - received[0][0]["meta"]["t_capture_vis"]
    assert spread >= 31 / 6 * 0.95
    fused = np.frombuffer(received[-1][1], np.uint8).reshape(270, 360)
    assert 20 < fused.mean() < 235 and fused.std() > 10  # a picture, not a blank
    assert "summary: 32 frames fused" in out and "published 32" in out
    assert "Traceback" not in err


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_cleanly_finishes_recording_and_prints_summary(tmp_path: Path, signum: int) -> None:
    port = free_port()
    sub = subscriber(port)
    record = tmp_path / "out.mp4"
    process = subprocess.Popen(
        command("--zmq", f"tcp://127.0.0.1:{port}", "--loop", "--realtime", "--fps", "30", "--record", str(record)),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment(), cwd=ROOT,
    )
    try:
        for _ in range(3):  # the stream is running: frames arrive
            assert sub.poll(30_000)
            sub.recv_multipart()
        process.send_signal(signum)
        out, err = process.communicate(timeout=10)
    finally:
        process.kill()
        sub.close(linger=0)
    assert process.returncode == 0, err
    name = signal.Signals(signum).name
    assert f"stopped by {name}" in out and "Traceback" not in err
    recorded = int(out.split("recorded ")[1].split(";")[0].split()[0])
    assert recorded >= 3 and frame_count(record) == recorded


def test_sigterm_while_waiting_for_a_subscriber_exits_cleanly_at_once() -> None:
    process = subprocess.Popen(command("--zmq", f"tcp://127.0.0.1:{free_port()}", "--wait-subscriber", "60"),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment(), cwd=ROOT)
    try:
        assert process.stderr.readline().startswith("stream_fusion: IR ")  # handlers are installed: now waiting
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=10)  # far less than the 60 s wait
    finally:
        process.kill()
    assert process.returncode == 0, err
    assert "summary: 0 frames fused" in out and "stopped by SIGTERM" in out


@pytest.fixture(scope="module")
def broken(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Bad inputs of every kind, written once for the error tests."""
    folder = tmp_path_factory.mktemp("broken")
    (folder / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 garbage that is no video" * 50)
    writer = cv2.VideoWriter(str(folder / "full.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 10, (64, 48))
    for i in range(20):
        writer.write(np.full((48, 64, 3), i * 10, np.uint8))
    writer.release()
    data = (folder / "full.mp4").read_bytes()
    (folder / "truncated.mp4").write_bytes(data[: len(data) * 2 // 3])
    (folder / "malformed.yaml").write_text("source:\n  ir: [unclosed\n")
    (folder / "unknown.yaml").write_text("source:\n  loop: true\ndisplay:\n  enabld: false\n")
    (folder / "model.onnx").write_bytes(b"this is not an onnx model")
    return folder


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--ir", "{d}/missing.mp4", "--vis", "{demo}"], "ir source not found: {d}/missing.mp4"),
        (["--ir", "99", "--vis", "{demo}"], "cannot open ir camera 99: no such device, or it is busy"),
        (["--ir", "{d}/corrupt.mp4", "--vis", "{demo}"], "cannot open ir video {d}/corrupt.mp4: not a video"),
        (["--ir", "{demo}", "--vis", "{d}/truncated.mp4"], "cannot open vis video {d}/truncated.mp4: not a video"),
        (["--config", "{d}/malformed.yaml"], "malformed config {d}/malformed.yaml (line 3)"),
        (["--config", "{d}/unknown.yaml"], "unknown config key 'display.enabld' (known: display.enabled)"),
        (["--set", "pipeline.queue_size=many"], "config key 'pipeline.queue_size' must be int, got str ('many')"),
        (["--set", "source.loop=1"], "config key 'source.loop' must be bool, got int (1)"),
        (["--set", "source.realtime=1"], "config key 'source.realtime' must be true, false or null"),
        (["--set", "pipeline.queue_size=0"], "config key 'pipeline.queue_size' must be >= 1, got 0"),
        (["--fps", "0"], "config key 'source.fps' must be > 0, got 0.0"),
        (["--model", "/nonexistent.onnx"], "model file /nonexistent.onnx does not exist"),
        (["--model", "{d}/model.onnx"], "{d}/model.onnx is not a valid ONNX model"),
        (["--mode", "fast"], "argument --mode: invalid choice: 'fast'"),
        (["--ir", "{demo}"], "give both --ir and --vis (or neither, for the bundled demo clip)"),
        (["--record", "{d}/nowhere/out.mp4"], "cannot record to {d}/nowhere/out.mp4: folder {d}/nowhere does not exist"),
    ],
    ids=["missing-file", "camera-99", "corrupt-video", "truncated-video", "malformed-yaml", "unknown-key",
         "wrong-type", "wrong-type-bool", "realtime-not-bool", "queue-size-0", "fps-0", "missing-model", "not-a-model", "bad-option", "one-source", "record-dir"],
)
def test_bad_input_gives_one_line_error_and_exit_2(broken: Path, args: list[str], message: str) -> None:
    fill = {"d": str(broken), "demo": str(DEMO_VIS)}
    result = run(*[arg.format(**fill) for arg in args], timeout=60)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert lines[-1].startswith("error: " + message.format(**fill)), lines
    assert len([line for line in lines if line.startswith("error")]) == 1
    assert "Traceback" not in result.stderr and "summary" not in result.stdout


def test_truncated_video_mid_stream_delivers_earlier_frames_then_fails(tmp_path: Path) -> None:
    write_video(tmp_path / "full.avi", 20, seed=1)
    data = (tmp_path / "full.avi").read_bytes()
    (tmp_path / "cut.avi").write_bytes(data[: len(data) // 2])
    write_video(tmp_path / "vis.avi", 20, seed=2)
    record = tmp_path / "fused.avi"
    result = run("--ir", str(tmp_path / "cut.avi"), "--vis", str(tmp_path / "vis.avi"), "--record", str(record))
    assert result.returncode == 2
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith(f"error: ir video {tmp_path / 'cut.avi'} ended after ") and "truncated or corrupt" in error
    delivered = int(error.split("ended after ")[1].split()[0])
    assert delivered >= 3
    assert f"summary: {delivered} frames fused" in result.stdout and "stopped by error" in result.stdout
    assert frame_count(record) == delivered  # nothing fused before the failure is lost


def test_different_sizes_work_with_one_warning(tmp_path: Path) -> None:
    write_video(tmp_path / "ir.avi", 8, size=(80, 64))
    write_video(tmp_path / "vis.avi", 8, size=(64, 48))
    snapshot = tmp_path / "mosaic.png"
    result = run("--ir", str(tmp_path / "ir.avi"), "--vis", str(tmp_path / "vis.avi"), "--snapshot", str(snapshot))
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert warnings == ["warning: IR frames are 80x64 but visible frames are 64x48: resizing IR to the visible grid "
                        "(without a calibration the fields of view are assumed to match)"]
    assert "summary: 8 frames fused" in result.stdout
    assert cv2.imread(str(snapshot)).shape == (48 + 26, 3 * 64, 3)  # IR | visible | fused + HUD strip


def test_different_lengths_stop_at_the_shorter_with_a_warning(tmp_path: Path) -> None:
    write_video(tmp_path / "ir.avi", 10)
    write_video(tmp_path / "vis.avi", 6)
    result = run("--ir", str(tmp_path / "ir.avi"), "--vis", str(tmp_path / "vis.avi"))
    assert result.returncode == 0, result.stderr
    assert "warning: visible source ended after 6 frames but the IR source has more: stopping at the shorter" in (
        result.stderr.splitlines()
    )
    assert "summary: 6 frames fused" in result.stdout


def test_every_option_sets_a_config_key_and_set_reaches_every_key() -> None:
    sys.path.insert(0, str(ROOT))
    try:
        import run_stream
    finally:
        sys.path.remove(str(ROOT))
    from stream_fusion.config import DEFAULT_CONFIG, load_yaml

    def leaves(node: dict, prefix: str = "") -> dict:
        out = {}
        for key, value in node.items():
            out.update(leaves(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
        return out

    defaults = leaves(load_yaml(DEFAULT_CONFIG))
    assert {key for _, key, _ in run_stream.OPTIONS} <= set(defaults)
    for key, value in defaults.items():
        if isinstance(value, bool):
            text, expected = str(not value).lower(), not value
        elif isinstance(value, (int, float)):
            text, expected = str(value + 1), value + 1
        else:  # strings and null defaults
            text, expected = "other", "other"
        config = run_stream.build_config(run_stream.parse_args(["--set", f"{key}={text}"]))
        assert leaves(config)[key] == expected, key
    config = run_stream.build_config(run_stream.parse_args(["--ir", "0", "--vis", "1", "--no-display", "--fps", "12",
                                                            "--set", "source.fps=15"]))
    assert (config["source"]["ir"], config["display"]["enabled"], config["source"]["fps"]) == ("0", False, 15.0)


def test_engine_cuda_graph_setting_reaches_the_engine_when_the_frame_size_is_known(caplog) -> None:
    from stream_fusion.engine import engine_from_config

    cfg = {"model": "default", "provider": "cpu", "cuda_graph": True}
    assert engine_from_config(cfg, (64, 48)).cuda_graph is True
    assert engine_from_config({**cfg, "cuda_graph": False}, (64, 48)).cuda_graph is False
    assert engine_from_config(cfg, None).cuda_graph is False  # no size: no graph, said once
    assert [r.getMessage() for r in caplog.records if "no CUDA graph" in r.getMessage()]
    assert engine_from_config({**cfg, "model": "classical"}, None).name == "classical"


@needs_xvfb
def test_window_shows_the_stream_and_q_quits(tmp_path: Path) -> None:
    """On a real (virtual) X display: the window opens, and pressing q in it ends the run cleanly."""
    process = None
    with virtual_display("1280x800x24") as display:
        env = {**environment(), "DISPLAY": display}
        try:
            args = [a for a in command("--zmq", "none", "--loop", "--realtime", "--fps", "20") if a != "--no-display"]
            process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                       cwd=ROOT)
            window = ""
            for _ in range(100):
                window = find_window("stream_fusion", env)
                if window:
                    break
                time.sleep(0.2)
            assert window, "no window appeared"
            time.sleep(0.5)
            out, err = press_q(process, window, env, timeout=15)
        finally:
            if process is not None:
                process.kill()
    assert process.returncode == 0, err
    assert "stopped by user (q, Esc or window closed)" in out
    assert "display switched off" not in err


def test_the_stream_fusion_console_script_runs_the_demo_from_anywhere(tmp_path: Path) -> None:
    """``pip install`` puts a ``stream-fusion`` command next to the interpreter (pyproject's [project.scripts]):
    from any folder it plays the bundled demo clip (found in the installed package, not the working folder), and bad
    input is one line with exit status 2."""
    script = Path(sys.executable).parent / ("stream-fusion.exe" if os.name == "nt" else "stream-fusion")
    assert script.is_file(), "install the project (pip install -e .) to get the stream-fusion command"
    result = subprocess.run([str(script), "--no-display", "--model", "classical", "--set", "source.realtime=false"],
                            cwd=tmp_path, env=environment(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("summary: 32 frames fused")
    result = subprocess.run([str(script), "--ir", "missing.mp4", "--vis", "missing.mp4"], cwd=tmp_path,
                            env=environment(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["error: ir source not found: missing.mp4 (expected a camera index, "
                                                  "URL, video file or image folder)"]


def test_live_cameras_that_drop_their_connection_are_reopened_and_counted() -> None:
    """Two live MJPEG cameras on 127.0.0.1 whose connections drop every 6 frames: the stream goes on through the
    reopenings (warned on stderr, counted in the summary) until SIGTERM, and exits 0."""
    from mjpeg import MjpegStream

    ir, vis = MjpegStream(per_connection=6, period_s=0.04), MjpegStream(per_connection=6, period_s=0.04)
    process = subprocess.Popen(command("--ir", ir.url, "--vis", vis.url, "--zmq", "none", "--reconnect", "5"),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment(), cwd=ROOT)
    try:
        time.sleep(3)
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=15)
    finally:
        process.kill()
        ir.close()
        vis.close()
    assert process.returncode == 0, err
    assert "stopped by SIGTERM" in out and "Traceback" not in err
    reconnects = dict(item.split() for item in out.split("reconnects: ")[1].splitlines()[0].split(", "))
    assert set(reconnects) == {"ir", "vis"} and all(int(n) >= 2 for n in reconnects.values())
    assert f"warning: ir stream {ir.url} stopped delivering frames: reconnecting (for up to 5 s)" in err
    assert int(out.split("summary: ")[1].split()[0]) > 0  # frames were fused across the drops
