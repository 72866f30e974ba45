"""A deployment box runs ONNX only: the runtime must import and fuse with torch absent."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = """
import sys
sys.modules["torch"] = None  # any 'import torch' now raises ImportError
import cv2
import run_stream, stream_fusion.calibrate, stream_fusion.evaluate, stream_fusion.batch, stream_fusion.subscribe
from stream_fusion import DEMO_IR, DEMO_VIS
from stream_fusion.engine import create_engine
engine = create_engine("default", "cpu")
ir = cv2.imread(str(DEMO_IR / "1810.png"), cv2.IMREAD_GRAYSCALE)
vis = cv2.imread(str(DEMO_VIS / "1810.png"), cv2.IMREAD_GRAYSCALE)
fused = engine.fuse(ir, vis)
print(engine.name, engine.provider, fused.shape, fused.dtype)
"""


def test_runtime_imports_and_fuses_without_torch() -> None:
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[-2] == "DiffFuseNet-lite cpu (270, 360) uint8"


def test_alignment_calibration_and_frame_helpers_load_without_onnx_runtime() -> None:
    """The alignment check, the calibration and the engine's frame helpers need numpy and OpenCV only: importing them
    must not load ONNX Runtime or onnx (a calibration box, the training data and the evaluation do not run a
    network)."""
    script = ("import sys; import stream_fusion.align, stream_fusion.calibrate, stream_fusion.engine.frames; "
              "print(sorted(m for m in ('onnx', 'onnxruntime', 'torch') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_the_engine_benchmark_runs_without_torch_and_says_what_it_skipped() -> None:
    """``python -m stream_fusion.bench`` on a deployment install: the shipped ONNX files timed on every provider here,
    the torch rows skipped with a note (it ended in a ModuleNotFoundError traceback)."""
    script = ("import runpy, sys; sys.modules['torch'] = None; "
              "sys.argv = ['bench', '--sizes', '64x48', '--presets', 'lite', '--iters', '3', '--budget', '1']; "
              "runpy.run_module('stream_fusion.bench', run_name='__main__', alter_sys=True)")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    rows = [line.split(" | ") for line in result.stdout.splitlines() if line.startswith("| lite | 64x48 |")]
    assert {(row[2], row[3]) for row in rows} >= {("engine", "cpu"), ("engine+warp", "cpu"), ("session", "cpu")}
    assert not any(row[2].startswith("torch") for row in rows)
    assert "weights lite: shipped difffuse_lite.onnx" in result.stdout
    assert "torch not installed" in result.stdout
    assert "not timed: torch: torch is not installed (a deployment install): no torch rows" in result.stdout
