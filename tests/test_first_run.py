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


def test_a_cpu_run_says_at_most_one_short_line_about_onnx_runtime_and_the_details_on_request() -> None:
    """The GPU build on a box without CUDA used to print each provider's missing library on every run."""
    args = [sys.executable, str(ROOT / "run_stream.py"), "--no-display", "--zmq", "none", "--set",
            "source.realtime=false"]
    quiet = subprocess.run(args, capture_output=True, text=True, timeout=120, env=environment(), cwd=ROOT)
    assert quiet.returncode == 0, quiet.stderr
    lines = [line for line in quiet.stderr.splitlines() if "onnxruntime" in line]
    assert len(lines) <= 1 and all(len(line) <= 110 and ".so" not in line for line in lines), lines
    told = subprocess.run(args, capture_output=True, text=True, timeout=120, env=environment(STREAM_FUSION_VERBOSE="1"),
                          cwd=ROOT)
    assert told.returncode == 0, told.stderr
    lines = [line for line in told.stderr.splitlines() if "onnxruntime" in line]
    assert len(lines) == 1 and lines[0].startswith("warning: onnxruntime: running on CPU; unavailable: tensorrt: ")
