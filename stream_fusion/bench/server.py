"""A ``python -m stream_fusion.serve`` process that a benchmark or a test starts, waits for, stops and restarts.

The server runs in its own interpreter (``.venv-serve``: pytriton needs numpy<2), on free ports of 127.0.0.1, in a
session of its own so that stopping it stops its tritonserver too.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from stream_fusion import PACKAGE_DIR
from stream_fusion.errors import StreamFusionError

CHECKOUT = PACKAGE_DIR.parent
SERVE_PYTHON = CHECKOUT / ".venv-serve" / "bin" / "python"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ServerProcess:
    """One fusion server; ``start()`` returns once every model answers, ``stop()`` ends it (SIGTERM, then SIGKILL of
    its whole session), ``start()`` again brings it back on the same ports."""

    def __init__(self, models: list[str], *, python: Path = SERVE_PYTHON, provider: str = "cpu",
                 threads: int | None = None) -> None:
        if not python.is_file():
            raise StreamFusionError(f"no server interpreter at {python}: python3 -m venv .venv-serve && "
                                    ".venv-serve/bin/pip install -e '.[serve]' (README)")
        self.models, self.python, self.provider, self.threads = models, python, provider, threads
        self.grpc_port, self.http_port, self.metrics_port = free_port(), free_port(), free_port()
        self.process: subprocess.Popen | None = None
        self.log = Path(tempfile.mkstemp(prefix="stream_fusion_serve_", suffix=".log")[1])

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def url(self, model: str) -> str:
        return f"triton://{self.address}/{model}"

    def start(self, timeout_s: float = 180.0) -> None:
        command = [str(self.python), "-m", "stream_fusion.serve", "--models", ",".join(self.models),
                   "--grpc-port", str(self.grpc_port), "--http-port", str(self.http_port),
                   "--metrics-port", str(self.metrics_port), "--provider", self.provider]
        if self.threads:
            command += ["--threads", str(self.threads)]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=CHECKOUT,
                                            start_new_session=True)
        self.wait_ready(timeout_s)

    def wait_ready(self, timeout_s: float) -> None:
        import tritonclient.grpc as grpcclient

        client = grpcclient.InferenceServerClient(self.address)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise StreamFusionError(f"the fusion server exited ({self.process.returncode}): "
                                        f"{self.log.read_text()[-2000:]}")
            try:
                if all(client.is_model_ready(model) for model in self.models):
                    return
            except Exception:  # noqa: BLE001 - not listening yet
                pass
            time.sleep(0.5)
        self.stop()
        raise StreamFusionError(f"the fusion server did not get ready in {timeout_s:.0f} s: "
                                f"{self.log.read_text()[-2000:]}")

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        """SIGTERM (pytriton stops tritonserver and cleans its workspace), then SIGKILL of the session after 15 s."""
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            pass
        except ProcessLookupError:
            return
        try:
            os.killpg(self.process.pid, signal.SIGKILL)  # whatever of its session is left (tritonserver, stubs)
        except ProcessLookupError:
            pass
        self.process.wait()
