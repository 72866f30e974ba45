"""The plain-pyzmq subscriber in docs/wire-format.md, run as printed, keeps up with recent frames and counts what it
missed when it is slower than the stream (issue #13 point 8: with ZeroMQ's default receive queue it fell behind)."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from stream_fusion.publish import LIVE_HWM, Publisher

ROOT = Path(__file__).resolve().parents[1]
# The example, with print() made slow: a reader whose work takes 50 ms a frame, against a 100 fps stream.
SLOW_READER = ("import builtins, sys, time\n"
               "_print = builtins.print\n"
               "builtins.print = lambda *a, **k: (time.sleep(0.05), _print(*a, **k, flush=True))\n"
               "exec(compile(open(sys.argv[1]).read(), 'example', 'exec'))\n")


def docs_example() -> str:
    """The first Python block after '## Receiving' in docs/wire-format.md."""
    text = (ROOT / "docs" / "wire-format.md").read_text()
    section = text[text.index("## Receiving"):]
    start = section.index("```python\n") + len("```python\n")
    return section[start:section.index("```", start)]


def test_docs_plain_pyzmq_subscriber_stays_current_when_slower_than_the_stream(tmp_path: Path) -> None:
    image = np.zeros((48, 64), np.uint8)
    with Publisher("tcp://127.0.0.1:*", hwm=LIVE_HWM) as publisher:  # a live stream's publisher, as run_stream's
        example = tmp_path / "example.py"
        example.write_text(docs_example().replace("tcp://127.0.0.1:5555", publisher.endpoint))
        reader = subprocess.Popen([sys.executable, "-c", SLOW_READER, str(example)], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        try:
            assert publisher.wait_for_subscriber(30)
            index, started = 0, time.monotonic()
            while time.monotonic() - started < 4:
                now = time.time()
                publisher.send(image, {"index": index, "t_capture_ir": now, "t_capture_vis": now,
                                       "latency_ms": {"total": 1.0}})
                index += 1
                time.sleep(max(0.0, 0.01 - (time.time() - now)))
            time.sleep(0.3)  # the reader prints what it holds
        finally:
            reader.kill()
            out, err = reader.communicate(timeout=10)
    lines = out.splitlines()
    assert len(lines) > 20, err
    printed = [int(line.split()[0]) for line in lines]
    # A reader at ~20 fps against 100 fps: it must be showing one of the newest frames, not frame ~80 of ~400.
    assert printed[-1] >= index - 30, f"last frame shown {printed[-1]}, last frame sent {index - 1}"
    assert "ms ago" in lines[-1] and int(lines[-1].split("captured ")[1].split()[0]) < 1000
    assert int(lines[-1].split(", ")[-1].split()[0]) > index / 2  # and it says how many it missed
