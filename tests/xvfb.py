"""A virtual X display for the window tests (skipped where Xvfb and xdotool are not installed)."""
from __future__ import annotations

import os
import select
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

needs_xvfb = pytest.mark.skipif(not (shutil.which("Xvfb") and shutil.which("xdotool")), reason="needs Xvfb and xdotool")


@contextmanager
def virtual_display(screen: str = "1280x800x24") -> Iterator[str]:
    """Yield a ``$DISPLAY`` value once its Xvfb server accepts connections; stop the server cleanly afterwards.

    ``-displayfd`` lets Xvfb pick a free display number itself and report it when it is ready, so parallel runs and
    stale lock files of killed servers cannot make two tests share, or wait on, a display.
    """
    read_fd, write_fd = os.pipe()
    server = subprocess.Popen(["Xvfb", "-displayfd", str(write_fd), "-screen", "0", screen, "-nolisten", "tcp"],
                              pass_fds=(write_fd,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(write_fd)
    try:
        with os.fdopen(read_fd) as pipe:
            ready, _, _ = select.select([pipe], [], [], 30)
            number = pipe.readline().strip() if ready else ""
        if not number.isdigit():
            pytest.fail("Xvfb did not report a display within 30 s")
        yield f":{number}"
    finally:
        server.terminate()  # SIGTERM: Xvfb removes its socket and lock file (SIGKILL leaves them behind)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def find_window(name: str, env: dict[str, str]) -> str:
    """The id of a window whose title contains ``name`` on ``env``'s display, or "" while there is none."""
    found = subprocess.run(["xdotool", "search", "--name", name], capture_output=True, text=True, env=env)
    return found.stdout.split()[0] if found.stdout.split() else ""


def press_q(process: subprocess.Popen, window: str, env: dict[str, str], timeout: float) -> tuple[str, str]:
    """Press q in ``window`` as a user would, and return the process's (stdout, stderr) once it has ended."""
    subprocess.run(["xdotool", "key", "--window", window, "q"], env=env, capture_output=True)
    return process.communicate(timeout=timeout)
