"""What a new user meets first, through the real commands (subprocesses): --help with every default, the one short
line a CPU-only box prints about ONNX Runtime, and the one line a box without ONNX Runtime gets."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
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


WITHOUT_ONNXRUNTIME = """
import runpy, sys
sys.modules["onnxruntime"] = None  # as on a base install: 'import onnxruntime' raises ModuleNotFoundError
target, *sys.argv[1:] = sys.argv[1:]
if target.endswith(".py"):
    sys.argv[0] = target
    runpy.run_path(target, run_name="__main__")
else:
    sys.argv[0] = target
    runpy.run_module(target, run_name="__main__", alter_sys=True)
"""


@pytest.mark.parametrize("command", [
    [str(ROOT / "run_stream.py"), "--no-display", "--zmq", "none"],
    ["stream_fusion.bench", "--sizes", "64x48", "--presets", "lite"],
    ["stream_fusion.bench.profile_engine"],
    ["stream_fusion.batch", "--ir", "{ir}", "--vis", "{vis}", "--out", "{out}"],
], ids=["run_stream", "bench", "profile_engine", "batch"])
def test_without_onnx_runtime_every_command_names_the_extras_in_one_line(tmp_path: Path, command: list[str]) -> None:
    """The base install carries no ONNX Runtime (the CPU and GPU builds are the extras [cpu] and [gpu])."""
    from stream_fusion import DEMO_IR, DEMO_VIS

    fill = {"ir": str(DEMO_IR), "vis": str(DEMO_VIS), "out": str(tmp_path / "fused")}
    result = subprocess.run([sys.executable, "-c", WITHOUT_ONNXRUNTIME, *(arg.format(**fill) for arg in command)],
                            capture_output=True, text=True, timeout=120, env=environment(), cwd=ROOT)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "error: ONNX Runtime is not installed: install stream-fusion[cpu] or stream-fusion[gpu]")
    assert "Traceback" not in result.stderr


def test_without_onnx_runtime_the_classical_fuser_still_streams() -> None:
    """Nothing that runs no network needs ONNX Runtime: the classical fuser streams the demo clip."""
    result = subprocess.run([sys.executable, "-c", WITHOUT_ONNXRUNTIME, str(ROOT / "run_stream.py"), "--no-display",
                             "--zmq", "none", "--model", "classical", "--set", "source.realtime=false"],
                            capture_output=True, text=True, timeout=120, env=environment(), cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("summary: 32 frames fused")
