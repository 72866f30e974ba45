"""16-bit thermal frames (#13 point 5): 16-bit PNG / TIFF folders and 16-bit videos read as they are, mapped to 8 bits
by a steady automatic gain or a fixed range, fused by the real pipeline and by run_stream.py."""
from __future__ import annotations

import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from stream_fusion.align import AlignmentMonitor
from stream_fusion.capture import SourcePair, open_source
from stream_fusion.config import load_config
from stream_fusion.engine.classical import ClassicalEngine
from stream_fusion.errors import StreamFusionError
from stream_fusion.gain import IrGain, lookup_table, parse_range
from stream_fusion.pipeline import Pipeline
from test_run_stream import ROOT, command, environment

SIZE = (96, 64)  # (width, height)


def thermal_scene(frame: int, hot_from: int | None = None, seed: int = 0) -> np.ndarray:
    """A radiometric-looking uint16 frame: a 7000-8000 count background (a gradient with sensor noise), and from
    frame ``hot_from`` on a 20000-count object (a running engine) covering an eighth of the frame."""
    rng = np.random.default_rng(seed + frame)
    width, height = SIZE
    image = np.linspace(7000, 8000, width)[None, :].repeat(height, 0) + rng.normal(0, 15, (height, width))
    if hot_from is not None and frame >= hot_from:
        image[: height // 2, : width // 4] = 20000
    return np.clip(image, 0, 65535).astype(np.uint16)


def write_folders(root: Path, frames: int, suffix: str = ".png") -> tuple[Path, Path]:
    ir, vis = root / "ir", root / "vis"
    ir.mkdir()
    vis.mkdir()
    for i in range(frames):
        assert cv2.imwrite(str(ir / f"{i:03d}{suffix}"), thermal_scene(i))
        assert cv2.imwrite(str(vis / f"{i:03d}.png"), np.full((SIZE[1], SIZE[0], 3), 40 + i, np.uint8))
    return ir, vis


def test_a_fixed_range_maps_exactly() -> None:
    gain = IrGain.from_config({**load_config()["gain"], "range": "1000:2020"})
    counts = np.array([[0, 999, 1000, 1004, 1510, 2020, 2021, 65535]], np.uint16)
    assert gain(counts).tolist() == [[0, 0, 0, 1, 128, 255, 255, 255]]  # 255 / 1020 = 0.25 grey per count
    assert gain(thermal_scene(0)).dtype == np.uint8
    assert np.array_equal(lookup_table(1000, 2020)[[1000, 2020]], [0, 255])
    eight = np.arange(256, dtype=np.uint8).reshape(16, 16)
    assert gain(eight) is eight  # 8-bit IR passes through


@pytest.mark.parametrize("text, message", [
    ("inf:9000", "two finite numbers"), ("nan:1", "two finite numbers"), ("100", "LO:HI"), ("a:b", "LO:HI"),
    ("9000:9000", "LO < HI"), ("9000:100", "LO < HI"),
])
def test_a_bad_range_is_one_line(text: str, message: str) -> None:
    with pytest.raises(StreamFusionError, match=message):
        parse_range(text)


def test_the_automatic_gain_does_not_pump_when_a_hot_object_enters() -> None:
    """The background's grey may only glide when a hot object enters: at most 6 levels per frame with the defaults,
    where following each frame's percentiles at once jumps it by more than 60."""
    background = (slice(40, 64), slice(48, 96))  # never covered by the object

    def background_grey(gain: IrGain) -> list[float]:
        return [float(gain(thermal_scene(i, hot_from=20))[background].mean()) for i in range(80)]

    steady = background_grey(IrGain.from_config(load_config()["gain"]))
    pumping = background_grey(IrGain(smoothing=1.0, max_step=1.0))
    steps = np.abs(np.diff(steady))
    assert steps.max() < 6, steps.max()
    assert np.abs(np.diff(pumping)).max() > 60  # the test can see pumping: without smoothing it is there
    assert steady[19] - steady[-1] > 30  # ... and the gain does adapt to the new range, over seconds
    assert steps[:18].max() < 1.5  # a static scene's mapping holds still (sensor noise does not move it)


def test_a_flat_frame_is_not_stretched_into_noise() -> None:
    flat = np.random.default_rng(0).normal(7500, 3, (64, 96)).round().astype(np.uint16)
    assert IrGain()(flat).std() < 15  # min_span 64 counts: noise of 3 counts stays about 12 greys
    assert IrGain(min_span=1)(flat).std() > 40  # stretched p1..p99 it would be most of the grey range


@pytest.mark.parametrize("suffix", [".png", ".tiff"])
def test_a_16_bit_folder_is_read_and_fused_by_the_pipeline(tmp_path: Path, suffix: str) -> None:
    ir_dir, vis_dir = write_folders(tmp_path, 6, suffix)
    ir = open_source(ir_dir, "ir")
    assert ir.bits == 16 and ir.read().dtype == np.uint16
    ir.restart()
    sources = SourcePair(ir, open_source(vis_dir, "vis"), live=False)
    pipeline = Pipeline(sources, ClassicalEngine(), AlignmentMonitor(), gain=IrGain((7000.0, 8000.0)))
    summary = pipeline.run()
    assert summary.error is None and summary.frames == 6
    fused_ir = pipeline.last.registered_ir
    assert fused_ir.dtype == np.uint8
    # fixed 7000:8000 -> the gradient spans the grey range: dark left, bright right
    assert fused_ir[:, :5].mean() < 30 and fused_ir[:, -5:].mean() > 225


def test_a_16_bit_visible_image_is_refused_in_one_line(tmp_path: Path) -> None:
    ir_dir, vis_dir = write_folders(tmp_path, 1)
    cv2.imwrite(str(vis_dir / "000.png"), thermal_scene(0))
    with pytest.raises(StreamFusionError, match="vis image .* is uint16; 8-bit images only"):
        open_source(vis_dir, "vis").read()


def test_a_16_bit_video_is_read_as_16_bit(tmp_path: Path) -> None:
    """A lossless 16-bit gray video (FFV1, as radiometric recordings are kept) is read as uint16 counts, exactly."""
    path = tmp_path / "thermal.mkv"
    writer = cv2.VideoWriter(str(path), cv2.CAP_FFMPEG, cv2.VideoWriter_fourcc(*"FFV1"), 10, SIZE,
                             [cv2.VIDEOWRITER_PROP_DEPTH, cv2.CV_16U, cv2.VIDEOWRITER_PROP_IS_COLOR, 0])
    assert writer.isOpened()
    frames = [thermal_scene(i) for i in range(5)]
    for image in frames:
        writer.write(image)
    writer.release()
    source = open_source(path, "ir")
    assert source.bits == 16
    read = [source.read() for _ in range(5)]
    assert all(np.array_equal(a, b) for a, b in zip(read, frames))
    assert source.read() is None
    assert open_source(path, "vis").read().dtype == np.uint8  # a visible source stays 8-bit BGR


def test_run_stream_fuses_a_16_bit_folder_end_to_end(tmp_path: Path) -> None:
    ir_dir, vis_dir = write_folders(tmp_path, 8)
    record = tmp_path / "fused.avi"
    result = subprocess.run(command("--ir", str(ir_dir), "--vis", str(vis_dir), "--zmq", "none", "--record",
                                    str(record)), capture_output=True, text=True, timeout=120, env=environment(),
                            cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert "summary: 8 frames fused" in result.stdout and "Traceback" not in result.stderr
    assert f"IR {ir_dir} (16-bit, automatic (p1-p99) gain)" in result.stderr
    fixed = subprocess.run(command("--ir", str(ir_dir), "--vis", str(vis_dir), "--zmq", "none", "--ir-range",
                                   "7000:8000"), capture_output=True, text=True, timeout=120, env=environment(),
                           cwd=ROOT)
    assert fixed.returncode == 0 and "(16-bit, fixed 7000:8000 gain)" in fixed.stderr


@pytest.mark.parametrize("value, message", [
    ("inf:9000", "must be LO:HI with two finite numbers"), ("9000:7000", "must have LO < HI"),
])
def test_run_stream_refuses_a_bad_ir_range_in_one_line(value: str, message: str) -> None:
    result = subprocess.run(command("--zmq", "none", f"--ir-range={value}"), capture_output=True, text=True,
                            timeout=120, env=environment(), cwd=ROOT)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "gain.range" in lines[0]
