"""Credentials in a source URL never leave the process: not in frames, lines, logs or files (issue #13 point 2)."""
from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
import zmq

from stream_fusion.redact import redact
from test_run_stream import ROOT, command, environment, free_port

SECRETS = ("s3cret", "t0ps3cret", "hunter2")


@pytest.mark.parametrize(("spec", "expected"), [
    ("rtsp://admin:s3cret@10.0.0.7:554/stream?channel=1", "rtsp://***@10.0.0.7:554/stream?channel=1"),
    ("rtsp://admin@10.0.0.7/stream", "rtsp://***@10.0.0.7/stream"),
    ("rtsp://u:p@ss@host/x", "rtsp://***@host/x"),  # an @ inside the password: the host is after the last one
    ("http://cam/video.mjpg?user=admin&pwd=s3cret&fps=10", "http://cam/video.mjpg?user=***&pwd=***&fps=10"),
    ("https://s3/v.mp4?X-Amz-Credential=a&X-Amz-Signature=b", "https://s3/v.mp4?X-Amz-Credential=***&X-Amz-Signature=***"),
    ("http://cam/v?access_token=abc#auth=def", "http://cam/v?access_token=***#auth=***"),
    ("http://a:s3cret@[::1/x?api_key=k", "http://***@[::1/x?api_key=***"),  # not a valid URL: masked by pattern
    ("0", "0"),
    ("videos/ir.mp4", "videos/ir.mp4"),
    ("http://cam:8080/video.mjpg", "http://cam:8080/video.mjpg"),
])
def test_redact_masks_user_info_and_token_like_query_values(spec: str, expected: str) -> None:
    assert redact(spec) == expected


def test_unreachable_camera_with_a_password_fails_without_showing_it() -> None:
    result = subprocess.run(command("--ir", "http://admin:s3cret@127.0.0.1:1/video.mjpg?token=t0ps3cret",
                                    "--vis", "http://127.0.0.1:1/v.mjpg", "--zmq", "none", "--reconnect", "0"),
                            capture_output=True, text=True, timeout=60, env=environment(), cwd=ROOT)
    assert result.returncode == 2
    assert result.stderr.strip() == ("error: cannot open ir stream http://***@127.0.0.1:1/video.mjpg?token=***: "
                                     "unreachable or not a video")
    assert not any(secret in result.stdout + result.stderr for secret in SECRETS)


def test_a_camera_url_with_credentials_is_masked_in_frames_lines_logs_and_recording(tmp_path: Path) -> None:
    """The real pipeline on two live MJPEG cameras on 127.0.0.1 whose URLs carry a password and a token, and whose
    connections drop every 6 frames (so the reconnect warnings, which name the source, are printed too)."""
    from mjpeg import MjpegStream

    ir, vis = MjpegStream(per_connection=6, period_s=0.04), MjpegStream(per_connection=6, period_s=0.04)
    ir_url = ir.url.replace("http://", "http://admin:s3cret@") + "?token=t0ps3cret&fps=25"
    vis_url = vis.url + "?user=operator&password=hunter2"
    port = free_port()
    context = zmq.Context()
    sub = context.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(f"tcp://127.0.0.1:{port}")
    record = tmp_path / "fused.mp4"
    process = subprocess.Popen(
        command("--ir", ir_url, "--vis", vis_url, "--zmq", f"tcp://127.0.0.1:{port}", "--reconnect", "5",
                "--record", str(record), "--snapshot", str(tmp_path / "last.png")),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment(), cwd=ROOT)
    headers: list[bytes] = []
    try:
        deadline = time.monotonic() + 30
        while len(headers) < 10 and time.monotonic() < deadline and process.poll() is None:
            if sub.poll(200):
                headers.append(sub.recv_multipart()[0])
        time.sleep(1.5)  # through another reconnection of each camera
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=15)
    finally:
        process.kill()
        ir.close()
        vis.close()
        context.destroy(linger=0)
    assert process.returncode == 0, err
    assert len(headers) >= 10, err
    meta = json.loads(headers[0])["meta"]
    assert meta["source"] == {"ir": redact(ir_url), "vis": redact(vis_url)}
    assert meta["source"]["ir"].startswith("http://***@127.0.0.1:") and "token=***&fps=25" in meta["source"]["ir"]
    assert "reconnecting" in err and f"IR {redact(ir_url)} + visible {redact(vis_url)}" in err
    written = b"".join(path.read_bytes() for path in tmp_path.iterdir())
    for secret in SECRETS:
        assert secret not in out and secret not in err
        assert all(secret.encode() not in header for header in headers)
        assert secret.encode() not in written
