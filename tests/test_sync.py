"""Pairing: live by grab time within a tolerance, replay by index; size and length mismatches."""
from __future__ import annotations

import logging
import threading

import numpy as np
import pytest

from stream_fusion.capture import EndOfStream, Frame
from stream_fusion.queues import LatestQueue, LosslessQueue
from stream_fusion.align import Calibration
from stream_fusion.sync import LivePairing, pair_live, pair_replay
from stream_fusion.timing import ArrivalRate
from stream_fusion.warp import IrRegistration


def frame(role: str, index: int, t: float, shape: tuple[int, ...] = (4, 6)) -> Frame:
    return Frame(role, index, np.full(shape, index, np.uint8), t, 1000.0 + t)


def test_arrival_rate_is_measured_with_the_reported_rate_as_prior() -> None:
    rate = ArrivalRate(reported_fps=25.0)
    assert rate.period == pytest.approx(0.04) and rate.measured_period is None
    assert rate.stall_after() == pytest.approx(1.0)  # a misreported prior must not raise false stall alarms
    t = 0.0
    for index in range(12):
        rate.add(index if index < 6 else index + 2, t)  # two frames dropped on the way: that interval spans three
        t += 0.1 if index != 5 else 0.3
        if index == 8:
            t += 2.0  # one long gap (a stall): the median ignores it
    assert rate.measured_period == pytest.approx(0.1)
    assert rate.fps == pytest.approx(10.0)
    assert rate.stall_after() == pytest.approx(0.2)  # two measured periods
    slow = ArrivalRate(None)
    for index in range(8):
        slow.add(index, index * 2.0)  # 0.5 fps
    assert slow.stall_after() == pytest.approx(3.0)  # never between two frames of a slow camera
    assert ArrivalRate(None).period == pytest.approx(1 / 30)  # nothing reported: 30 fps assumed


def test_tolerance_comes_from_measured_arrivals_not_from_a_misreported_rate() -> None:
    """Two 10 fps cameras that report 25 fps (what OpenCV says of MJPEG over HTTP), grabbing 35 ms apart: half the
    reported period (20 ms) pairs nothing; half the measured one (50 ms) pairs every frame once measured."""
    pairing = LivePairing(None, (25.0, 25.0))
    assert pairing.tolerance_s == pytest.approx(0.02)
    pairs = []
    for i in range(40):
        pairs += pairing.add(frame("ir", i, i * 0.1))
        pairs += pairing.add(frame("vis", i, i * 0.1 + 0.035))
    assert pairing.tolerance_s == pytest.approx(0.05)
    # the first second is the prior's (the open's backlog is not measured); from then on every frame pairs
    assert {ir.index for ir, _ in pairs} >= set(range(11, 40))
    assert all(ir.index == vis.index for ir, vis in pairs)
    assert "ir 10.0 fps (reported 25)" in pairing.describe() and "50 ms" in pairing.describe()


def test_an_explicit_tolerance_wins_over_the_measurement() -> None:
    pairing = LivePairing(0.01, (25.0, 25.0))
    for i in range(20):
        pairing.add(frame("ir", i, i * 0.1))
        pairing.add(frame("vis", i, i * 0.1 + 0.035))
    assert pairing.tolerance_s == 0.01 and pairing.unmatched >= 36


def test_the_nearest_partner_that_arrived_is_taken() -> None:
    """A 10 fps IR camera and a 30 fps visible one: each IR frame goes with the visible frame grabbed nearest."""
    pairing = LivePairing(None, (10.0, 30.0))
    events = sorted([frame("ir", i, i * 0.1 + 0.012) for i in range(30)]
                    + [frame("vis", j, j / 30) for j in range(90)], key=lambda f: f.t_mono)
    pairs = [pair for event in events for pair in pairing.add(event)]
    assert len(pairs) >= 28
    assert max(abs(ir.t_mono - vis.t_mono) for ir, vis in pairs) < 1 / 60 + 1e-9


def test_live_pairs_by_grab_time_and_counts_the_unmatched() -> None:
    pairing = LivePairing(tolerance_s=0.010)
    # IR at 0, 33, 66, 100 ms; visible at 3, 52 (no IR within 10 ms), 69, 98 ms.
    events = [frame("ir", 0, 0.000), frame("vis", 0, 0.003), frame("ir", 1, 0.033), frame("vis", 1, 0.052),
              frame("ir", 2, 0.066), frame("vis", 2, 0.069), frame("vis", 3, 0.098), frame("ir", 3, 0.100)]
    pairs = [(ir.index, vis.index) for event in events for ir, vis in pairing.add(event)]
    assert pairs == [(0, 0), (2, 2), (3, 3)]
    assert pairing.unmatched == 2  # IR 1 and visible 1


def test_live_buffer_is_bounded_when_one_side_is_silent() -> None:
    pairing = LivePairing(tolerance_s=0.010)
    for i in range(10):
        assert pairing.add(frame("ir", i, i * 0.033)) == []
    assert pairing.unmatched == 6  # only the 4 newest wait for a partner
    assert [(a.index, b.index) for a, b in pairing.add(frame("vis", 0, 9 * 0.033 + 0.002))] == [(9, 0)]
    assert pairing.unmatched == 6 + 3


def test_ir_registration_resizes_ir_to_visible_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    grid = IrRegistration()
    ir, vis = np.full((64, 80), 200, np.uint8), np.zeros((48, 60, 3), np.uint8)
    with caplog.at_level(logging.WARNING):
        outs = [grid(ir, vis) for _ in range(5)]
    assert all(out.shape == (48, 60) and int(out[10, 10]) == 200 and warp is None for out, warp in outs)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["IR frames are 80x64 but visible frames are 60x48: resizing IR to the visible grid "
                        "(without a calibration the fields of view are assumed to match)"]
    same = np.zeros((48, 60), np.uint8)
    out, warp = grid(same, vis)
    assert out is same and warp is None  # no copy when the grids already match


def test_ir_registration_pairs_the_ir_with_the_calibration_warp() -> None:
    """With a calibration the IR is left as captured (the engine resamples it once, on the GPU when it runs there)
    and every pair of a stream carries the same warp object, made for the frame sizes."""
    calibration = Calibration("affine", np.array([[0.5, 0, 1], [0, 0.5, 2], [0, 0, 1]]), (20, 20), (8, 6), 0.0, 1.0)
    grid = IrRegistration(calibration)
    ir = np.full((10, 10), 7, np.uint8)
    (out, warp), (_, again) = grid(ir, np.zeros((6, 8), np.uint8)), grid(ir, np.zeros((6, 8), np.uint8))
    assert out is ir and again is warp and warp.ir_size == (10, 10) and warp.size == (8, 6)
    # The warp scales with the frame size: a 10x10 frame of a 20x20 calibration maps its pixel (x, y) where the
    # calibrated frame's (2x + 0.5, 2y + 0.5) went.
    np.testing.assert_allclose(warp.matrix @ [3, 4, 1], calibration.matrix @ [6.5, 8.5, 1])
    assert warp.apply(ir).shape == (6, 8)


def run_replay(ir_count: int, vis_count: int, ir_failed: bool = False) -> list:
    stop = threading.Event()
    ir_q, vis_q = LosslessQueue(100, stop), LosslessQueue(100, stop)
    for i in range(ir_count):
        ir_q.put(frame("ir", i, i * 0.1))
    for i in range(vis_count):
        vis_q.put(frame("vis", i, i * 0.1 + 0.05, (2, 3)))
    ir_q.put(EndOfStream("ir", failed=ir_failed), droppable=False)
    vis_q.put(EndOfStream("vis"), droppable=False)
    out: list = []
    assert pair_replay(ir_q, vis_q, lambda p: out.append(p) is None, stop, IrRegistration()) == len(out)
    return out


def test_replay_pairs_by_index_and_stops_at_the_shorter(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        pairs = run_replay(ir_count=7, vis_count=5)
    assert [(p.index, p.ir.index, p.vis.index) for p in pairs] == [(i, i, i) for i in range(5)]
    assert all(p.ir_image.shape == (2, 3) and int(p.ir_image[0, 0]) == p.index for p in pairs)
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "visible source ended after 5 frames but the IR source has more: stopping at the shorter" in messages
    assert len([m for m in messages if "stopping at the shorter" in m]) == 1


def test_equal_lengths_and_failed_sources_do_not_warn_about_lengths(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        assert len(run_replay(4, 4)) == 4
        assert len(run_replay(2, 4, ir_failed=True)) == 2  # the source's own error is reported instead
    assert not [r for r in caplog.records if "stopping at the shorter" in r.getMessage()]


def test_pair_live_runs_until_a_source_ends() -> None:
    stop = threading.Event()
    inbox = LatestQueue(16)
    for i in range(3):
        inbox.put(frame("ir", i, i * 0.04))
        inbox.put(frame("vis", i, i * 0.04 + 0.001))
    inbox.put(EndOfStream("vis"), droppable=False)
    inbox.put(frame("ir", 3, 0.12))
    out: list = []
    made = pair_live(inbox, lambda p: out.append(p) is None, stop, IrRegistration(), LivePairing(0.01))
    assert made == 3 and [p.index for p in out] == [0, 1, 2]
    assert [(p.ir.index, p.vis.index) for p in out] == [(0, 0), (1, 1), (2, 2)]


def test_latest_queue_drops_oldest_but_never_an_end_marker() -> None:
    q = LatestQueue(2)
    q.put(1)
    q.put(EndOfStream("ir"), droppable=False)
    q.put(2)
    q.put(3)
    assert q.dropped == 2
    assert [q.get(0), q.get(0)] == [EndOfStream("ir"), 3]


def test_lossless_queue_put_gives_up_only_on_stop() -> None:
    stop = threading.Event()
    q = LosslessQueue(1, stop)
    assert q.put("a")
    threading.Timer(0.2, stop.set).start()
    assert q.put("b") is False  # blocked until stop, then refused, never silently queued over the bound
    assert q.get(0) == "a" and len(q) == 0
