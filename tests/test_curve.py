"""A secured stream (issue #13 point 3): CURVE certificates made by stream_fusion.keys, a publisher that serves only
the subscribers in its clients/ folder and counts the ones it refuses, real sockets on 127.0.0.1."""
from __future__ import annotations

import logging
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zmq
import zmq.auth

from stream_fusion.curve import NO_CURVE, NOT_ALLOWED
from stream_fusion.errors import StreamFusionError
from stream_fusion.keys import main as keys_main
from stream_fusion.publish import Publisher
from test_run_stream import ROOT, command, environment, free_port

FRAME = np.full((48, 64, 3), 90, np.uint8)


def make_keys(folder: Path, *clients: str) -> None:
    assert keys_main([str(folder), *[arg for name in clients for arg in ("--client", name)]]) == 0


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A publisher's folder allowing 'viewer', plus a stranger's certificate that is not allowed."""
    folder = tmp_path_factory.mktemp("keys")
    make_keys(folder, "viewer")
    zmq.auth.create_certificates(folder.parent, "stranger")
    return folder


def subscribe(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stream_fusion.subscribe", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def start_subscriber(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "stream_fusion.subscribe", *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def publish_while(publisher: Publisher, process: subprocess.Popen, seconds: float = 20) -> None:
    """Publish frames at about 50 fps until ``process`` ends (or ``seconds`` pass)."""
    deadline = time.monotonic() + seconds
    index = 0
    while process.poll() is None and time.monotonic() < deadline:
        publisher.send(FRAME, {"index": index})
        index += 1
        time.sleep(0.02)


def test_keys_command_writes_pyzmq_certificates_and_keeps_the_server_pair(tmp_path: Path, capsys) -> None:
    folder = tmp_path / "keys"
    make_keys(folder, "viewer", "wall-2")
    names = sorted(str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file())
    assert names == ["clients/viewer.key", "clients/wall-2.key", "server.key", "server.key_secret",
                     "viewer.key_secret", "wall-2.key_secret"]
    for secret in ("server.key_secret", "viewer.key_secret"):
        assert stat.S_IMODE((folder / secret).stat().st_mode) == 0o600
        public, secret_key = zmq.auth.load_certificate(folder / secret)
        assert len(public) == 40 and secret_key is not None and len(secret_key) == 40
    assert zmq.auth.load_certificate(folder / "clients/viewer.key")[0] == zmq.auth.load_certificate(
        folder / "viewer.key_secret")[0]
    server = (folder / "server.key_secret").read_bytes()
    make_keys(folder, "third")  # adding a client later must not replace the publisher's pair
    assert (folder / "server.key_secret").read_bytes() == server
    assert "kept the existing publisher keys" in capsys.readouterr().out
    with pytest.raises(StreamFusionError, match="client 'viewer' has keys already"):
        keys_main([str(folder), "--client", "viewer"])
    with pytest.raises(StreamFusionError, match="client name 'server'"):
        keys_main([str(folder), "--client", "server"])
    with pytest.raises(StreamFusionError, match="client name '../x'"):
        keys_main([str(folder), "--client", "../x"])


def test_allowed_subscriber_receives_encrypted_frames(keys: Path) -> None:
    with Publisher("tcp://127.0.0.1:*", keys=keys) as publisher:
        process = start_subscriber(publisher.endpoint, "--count", "3", "--timeout", "20",
                                   "--keys", str(keys / "viewer.key_secret"), "--server-key", str(keys / "server.key"))
        publish_while(publisher, process)
        out, err = process.communicate(timeout=20)
        assert process.returncode == 0, err
        assert "summary: 3 frames received" in out and f"subscribed to {publisher.endpoint} (CURVE)" in err
        assert publisher.sent >= 3 and publisher.refused == {}
        assert "0 subscriber handshakes refused" in publisher.summary()


def test_unknown_subscriber_gets_nothing_is_told_why_and_is_counted(keys: Path) -> None:
    with Publisher("tcp://127.0.0.1:*", keys=keys) as publisher:
        process = start_subscriber(publisher.endpoint, "--timeout", "20",
                                   "--keys", str(keys.parent / "stranger.key_secret"),
                                   "--server-key", str(keys / "server.key"))
        publish_while(publisher, process)
        out, err = process.communicate(timeout=20)
        assert process.returncode == 2 and "frame " not in out
        assert err.strip().splitlines()[-1] == (
            f"error: cannot subscribe to {publisher.endpoint}: the publisher refused this subscriber's key: its public"
            " NAME.key must be in the publisher's key folder, under clients/")
        assert publisher.sent == 0 and publisher.refused.get(NOT_ALLOWED, 0) >= 1
        assert f"{NOT_ALLOWED} " in publisher.summary()


def test_plain_subscriber_against_a_curve_publisher_gets_nothing_and_is_counted(keys: Path) -> None:
    with Publisher("tcp://127.0.0.1:*", keys=keys) as publisher:
        context = zmq.Context()
        plain = context.socket(zmq.SUB)  # what an imagezmq hub or the docs' pyzmq loop opens
        plain.setsockopt(zmq.SUBSCRIBE, b"")
        plain.connect(publisher.endpoint)
        received = 0
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            publisher.send(FRAME, {"index": 0})
            received += plain.poll(20) and len(plain.recv_multipart()) > 0
        context.destroy(linger=0)
        assert received == 0 and publisher.sent == 0
        assert publisher.refused.get(NO_CURVE, 0) >= 1
        our_cli = subscribe(publisher.endpoint, "--timeout", "10")
        assert our_cli.returncode == 2
        assert "the publisher uses CURVE (give --keys NAME.key_secret --server-key server.key)" in our_cli.stderr


def test_run_stream_publishes_with_keys_and_reports_refusals(keys: Path) -> None:
    port = free_port()
    stranger = start_subscriber(f"tcp://127.0.0.1:{port}", "--timeout", "60",
                                "--keys", str(keys.parent / "stranger.key_secret"), "--server-key", str(keys / "server.key"))
    viewer = start_subscriber(f"tcp://127.0.0.1:{port}", "--count", "32", "--all", "--timeout", "60",
                              "--keys", str(keys / "viewer.key_secret"), "--server-key", str(keys / "server.key"))
    try:
        result = subprocess.run(command("--zmq", f"tcp://127.0.0.1:{port}", "--zmq-keys", str(keys),
                                        "--wait-subscriber", "20", "--realtime", "--fps", "30"),
                                capture_output=True, text=True, timeout=120, env=environment(), cwd=ROOT)
        out, _ = viewer.communicate(timeout=30)
        stranger_out, stranger_err = stranger.communicate(timeout=30)
    finally:
        viewer.kill()
        stranger.kill()
    assert result.returncode == 0, result.stderr
    assert f"publishing on tcp://127.0.0.1:{port} (CURVE)" in result.stderr
    assert "summary: 32 frames received, 0 missed" in out
    assert stranger.returncode == 2 and "refused this subscriber's key" in stranger_err
    published = next(line for line in result.stdout.splitlines() if line.startswith("  published"))
    assert published.startswith("  published 32 frames: 32 to subscribers, 0 while none was subscribed, 0 dropped")
    assert f"subscriber handshakes refused ({NOT_ALLOWED} 1)" in published
    assert "warning: refused a subscriber: its key is not in" in result.stderr


def corrupt(folder: Path, name: str) -> None:
    (folder / name).write_text("curve\n    public-key = \"not a key\"\n")


@pytest.mark.parametrize(("breakage", "message"), [
    (lambda f: shutil.rmtree(f), "CURVE key folder {f} does not exist"),
    (lambda f: (f / "server.key_secret").unlink(), "CURVE secret certificate (NAME.key_secret) not found: {f}/server.key_secret"),
    (lambda f: corrupt(f, "server.key_secret"), "{f}/server.key_secret holds no valid public key"),
    (lambda f: (f / "server.key_secret").write_bytes(b"\xff\xfe\x00garbage"), "cannot read CURVE certificate {f}/server.key_secret: No public key found"),
    (lambda f: (f / "clients/viewer.key").unlink(), "no subscriber keys in {f}/clients: nobody could subscribe"),
    (lambda f: corrupt(f, "clients/viewer.key"), "{f}/clients/viewer.key holds no valid public key"),
])
def test_missing_or_bad_key_files_are_one_line_errors_exit_2(tmp_path: Path, breakage, message: str) -> None:
    folder = tmp_path / "keys"
    make_keys(folder, "viewer")
    breakage(folder)
    result = subprocess.run(command("--zmq", f"tcp://127.0.0.1:{free_port()}", "--zmq-keys", str(folder)),
                            capture_output=True, text=True, timeout=120, env=environment(), cwd=ROOT)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: " + message.format(f=folder)), result.stderr


def test_subscriber_with_bad_key_files_is_a_one_line_error(keys: Path, tmp_path: Path) -> None:
    missing = subscribe("tcp://127.0.0.1:5555", "--keys", str(tmp_path / "none.key_secret"),
                        "--server-key", str(keys / "server.key"))
    public_only = subscribe("tcp://127.0.0.1:5555", "--keys", str(keys / "server.key"),
                            "--server-key", str(keys / "server.key"))
    alone = subscribe("tcp://127.0.0.1:5555", "--keys", str(keys / "viewer.key_secret"))
    assert missing.stderr == f"error: CURVE secret certificate (NAME.key_secret) not found: {tmp_path}/none.key_secret " \
                             "(create certificates with python -m stream_fusion.keys)\n"
    assert public_only.stderr.startswith(f"error: {keys}/server.key holds no valid secret key")
    assert alone.stderr.startswith("error: --keys and --server-key go together")
    assert {missing.returncode, public_only.returncode, alone.returncode} == {2}


def test_binding_beyond_loopback_without_keys_warns_once(keys: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="stream_fusion.publish"):
        with Publisher("tcp://127.0.0.1:*"):
            pass
        assert caplog.records == []
        with Publisher("tcp://0.0.0.0:*", keys=keys):
            pass
        assert caplog.records == []
        with Publisher("tcp://0.0.0.0:*") as publisher:
            for _ in range(3):
                publisher.send(FRAME, {})
    assert [record.getMessage() for record in caplog.records] == [
        f"publishing on {publisher.endpoint} without authentication or encryption: anyone who can reach this port sees"
        " the video; secure it with --zmq-keys DIR (python -m stream_fusion.keys DIR --client NAME)"]
