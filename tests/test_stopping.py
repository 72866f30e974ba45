"""Stopping run_stream.py (#13 point 7) as users do: real subprocesses and real signals. Two Ctrl-C in a row, a
stop during a long fusion call, a stop during start-up, a kill while recording, and numbers that are not finite."""
from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from test_run_stream import ROOT, command, environment, frame_count


def start(*args: str, model: str = "classical") -> subprocess.Popen:
    return subprocess.Popen(command("--zmq", "none", *args, model=model), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=environment(), cwd=ROOT)


def wait_streaming(process: subprocess.Popen) -> None:
    """Until the start line is printed: start-up is over, the stream runs."""
    line = process.stderr.readline()
    while line and not line.startswith("stream_fusion: IR "):
        line = process.stderr.readline()
    assert line, "run_stream.py ended before streaming"


def recorded(out: str) -> int:
    return int(out.split("recorded ")[1].split(";")[0].split()[0].rstrip(","))


def test_two_sigints_50_ms_apart_still_give_the_summary_and_a_complete_recording(tmp_path: Path) -> None:
    record = tmp_path / "fused.mkv"
    process = start("--loop", "--realtime", "--fps", "30", "--record", str(record))
    try:
        wait_streaming(process)
        time.sleep(1.0)  # frames are being recorded
        process.send_signal(signal.SIGINT)
        time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=20)
    finally:
        process.kill()
    assert process.returncode == 0, err
    assert "stopped by SIGINT" in out and "Traceback" not in err
    assert "SIGINT again: finishing the recording and the summary now" in err
    assert recorded(out) >= 10 and frame_count(record) == recorded(out)


def test_a_third_signal_quits_at_once_with_one_line() -> None:
    # a fusion call that takes seconds (a 2560x1440 pair through the network on the CPU) keeps the stop waiting...
    # except that it is cancelled; so block the stop differently: three signals within a few ms
    process = start("--loop", "--realtime", "--fps", "30")
    try:
        wait_streaming(process)
        for _ in range(3):
            process.send_signal(signal.SIGTERM)
            time.sleep(0.002)
        out, err = process.communicate(timeout=20)
    finally:
        process.kill()
    assert "Traceback" not in err
    # the stop may have finished between two signals (exit 0 with the summary) or the third may have come first
    if process.returncode == 130:
        assert err.strip().splitlines()[-1] == \
            "error: SIGTERM a third time: quit at once; the recording, if any, is unfinished"
    else:
        assert process.returncode == 0 and "stopped by SIGTERM" in out


def test_a_stop_during_a_long_fusion_call_cancels_it_and_exits_cleanly(tmp_path: Path) -> None:
    """A 2560x1440 pair takes seconds through the network on the CPU. Stopping in the middle of that call used to
    print the summary, then die of SIGABRT: the ONNX Runtime session was torn down at exit under the run."""
    for role in ("ir", "vis"):
        (tmp_path / role).mkdir()
        for i in range(2):
            image = np.random.default_rng(i).integers(0, 255, (1440, 2560, 3), dtype=np.uint8)
            cv2.imwrite(str(tmp_path / role / f"{i}.png"), image)
    process = start("--ir", str(tmp_path / "ir"), "--vis", str(tmp_path / "vis"), "--provider", "cpu",
                    model="default")
    try:
        wait_streaming(process)
        time.sleep(1.0)  # the first pair is in the network now
        stopped = time.monotonic()
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
        took = time.monotonic() - stopped
    finally:
        process.kill()
    assert process.returncode == 0, (process.returncode, err)
    assert "stopped by SIGINT" in out and "Traceback" not in err
    assert took < 5.0  # cancelled, not waited out (each call takes several seconds here)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_during_start_up_is_one_line_and_exit_130(signum: int) -> None:
    """Sent while the network's session is being built (ONNX Runtime is loaded into the process by then)."""
    process = start(model="default")
    try:
        deadline = time.monotonic() + 60
        maps = Path(f"/proc/{process.pid}/maps")
        while "onnxruntime" not in maps.read_text() and time.monotonic() < deadline:
            time.sleep(0.01)
        process.send_signal(signum)
        out, err = process.communicate(timeout=30)
    finally:
        process.kill()
    name = signal.Signals(signum).name
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    if process.returncode == 130:  # it was still starting up
        assert err.strip().splitlines()[-1] == f"stopped by {name} during start-up: nothing was fused"
        assert "summary" not in out
    else:  # start-up was already over: a normal clean stop
        assert process.returncode == 0 and f"stopped by {name}" in out


def test_a_killed_recording_stays_readable(tmp_path: Path) -> None:
    record = tmp_path / "fused.mkv"
    process = start("--loop", "--realtime", "--fps", "30", "--record", str(record))
    try:
        wait_streaming(process)
        time.sleep(2.0)
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=20)
    finally:
        process.kill()
    assert frame_count(record) >= 20  # ~60 written; the last few may still have been in the muxer's buffer


def test_recording_to_an_mp4_warns_that_a_kill_would_lose_it(tmp_path: Path) -> None:
    result = subprocess.run(command("--zmq", "none", "--record", str(tmp_path / "fused.mp4")), capture_output=True,
                            text=True, timeout=120, env=environment(), cwd=ROOT)
    assert result.returncode == 0
    assert "warning: recording to fused.mp4: if this process is killed the file will not open" in result.stderr


@pytest.mark.parametrize("args, key, value", [
    (["--fps", "inf", "--realtime", "--record", "x.mp4"], "source.fps", "inf"),  # used to hang for good
    (["--tolerance-ms", "nan"], "sync.tolerance_ms", "nan"),
    (["--set", "align.threshold_px=.inf"], "align.threshold_px", "inf"),
    (["--reconnect=-inf"], "source.reconnect_s", "-inf"),
])
def test_numbers_that_are_not_finite_are_refused_in_one_line(tmp_path: Path, args: list[str], key: str,
                                                              value: str) -> None:
    result = subprocess.run(command("--zmq", "none", *args), capture_output=True, text=True, timeout=60,
                            env=environment(), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: config key '{key}' must be a finite number, got {value}"]
