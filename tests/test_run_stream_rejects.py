"""Inputs that are no use, refused by run_stream.py as users run it (a subprocess): frames too small to be a camera's,
a calibration that puts the IR off the frame, a network with NaN weights, a folder given as the recording. Each gets
one line on stderr and exit 2, never a traceback and never a run that fuses nothing useful."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
import yaml

from stream_fusion import DEMO_CALIBRATION
from stream_fusion.align import MIN_COVERAGE, load_calibration
from stream_fusion.capture import MIN_FRAME_SIDE
from stream_fusion.engine import SHIPPED_MODELS

ROOT = Path(__file__).resolve().parents[1]
DEMO_VIS = ROOT / "stream_fusion" / "assets" / "nato_camp" / "vis"


def run(*args: str) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key != "DISPLAY"}
    return subprocess.run([sys.executable, str(ROOT / "run_stream.py"), "--no-display", "--zmq", "none", *args],
                          capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)


def assert_one_line_error(result: subprocess.CompletedProcess, message: str) -> None:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert [line for line in lines if line.startswith("error")] == [lines[-1]], lines
    assert lines[-1].startswith("error: " + message), lines


def image_folder(folder: Path, sizes: list[tuple[int, int]]) -> Path:
    """A folder of noise images of the given (w, h) sizes, in order."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i, (w, h) in enumerate(sizes):
        cv2.imwrite(str(folder / f"{i:03d}.png"), rng.integers(0, 255, (h, w), dtype=np.uint8))
    return folder


@pytest.mark.parametrize("size", [(1, 1), (640, 1), (1, 480), (15, 64)])
def test_frames_below_the_minimum_size_are_refused_at_the_source(tmp_path: Path, size: tuple[int, int]) -> None:
    ir = image_folder(tmp_path / "ir", [size] * 3)
    vis = image_folder(tmp_path / "vis", [(64, 48)] * 3)
    result = run("--ir", str(ir), "--vis", str(vis), "--model", "classical")
    assert_one_line_error(result, f"ir source {ir} delivers {size[0]}x{size[1]} frames: at least "
                                  f"{MIN_FRAME_SIDE}x{MIN_FRAME_SIDE} px are needed")
    assert "summary" not in result.stdout  # refused at open: nothing started


def test_a_tiny_frame_mid_stream_ends_the_stream_with_one_line(tmp_path: Path) -> None:
    """A source whose size is only known frame by frame (a camera changing mode): the frames before count."""
    ir = image_folder(tmp_path / "ir", [(64, 48)] * 3 + [(640, 1)] + [(64, 48)] * 2)
    vis = image_folder(tmp_path / "vis", [(64, 48)] * 6)
    result = run("--ir", str(ir), "--vis", str(vis), "--model", "classical")
    assert_one_line_error(result, f"ir source {ir} delivers 640x1 frames")
    assert "summary: 3 frames fused" in result.stdout


def test_the_minimum_size_itself_runs_through_every_stage(tmp_path: Path) -> None:
    """16x16 goes through the alignment check and the shipped network (its padding to the size multiple)."""
    side = MIN_FRAME_SIDE
    ir = image_folder(tmp_path / "ir", [(side, side)] * 3)
    vis = image_folder(tmp_path / "vis", [(side, side)] * 3)
    result = run("--ir", str(ir), "--vis", str(vis), "--model", "lite", "--provider", "cpu")
    assert result.returncode == 0, result.stderr
    assert "summary: 3 frames fused" in result.stdout


def write_calibration(path: Path, matrix: list[list[float]], model: str = "affine") -> Path:
    path.write_text(yaml.safe_dump({"model": model, "matrix": matrix, "ir_size": [360, 270],
                                    "vis_size": [360, 270]}))
    return path


def test_a_calibration_that_moves_the_ir_off_the_frame_is_refused(tmp_path: Path) -> None:
    off = write_calibration(tmp_path / "off.yaml", [[1, 0, 5000], [0, 1, 0]])
    result = run("--calibration", str(off), "--model", "classical")
    assert_one_line_error(result, f"calibration {off} puts the IR view on 0% of the visible frame (at least 10% "
                                  "expected)")
    assert "summary" not in result.stdout


def test_calibration_coverage_counts_what_the_ir_sees() -> None:
    """The share is the visible frame's, whatever the matrix: the demo rig nearly all of it, a narrow IR lens a
    quarter (accepted), a homography whose horizon cuts the frame only the side before it."""
    assert load_calibration(DEMO_CALIBRATION).coverage() > 0.95
    from stream_fusion.align import Calibration

    def coverage(matrix: list[list[float]]) -> float:
        return Calibration("homography", np.array(matrix, float), (360, 270), (360, 270), 0.0, 0.0).coverage()

    assert coverage([[0.5, 0, 90], [0, 0.5, 67.5], [0, 0, 1]]) == pytest.approx(0.25, abs=0.02)
    assert coverage([[1, 0, 180], [0, 1, 0], [0, 0, 1]]) == pytest.approx(0.5, abs=0.02)
    assert coverage([[1, 0, -360], [0, 1, 0], [0, 0, 1]]) == 0.0
    # A strong keystone: visible rows below 135 would come from behind the IR camera, rows 90-135 from below its
    # frame, and the rows above narrow towards 90: it sees a trapezoid of 2/9 of the frame.
    assert coverage([[1, 0, 0], [0, 1, 0], [0, 1 / 135, 1]]) == pytest.approx(2 / 9, abs=0.02)
    assert MIN_COVERAGE == 0.1


def test_a_network_with_nan_weights_is_refused_at_load(tmp_path: Path) -> None:
    proto = onnx.load(str(SHIPPED_MODELS["lite"]))
    weights = next(t for t in proto.graph.initializer if t.data_type == onnx.TensorProto.FLOAT and len(t.dims) == 4)
    values = onnx.numpy_helper.to_array(weights).copy()
    values.flat[0] = np.nan
    weights.CopyFrom(onnx.numpy_helper.from_array(values, weights.name))
    path = tmp_path / "nan.onnx"
    onnx.save(proto, str(path))
    result = run("--model", str(path), "--provider", "cpu")
    assert_one_line_error(result, f"{path} has NaN or infinite weights ({weights.name})")
    assert "summary" not in result.stdout


@pytest.mark.parametrize(("option", "name", "example"), [("--record", "rec.mp4", "fused.mp4"),
                                                         ("--snapshot", "shots", "fused.png")])
def test_an_output_path_that_is_a_folder_says_so(tmp_path: Path, option: str, name: str, example: str) -> None:
    folder = tmp_path / name
    folder.mkdir()
    result = run(option, str(folder), "--model", "classical")
    what = "cannot record to" if option == "--record" else "cannot write snapshot"
    assert_one_line_error(result, f"{what} {folder}: it is a folder; name a file in it, e.g. {folder / example}")
