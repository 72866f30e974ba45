"""What a new user meets first, through the real commands (subprocesses): --help with every default, the one short
line a CPU-only box prints about ONNX Runtime, and the one line a box without ONNX Runtime gets."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from stream_fusion.config import DEFAULT_CONFIG

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import run_stream  # noqa: E402 - the checkout's command, for its option table


def environment(**extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in ("DISPLAY", "STREAM_FUSION_VERBOSE")}
    return {**env, **extra}


def test_help_shows_every_default_and_the_demo_clip() -> None:
    result = subprocess.run([sys.executable, str(ROOT / "run_stream.py"), "--help"], capture_output=True, text=True,
                            timeout=60, env=environment(COLUMNS="200"), cwd=ROOT)
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    defaults = yaml.safe_load(DEFAULT_CONFIG.read_text())
    for _, key, _ in run_stream.OPTIONS:
        value = defaults
        for part in key.split("."):
            value = value[part]
        shown = "none" if value is None else str(value).lower() if isinstance(value, bool) else value
        assert f"[{key}, default {shown}]" in text, key
    assert "[publish.zmq, default tcp://127.0.0.1:5555]" in text and "[source.reconnect_s, default 10.0]" in text
    assert "Without --ir and --vis it plays the bundled demo clip." in text
    assert f"all defaults: {DEFAULT_CONFIG}" in text
