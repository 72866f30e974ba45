"""The steady-video filter (issue 15, point 3) on real frames through the real shipped network (ONNX Runtime, CPU):
it brings the demo clip's (TNO nato_camp's) static-region flicker under the bar, leaves a moving hot object exactly
as the network fused it, starts afresh where it must, is refused with one line when misconfigured, and runs in the
stream (run_stream.py, real sockets) but can be switched off."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import zmq

from stream_fusion import DEMO_CALIBRATION, DEMO_IR, DEMO_VIS
from stream_fusion.align import load_calibration
from stream_fusion.capture import match_pairs
from stream_fusion.config import load_config
from stream_fusion.engine import create_engine
from stream_fusion.errors import StreamFusionError
from stream_fusion.evaluate.stability import temporal_change
from stream_fusion.steady import SteadyFilter

ROOT = Path(__file__).resolve().parents[1]
Clip = list[tuple[np.ndarray, np.ndarray, np.ndarray]]  # (fused by the network alone, ir, vis) per frame


@pytest.fixture(scope="module")
def lite():
    return create_engine("lite", "cpu")


@pytest.fixture(scope="module")
def clip(lite) -> Clip:
    """The demo clip (nato_camp's 32 consecutive frames, 360x270 gray) fused frame by frame by the shipped lite."""
    frames = []
    for _, ir_path, vis_path in match_pairs(DEMO_IR, DEMO_VIS):
        ir, vis = (cv2.imread(str(path), cv2.IMREAD_GRAYSCALE) for path in (ir_path, vis_path))
        frames.append((lite.fuse(ir, vis), ir, vis))
    return frames


def steadied(clip: Clip, steady: SteadyFilter) -> list[np.ndarray]:
    return [steady(fused, ir, vis) for fused, ir, vis in clip]


def test_the_filter_brings_the_default_networks_flicker_under_the_bar(clip: Clip) -> None:
    alone = temporal_change(clip)
    filtered = temporal_change([(out, ir, vis) for out, (_, ir, vis) in zip(steadied(clip, SteadyFilter()), clip)])
    assert alone["ratio"] > 1.3  # the network alone: 1.50 measured, the flicker issue 15 is about
    assert filtered["ratio"] <= 0.9  # through the filter: 0.83 measured; the bar is 1.0
    assert filtered["fused"] < filtered["inputs"] < alone["fused"]


def test_people_walking_in_the_clip_keep_every_change(clip: Clip) -> None:
    """Where an input changed by 10 levels or more (the people walking, the frames' big steps), the output is the
    network's frame exactly: nothing moving is blended or delayed."""
    outputs = steadied(clip, SteadyFilter())
    moving_pixels = 0
    for t in range(1, len(clip)):
        (_, ir, vis), (_, prev_ir, prev_vis) = clip[t], clip[t - 1]
        moving = (cv2.absdiff(ir, prev_ir) >= 10) | (cv2.absdiff(vis, prev_vis) >= 10)
        moving_pixels += int(moving.sum())
        assert np.array_equal(outputs[t][moving], clip[t][0][moving]), t
    assert moving_pixels > 0.05 * 31 * clip[0][0].size
    assert sum(not np.array_equal(out, fused) for out, (fused, _, _) in zip(outputs, clip)) >= 25  # it does filter


def hot_object(image: np.ndarray, x: int) -> np.ndarray:
    """``image`` with a person-sized hot blob (12x28 px at 235) centred at (x, 180)."""
    out = image.copy()
    cv2.ellipse(out, (x, 180), (6, 14), 0, 0, 360, 235, -1)
    return out


def test_a_hot_object_walking_through_a_still_real_scene_is_not_smeared(lite, clip: Clip) -> None:
    """The worst case for a smear: one real frame held still (no sensor noise at all, so the filter holds every
    pixel it may) and a hot object moving 6 px per frame across it."""
    _, ir, vis = clip[5]
    steady = SteadyFilter()
    for k in range(8):
        ir_k = hot_object(ir, 150 + 6 * k)
        fused = lite.fuse(ir_k, vis)
        out = steady(fused, ir_k, vis)
        body = hot_object(np.zeros_like(ir), 150 + 6 * k) > 0
        assert np.abs(out[body].astype(int) - fused[body]).max() <= 1, k  # 0 measured: the network's pixels
        if k:
            trail = hot_object(np.zeros_like(ir), 150 + 6 * (k - 1)) > 0
            assert np.abs(out[trail].astype(int) - fused[trail]).max() <= 1, k  # where it was: no ghost either
            # Its halo (the network reshapes its output some 30 px around a hot object) is not left behind either:
            # 2 levels at most measured within 40 px of it, 21 without the margin the filter leaves around motion.
            near = cv2.dilate((body | trail).view(np.uint8), np.ones((81, 81), np.uint8)) > 0
            assert np.abs(out[near].astype(int) - fused[near]).max() <= 6, k
            far = np.ones_like(body)
            far[100:260, 80:260] = False
            assert not np.array_equal(out[far], fused[far])  # away from it the still scene is held


def test_a_new_frame_size_a_cut_and_a_live_gap_start_afresh(clip: Clip) -> None:
    (f0, ir0, vis0), (f1, ir1, vis1) = clip[12], clip[13]
    steady = SteadyFilter(max_gap_s=1.0)
    steady(f0, ir0, vis0, t=10.0)
    assert not np.array_equal(steady(f1, ir1, vis1, t=10.2), f1)  # blended: the case each reset must differ from
    assert steady.resets == 1
    steady(f0, ir0, vis0, t=11.5)  # 1.3 s after the last frame: a stall or a reconnect
    assert steady.resets == 2
    small = [cv2.resize(image, (180, 134)) for image in (f1, ir1, vis1)]
    assert np.array_equal(steady(*small, t=11.6), small[0])  # a new size
    assert steady.resets == 3
    flipped = [cv2.flip(image, 1) for image in small]  # another view of the world: most of it moves
    assert np.array_equal(steady(*flipped, t=11.7), flipped[0])
    assert steady.resets == 4
    colour = cv2.cvtColor(flipped[0], cv2.COLOR_GRAY2BGR)  # a fused frame that turned colour: a new channel count
    assert np.array_equal(steady(colour, flipped[1], flipped[2], t=11.8), colour)
    assert steady.resets == 5
    replay = SteadyFilter(max_gap_s=1.0)  # a replay passes no grab time: it loses no frame, so no gap rule
    replay(f0, ir0, vis0)
    replay(f1, ir1, vis1)
    assert replay.resets == 1


def test_colour_frames_are_blended_in_every_channel_alike_and_a_colour_change_is_motion(clip: Clip) -> None:
    (f0, ir0, vis0), (f1, ir1, vis1) = clip[12], clip[13]
    tint = np.array([1.0, 0.8, 0.6])
    colour = [np.clip(cv2.cvtColor(image, cv2.COLOR_GRAY2BGR) * tint, 0, 255).astype(np.uint8) for image in (f0, f1)]
    vis_colour = [cv2.cvtColor(image, cv2.COLOR_GRAY2BGR) for image in (vis0, vis1)]
    steady, gray = SteadyFilter(), SteadyFilter()
    steady(colour[0], ir0, vis_colour[0])
    gray(f0, ir0, vis0)
    out, out_gray = steady(colour[1], ir1, vis_colour[1]), gray(f1, ir1, vis1)
    # One weight for every channel: the untinted channel is the gray filter's output exactly, the tinted ones follow
    # it within the rounding of the tint; and the blend did happen.
    assert np.array_equal(out[:, :, 0], out_gray) and not np.array_equal(out_gray, f1)
    assert np.abs(out.astype(float) - np.clip(out_gray[..., None] * tint, 0, 255)).max() <= 2
    # A visible colour that changes while its luma does not (red to an equally bright green) is a change.
    red = np.zeros_like(vis_colour[1])
    red[:] = (0, 0, 200)
    green = cv2.cvtColor(cv2.cvtColor(red, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
    green[:, :, 0] = green[:, :, 2] = 0
    green[:, :, 1] = np.clip(cv2.cvtColor(red, cv2.COLOR_BGR2GRAY) / 0.587, 0, 255).astype(np.uint8)
    fused_red, fused_green = red.copy(), green.copy()
    steady.reset()
    steady(fused_red, ir1, red)
    assert np.array_equal(steady(fused_green, ir1, green), fused_green)


@pytest.mark.parametrize("key, value, rule", [
    ("strength", 1.0, "in [0, 1)"), ("strength", -0.1, "in [0, 1)"), ("still_levels", -1.0, ">= 0"),
    ("motion_levels", 0.0, "> 0"), ("margin_px", -1, "in [0, 256]"), ("cut_fraction", 0.0, "in (0, 1]"),
    ("max_gap_s", 0.0, "> 0"),
])
def test_meaningless_settings_are_refused_naming_the_key(key: str, value: float, rule: str) -> None:
    config = load_config(overrides=[f"steady.{key}={value}"])
    with pytest.raises(StreamFusionError) as refused:
        SteadyFilter.from_config(config["steady"])
    assert str(refused.value) == f"config key 'steady.{key}' must be {rule}, got {value!r}"


def test_the_shipped_defaults_build_the_filter_and_enabled_false_builds_none() -> None:
    config = load_config()
    steady = SteadyFilter.from_config(config["steady"])
    assert steady is not None and (steady.strength, steady.still_levels) == (0.65, 2.0)
    assert SteadyFilter.from_config(load_config(overrides=["steady.enabled=false"])["steady"]) is None


def run_stream(*args: str) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key != "DISPLAY"}
    return subprocess.run([sys.executable, str(ROOT / "run_stream.py"), "--no-display", "--zmq", "none", *args],
                          capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)


@pytest.mark.parametrize("setting, message", [
    ("steady.strength=1.5", "config key 'steady.strength' must be in [0, 1), got 1.5"),
    ("steady.max_gap_s=.inf", "config key 'steady.max_gap_s' must be a finite number, got inf"),
    ("steady.margin_px=2.5", "config key 'steady.margin_px' must be int, got float (2.5)"),
])
def test_run_stream_refuses_a_bad_setting_with_one_line_and_exit_2(setting: str, message: str) -> None:
    result = run_stream("--model", "classical", "--set", setting)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert lines == [f"error: {message}"], lines


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def streamed(*args: str) -> tuple[list[np.ndarray], str]:
    """The demo clip's frames replayed unpaced through run_stream.py (its rig's calibration, the default network),
    as a subscriber on 127.0.0.1 receives them, and what the command said on stderr."""
    port = free_port()
    sub = zmq.Context.instance().socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.setsockopt(zmq.RCVHWM, 1000)
    sub.connect(f"tcp://127.0.0.1:{port}")
    env = {key: value for key, value in os.environ.items() if key != "DISPLAY"}
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "run_stream.py"), "--no-display", "--ir", str(DEMO_IR), "--vis", str(DEMO_VIS),
         "--calibration", str(DEMO_CALIBRATION), "--provider", "cpu", "--zmq", f"tcp://127.0.0.1:{port}",
         "--wait-subscriber", "30", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    frames = []
    try:
        while len(frames) < 32 and sub.poll(60_000):
            header, buffer = sub.recv_multipart()
            shape = json.loads(header)["shape"]
            frames.append(np.frombuffer(buffer, np.uint8).reshape(shape))
        _, err = process.communicate(timeout=60)
    finally:
        process.kill()
        sub.close(linger=0)
    assert process.returncode == 0, err
    return frames, err


def test_the_stream_applies_the_filter_by_default(lite, clip: Clip) -> None:
    """Through run_stream.py (a subprocess, real sockets): the stream's static regions change less than its inputs',
    where the network alone (the same frames fused here, as the stream fuses them) changes them more. The inputs are
    scored as the stream fuses them: the IR registered by the clip's calibration (a 5 px shift)."""
    warp = load_calibration(DEMO_CALIBRATION).warp((360, 270), (360, 270))
    alone = [lite.fuse(ir, vis, warp) for _, ir, vis in clip]
    inputs = [(warp.apply(ir), vis) for _, ir, vis in clip]
    stream, said = streamed()
    assert ", steady video, replay," in said.splitlines()[0]  # the start-up line says the frames are filtered
    assert len(stream) == 32 and np.array_equal(stream[0], alone[0])  # the first frame has nothing to blend with
    ratio_alone = temporal_change([(fused, ir, vis) for fused, (ir, vis) in zip(alone, inputs)])["ratio"]
    ratio_stream = temporal_change([(fused, ir, vis) for fused, (ir, vis) in zip(stream, inputs)])["ratio"]
    assert ratio_alone > 1.4 and ratio_stream <= 0.95, (ratio_alone, ratio_stream)  # 1.64 and 0.87 measured


def test_no_steady_switches_the_filter_off() -> None:
    sys.path.insert(0, str(ROOT))
    try:
        import run_stream
    finally:
        sys.path.remove(str(ROOT))
    config = run_stream.build_config(run_stream.parse_args(["--no-steady"]))
    assert config["steady"]["enabled"] is False and SteadyFilter.from_config(config["steady"]) is None


def test_evaluate_scores_a_sequence_alone_and_as_streamed(clip: Clip, tmp_path: Path, capsys) -> None:
    """``python -m stream_fusion.evaluate --temporal DIR --steady``: both numbers, the second being the filter's."""
    from stream_fusion.evaluate import score

    names = [f"{1812 + k}" for k in range(8)]
    for role in ("ir", "vis", "fused"):
        (tmp_path / role).mkdir()
    for name, (fused, ir, vis) in zip(names, clip[12:20]):
        for role, image in (("ir", ir), ("vis", vis), ("fused", fused)):
            cv2.imwrite(str(tmp_path / role / f"{name}.png"), image)
    assert score.main(["--temporal", str(tmp_path), "--fused", str(tmp_path / "fused"), "--steady"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("temporal")]
    alone = temporal_change(clip[12:20])
    streamed_ratio = temporal_change([(out, ir, vis) for out, (_, ir, vis) in
                                      zip(steadied(clip[12:20], SteadyFilter()), clip[12:20])])["ratio"]
    assert lines[0].startswith("temporal, fused frames as given") and f"ratio {alone['ratio']:.2f}" in lines[0]
    assert lines[1].startswith("temporal, as streamed") and f"ratio {streamed_ratio:.2f}" in lines[1]
    assert streamed_ratio < 1.0 < alone["ratio"]
    with pytest.raises(SystemExit) as refused:
        score.main(["--ir", str(tmp_path / "ir"), "--vis", str(tmp_path / "vis"), "--fused", str(tmp_path), "--steady"])
    assert refused.value.code == 2 and "--steady scores a sequence: it needs --temporal DIR" in capsys.readouterr().err


@pytest.mark.parametrize("live, resets", [(True, 2), (False, 1)])
def test_the_fuse_stage_gives_the_filter_grab_times_only_live(clip: Clip, live: bool, resets: int) -> None:
    """Two pairs 1.3 s apart through the pipeline's fuse stage: live that is a stall (start afresh), in a replay it is
    only how fast the machine reads (no effect)."""
    from stream_fusion.align import AlignmentMonitor
    from stream_fusion.capture import Frame, SourcePair, open_source
    from stream_fusion.engine.classical import ClassicalEngine
    from stream_fusion.pipeline import Pipeline
    from stream_fusion.sync import PairedFrame

    sources = SourcePair(open_source(DEMO_IR, "ir"), open_source(DEMO_VIS, "vis"), live=live)
    try:
        pipeline = Pipeline(sources, ClassicalEngine(), AlignmentMonitor(), steady=SteadyFilter())
        for index, (t, (_, ir, vis)) in enumerate(zip((5.0, 6.3), clip[12:14])):
            item = PairedFrame(index, Frame("ir", index, ir, t, t), Frame("vis", index, vis, t, t), ir, t)
            assert pipeline._fuse(item) and item.fused is not None
    finally:
        sources.ir.close()
        sources.vis.close()
    assert pipeline.steady.resets == resets
