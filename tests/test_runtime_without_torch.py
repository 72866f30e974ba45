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
import stream_fusion.engine.remote, stream_fusion.serve
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
    network); nor must the remote engine (an edge box that leaves the network to a fusion server)."""
    script = ("import sys; import stream_fusion.align, stream_fusion.calibrate, stream_fusion.engine.frames, "
              "stream_fusion.engine.remote; "
              "print(sorted(m for m in ('onnx', 'onnxruntime', 'torch') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
