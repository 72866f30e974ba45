"""The per-frame alignment check on real registered pairs, its hysteresis, and the warn / correct / drop policies.

The eval pairs are "registered" only to a few pixels: several TNO pairs are visibly off (tno25_01 by ~10 px
vertically). So the check is judged against a second opinion, ``calibrate.reference_shift`` (translation-only ECC on
gradient maps at up to 384 px wide: another algorithm at twice the resolution): pairs are registered with it before shifts are injected,
and a flag on an unshifted pair counts as a false alarm only when the reference finds the pair aligned.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
import pytest

from stream_fusion import DATA_DIR
from stream_fusion.align import Alignment, AlignmentMonitor, ShiftEstimator, gradient_map, refine_shift, shift_image
from stream_fusion.bench import align as bench_align
from stream_fusion.calibrate import calibrate, reference_shift
from stream_fusion.config import load_config
from stream_fusion.errors import StreamFusionError
from stream_fusion.warp import IrWarp

DATA = DATA_DIR
EVAL = [DATA / "eval" / "tno25", DATA / "eval" / "roadscene50"]

# 3 px in eight directions, and larger shifts in four.
SHIFTS_3PX = [(3, 0), (-3, 0), (0, 3), (0, -3), (2.13, 2.13), (-2.13, 2.13), (2.13, -2.13), (-2.13, -2.13)]
SHIFTS_LARGE = [(5, 0), (0, -5), (-10, 0), (0, 10), (14.2, 14.2), (-20, 0)]


def load_pair(folder: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    ir = cv2.imread(str(folder / "ir" / name), cv2.IMREAD_GRAYSCALE)
    vis = cv2.imread(str(folder / "vis" / name), cv2.IMREAD_GRAYSCALE)
    assert ir is not None and vis is not None, f"missing eval pair {folder.name}/{name}"
    return ir, vis


@lru_cache(maxsize=None)
def eval_pairs() -> list[tuple[str, np.ndarray, np.ndarray]]:
    pairs = [(path.stem, *load_pair(folder, path.name)) for folder in EVAL for path in sorted((folder / "ir").glob("*.png"))]
    assert len(pairs) == 75
    return pairs


def verdict(ir: np.ndarray, vis: np.ndarray) -> Alignment:
    """One measurement's status: a fresh monitor with no hysteresis."""
    return AlignmentMonitor(hysteresis=1, every_n=1).process(ir, vis).alignment


@lru_cache(maxsize=None)
def survey() -> dict[str, dict]:
    """Per eval pair: the reference offset, and the check's verdicts on the raw, registered and shifted pairs."""
    results = {}
    for name, ir, vis in eval_pairs():
        reference = reference_shift(ir, vis)
        registered = shift_image(ir, *reference, min_shift=0) if reference else ir
        results[name] = {
            "reference": float(np.hypot(*reference)) if reference else None,
            "raw": verdict(ir, vis),
            "registered": verdict(registered, vis),
            "shift3": [verdict(shift_image(registered, dx, dy, 0), vis) for dx, dy in SHIFTS_3PX],
            "large": [verdict(shift_image(registered, dx, dy, 0), vis) for dx, dy in SHIFTS_LARGE],
        }
    return results


def test_flags_on_unshifted_pairs_are_real_misregistrations():
    """Of the 75 unshifted eval pairs, the check flags only pairs the reference also finds >= 2 px off, except two
    named pairs where the two methods disagree (three before the sub-pixel refinement) and a homography calibration
    confirms the check; and it does flag tno25_01, which is visibly ~10 px off. So no flag is a false alarm: the
    issue's "flags none of the unshifted pairs" would need pairs registered better than these."""
    results = survey()
    flagged = {name for name, r in results.items() if r["raw"].status == "misaligned"}
    false_alarms = {name for name in flagged if results[name]["reference"] is None or results[name]["reference"] < 2.0}
    assert "tno25_01" in flagged
    assert results["tno25_07"]["raw"].status == "ok"  # the best-registered TNO pair (reference 0.4 px)
    assert false_alarms <= {"FLIR_04722", "FLIR_07809"}, false_alarms
    confirmed = flagged - false_alarms
    assert len(confirmed) >= 15  # 17 measured: the eval splits are registered to a few pixels only
    # The two are off by perspective, which the translation-only reference cannot see: registered by their own
    # homography calibration (a third method, ECC on the whole warp), the check finds both within 0.5 px (measured
    # 0.32 and 0.10 px), so what it flagged unshifted was a real misregistration there too.
    pairs = {name: (ir, vis) for name, ir, vis in eval_pairs()}
    for name in false_alarms:
        ir, vis = pairs[name]
        calibration, _ = calibrate([ir], [vis], "homography")
        alignment = verdict(calibration.apply(ir, (vis.shape[1], vis.shape[0])), vis)
        assert alignment.status == "ok" and np.hypot(alignment.dx, alignment.dy) < 0.5, (name, alignment)


def _agreeing_pairs() -> dict[str, dict]:
    """Pairs on which the check and the reference agree about the pair's own offset (< 2 px apart).

    On the others (2 of 75, 9 before the sub-pixel refinement: parallax, or structure only one sensor sees) two
    methods disagree by 2 px or more and neither can be called right, so injected shifts there cannot be judged.
    """
    results = survey()
    agreeing = {name: r for name, r in results.items() if r["registered"].status != "misaligned"}
    assert len(agreeing) >= 72
    return agreeing


def test_shifts_of_5_to_20_px_are_always_flagged_or_unknown():
    agreeing = _agreeing_pairs()
    missed = [(name, a.as_dict()) for name, r in agreeing.items() for a in r["large"] if a.status == "ok"]
    assert missed == []
    unknown = {name for name, r in agreeing.items() if r["registered"].status == "unknown"}
    # Smoke (tno25_02), a flat field (tno25_09), night scenes: too little shared structure to measure on.
    assert len(unknown) <= 6, unknown
    measurable = [a.status for name, r in agreeing.items() if name not in unknown for a in r["large"]]
    assert measurable.count("misaligned") >= 0.98 * len(measurable)  # the rest: confidence dipped to "unknown"


def test_shifts_of_3_px_are_flagged():
    """3 px is 1 px on the coarse grid, but the refined shift is good to ~0.2 px: 98.7 % of the 8 directions x 67
    measurable pairs are flagged (95 % before the refinement)."""
    agreeing = _agreeing_pairs()
    verdicts = [a.status for r in agreeing.values() for a in r["shift3"] if r["registered"].status != "unknown"]
    flagged = sum(status == "misaligned" for status in verdicts) / len(verdicts)
    assert flagged >= 0.98, flagged


def test_measured_shift_follows_injected_shift():
    """The reported (dx, dy) is the shift that registers the IR: moving the IR by (+7, -4) adds (-7, +4)."""
    ir, vis = load_pair(EVAL[0], "tno25_07.png")
    estimator = ShiftEstimator()
    dx0, dy0, _ = estimator.measure(ir, vis)
    dx, dy, confidence = estimator.measure(shift_image(ir, 7, -4), vis)
    assert dx - dx0 == pytest.approx(-7, abs=0.5)
    assert dy - dy0 == pytest.approx(4, abs=0.5)
    assert confidence > 0.5



@pytest.mark.parametrize("shift", [(1.3, -0.7), (0.5, 0.5), (-2.2, 0.4)])
def test_refinement_recovers_sub_pixel_shifts(shift):
    """Same-sensor frames a fraction of a pixel apart, started 0.8 px off in both axes: found within 0.03 px."""
    _, vis = load_pair(EVAL[0], "tno25_16.png")
    size = (vis.shape[1], vis.shape[0])
    moved = gradient_map(shift_image(vis, *shift, min_shift=0), size)
    found = refine_shift(moved, gradient_map(vis, size), (shift[0] + 0.8, shift[1] - 0.8), band=8)
    assert found == pytest.approx(shift, abs=0.03)


def test_measured_shift_agrees_with_the_affine_calibration_to_sub_pixel():
    """Pairs registered with their own affine calibration (multi-scale ECC at full resolution), then shifted: the
    check's shift undoes the injected one within 0.4 px on each (measured at most 0.22 px); the coarse phase
    correlation alone is off by 0.3-1.4 px on these pairs (its 192 px grid sees the cross-modal edges differently),
    at least twice as far (measured 3.8-30 times)."""
    for name in ("tno25_10", "tno25_16", "tno25_17", "tno25_18"):
        ir, vis = load_pair(EVAL[0], f"{name}.png")
        calibration, _ = calibrate([ir], [vis])
        registered = calibration.apply(ir, (vis.shape[1], vis.shape[0]))
        errors = {}
        for refine_width in (320, 0):
            estimator = ShiftEstimator(refine_width=refine_width)
            errors[refine_width] = [
                float(np.hypot(*np.add(estimator.measure(shift_image(registered, sx, sy, min_shift=0), vis)[:2], (sx, sy))))
                for sx, sy in [(4, 0), (0, -6), (-9.5, 3.5), (2.5, 2.5)]
            ]
        assert max(errors[320]) < 0.4, (name, errors)
        assert np.mean(errors[0]) > 2 * np.mean(errors[320]), (name, errors)

def demo_frames(count: int = 12) -> list[tuple[np.ndarray, np.ndarray]]:
    """Consecutive frames of the bundled clip, its IR registered with the reference shift of the first frame."""
    from stream_fusion import DEMO_IR, DEMO_VIS

    names = sorted(p.name for p in DEMO_IR.glob("*.png"))[:count]
    frames = [(cv2.imread(str(DEMO_IR / n), 0), cv2.imread(str(DEMO_VIS / n), 0)) for n in names]
    shift = reference_shift(*frames[0])
    assert shift is not None and np.hypot(*shift) > 3  # the demo clip itself is ~4 px off horizontally
    return [(shift_image(ir, *shift, min_shift=0), vis) for ir, vis in frames]


def test_hysteresis_needs_k_measurements_to_switch():
    """The state is the median of the last 2k - 1 measurements: k of them switch it, fewer do not."""
    frames = demo_frames(12)
    monitor = AlignmentMonitor(hysteresis=3, every_n=1)
    statuses = [monitor.process(ir, vis).alignment.status for ir, vis in frames[:4]]
    assert statuses == ["unknown", "unknown", "ok", "ok"]
    shifted = [monitor.process(shift_image(ir, 6, 0), vis).alignment.status for ir, vis in frames[4:8]]
    assert shifted == ["ok", "ok", "misaligned", "misaligned"]
    # One good frame in a misaligned run does not clear the alarm; three do.
    back = [monitor.process(ir, vis).alignment.status for ir, vis in frames[8:12]]
    assert back == ["misaligned", "misaligned", "ok", "ok"]


def test_low_confidence_is_unknown_not_ok():
    _, vis = demo_frames(1)[0]
    noise = np.random.default_rng(0).integers(0, 256, vis.shape, dtype=np.uint8)
    record = verdict(noise, vis)
    assert record.status == "unknown"
    assert record.confidence < 0.2


def test_every_nth_pair_is_measured_and_others_reuse_the_estimate():
    frames = demo_frames(7)
    monitor = AlignmentMonitor(every_n=3, hysteresis=1)
    records = [monitor.process(ir, vis).alignment for ir, vis in frames]
    assert [r.measured for r in records] == [True, False, False, True, False, False, True]
    assert records[1].dx == records[0].dx and records[2].status == records[0].status
    assert records[3].dx != records[0].dx  # a new measurement on a new frame


def test_policy_warn_returns_the_ir_untouched():
    ir, vis = demo_frames(1)[0]
    fuse, warp, record = AlignmentMonitor("warn", hysteresis=1).process(shift_image(ir, 8, 0), vis)
    assert record.status == "misaligned"
    assert fuse and warp is None  # fused as it comes


def test_policy_drop_drops_misaligned_pairs_only():
    frames = demo_frames(4)
    monitor = AlignmentMonitor("drop", hysteresis=1, every_n=1)
    ir, vis = frames[0]
    fuse, warp, record = monitor.process(ir, vis)
    assert record.status == "ok" and fuse and warp is None
    fuse, _, record = monitor.process(shift_image(frames[1][0], 0, -7), frames[1][1])
    assert record.status == "misaligned" and not fuse


def test_policy_correct_shifts_the_ir_back_with_a_smoothed_estimate():
    frames = demo_frames(10)
    monitor = AlignmentMonitor("correct", hysteresis=2, every_n=1, smoothing=0.5)
    for ir, vis in frames:
        moved = shift_image(ir, 6, -3, min_shift=0)
        _, warp, record = monitor.process(moved, vis)
    out = warp.apply(moved)  # the one resampling the engine does
    assert record.status == "misaligned"  # the status describes the incoming pair; the fused IR is corrected
    assert monitor.correction == pytest.approx((-6, 3), abs=1.0)
    interior = (slice(20, -20), slice(20, -20))
    error_before = np.abs(moved.astype(float) - ir)[interior].mean()
    error_after = np.abs(out.astype(float) - ir)[interior].mean()
    assert error_after < 0.35 * error_before
    # Within the threshold the IR is not resampled by a noise-level estimate.
    ir, vis = frames[0]
    _, warp, record = AlignmentMonitor("correct", hysteresis=1).process(ir, vis)
    assert record.status == "ok" and warp is None


def test_policy_correct_also_corrects_an_offset_below_the_alarm_threshold():
    """A 1.5 px offset is `ok` (threshold 2 px) but already ghosts edges: with the sub-pixel estimate, `correct`
    shifts it back too (from CORRECT_FROM_PX = 1 px); `warn` leaves it. (The frames are registered by the reference
    shift, which the check's estimate differs from by ~0.4 px on this clip, so the error does not vanish.)"""
    frames = demo_frames(3)  # from the 4th frame on the clip's own offset moves by ~2 px (the camera pans)
    monitor = AlignmentMonitor("correct", hysteresis=2, every_n=1)
    warn = AlignmentMonitor("warn", hysteresis=2, every_n=1)
    for ir, vis in frames:
        moved = shift_image(ir, 1.5, 0, min_shift=0)
        _, warp, record = monitor.process(moved, vis)
        _, warned, _ = warn.process(moved, vis)
    assert record.status == "ok"
    assert warned is None
    out = warp.apply(moved)
    assert monitor.correction[0] == pytest.approx(-1.5, abs=0.3)
    interior = (slice(20, -20), slice(20, -20))
    error_before = np.abs(moved.astype(float) - ir)[interior].mean()
    assert np.abs(out.astype(float) - ir)[interior].mean() < 0.6 * error_before  # measured 0.54


def test_from_config_accepts_every_align_key_of_the_default_config():
    config = load_config()
    monitor = AlignmentMonitor.from_config(config["align"])
    assert monitor.policy == config["align"]["policy"] == "warn"
    assert monitor.every_n == config["align"]["every_n"]
    assert monitor.estimator.width == config["align"]["width"]
    assert monitor.estimator.refine_width == config["align"]["refine_width"] == 320
    assert AlignmentMonitor.from_config({"refine_width": 0}).estimator.refine_width == 0
    known = {"policy", "calibration", "every_n", "threshold_px", "min_confidence", "hysteresis", "smoothing", "width",
             "refine_width"}
    assert set(config["align"]) <= known


@pytest.mark.parametrize(
    "settings, message",
    [({"policy": "fix"}, "align.policy"), ({"every_n": 0}, "every_n"), ({"smoothing": 0.0}, "smoothing"),
     ({"refine_width": -1}, "refine_width")],
)
def test_bad_settings_are_one_line_errors(settings, message):
    with pytest.raises(StreamFusionError, match=message):
        AlignmentMonitor.from_config(settings)


def test_record_is_plain_data_for_metadata():
    import json

    ir, vis = demo_frames(1)[0]
    record = verdict(ir, vis)
    data = json.loads(json.dumps(record.as_dict()))
    assert set(data) == {"dx", "dy", "confidence", "status", "measured", "shift", "threshold_px"}
    assert data["status"] == "ok" and data["measured"] is True


def test_colour_frames_measure_like_gray_ones():
    """The pipeline hands over BGR visible frames (and sometimes 3-channel IR): the check measures their luma."""
    folder = EVAL[1]
    ir = cv2.imread(str(folder / "ir" / "FLIR_04688.png"), cv2.IMREAD_GRAYSCALE)
    vis = cv2.imread(str(folder / "vis" / "FLIR_04688.png"), cv2.IMREAD_COLOR)
    assert vis.ndim == 3
    moved = shift_image(ir, -4, 2)
    colour = ShiftEstimator().measure(cv2.cvtColor(moved, cv2.COLOR_GRAY2BGR), vis)
    gray = ShiftEstimator().measure(moved, cv2.cvtColor(vis, cv2.COLOR_BGR2GRAY))
    assert colour == pytest.approx(gray, abs=1e-6)
    assert verdict(cv2.cvtColor(moved, cv2.COLOR_GRAY2BGR), vis).status == "misaligned"


def test_a_calibrated_pair_is_measured_as_if_the_ir_were_warped_first():
    """With a calibration the check warps the IR at its own measuring resolution (half of 640x512), not the frame's:
    on real pairs under calibration-like warps (rotation, scale, keystone, shift) it reads what measuring the fully
    warped IR reads, to 0.05 px in 9 of 10 cases and 0.5 px in all (measured: median 0.000, 90th percentile 0.028,
    largest 0.44 px over 225 cases of the 75 eval pairs)."""
    estimator = ShiftEstimator()
    rng = np.random.default_rng(0)
    differences = []
    for name, ir, vis in eval_pairs()[::5]:
        h, w = vis.shape
        for keystone in (False, True):
            matrix = np.vstack([cv2.getRotationMatrix2D((w / 2, h / 2), rng.uniform(-2, 2), rng.uniform(0.97, 1.03)),
                                [0, 0, 1]])
            matrix[:2, 2] += rng.uniform(-6, 6, 2)
            if keystone:
                matrix[2, :2] = rng.uniform(-2e-5, 2e-5, 2)
            warp = IrWarp(matrix, (w, h), (w, h))
            full = estimator.measure(warp.apply(ir), vis)
            fast = estimator.measure_warped(ir, vis, warp)
            differences.append(np.hypot(full[0] - fast[0], full[1] - fast[1]))
            assert abs(full[2] - fast[2]) < 0.01
    assert np.percentile(differences, 90) < 0.05 and max(differences) < 0.5


def test_with_each_pairs_own_calibration_as_zero_3px_shifts_are_flagged_and_registered_pairs_are_not():
    """The issue's detection targets with a zero a calibrated rig really has: each eval pair registered by its own
    affine calibration (multi-scale ECC at full resolution; 5 pairs refuse calibration, 2 more are too featureless
    to measure). Unshifted, only FLIR_07809 is flagged (where the two methods disagree); shifted by 3 px in 8
    directions, all but FLIR_07809's 2 are flagged (99.6 %); shifted by 5-20 px, all. (Against the translation-only
    reference instead, 3 px is flagged 98.7 %: that reference and the check disagree by 1-2 px on a few pairs.)"""
    flagged, small, large = [], [], []
    for name, ir, vis in eval_pairs():
        try:
            calibration, _ = calibrate([ir], [vis])
        except StreamFusionError:
            continue
        registered = calibration.apply(ir, (vis.shape[1], vis.shape[0]))
        status = verdict(registered, vis).status
        if status == "unknown":
            continue
        flagged += [name] if status == "misaligned" else []
        small += [(name, verdict(shift_image(registered, dx, dy, 0), vis).status) for dx, dy in SHIFTS_3PX]
        large += [(name, verdict(shift_image(registered, dx, dy, 0), vis).status) for dx, dy in SHIFTS_LARGE]
    assert len(small) >= 8 * 66 and set(flagged) <= {"FLIR_07809"}
    missed = [name for name, status in small if status != "misaligned"]
    assert len(missed) <= 2 and set(missed) <= {"FLIR_07809"}
    assert all(status == "misaligned" for _, status in large)


def test_the_pair_left_flagged_is_met_once_registered_by_its_homography():
    """FLIR_07809, the one pair the test above leaves flagged unshifted and missed at 3 px (twice), is off by
    perspective, which its affine calibration cannot take out (the check reads 2.4 px after it). Registered by its
    homography calibration it reads ok unshifted and flags all eight 3 px shifts, so with that zero every target of
    the check holds on all measurable eval pairs."""
    ir, vis = {name: (ir, vis) for name, ir, vis in eval_pairs()}["FLIR_07809"]
    calibration, _ = calibrate([ir], [vis], "homography")
    registered = calibration.apply(ir, (vis.shape[1], vis.shape[0]))
    assert verdict(registered, vis).status == "ok"
    assert all(verdict(shift_image(registered, dx, dy, 0), vis).status == "misaligned" for dx, dy in SHIFTS_3PX)


@pytest.mark.parametrize("name", ["tno25_10", "FLIR_06506"])
def test_a_narrower_ir_view_is_checked_where_it_sees(name):
    """A 4:3 IR camera (320x240) seeing 0.6 of the visible view, about a third of the frame: the check measures on
    the IR view's bounding box, not on the whole frame, where the black surround diluted the correlation (on the demo
    clip it read "unknown" on all 32 frames). After the calibration it reads ok, within 0.5 px; when the rig has
    drifted from it (4 px right, 3 px up) it measures the drift to 0.25 px (measured 0.01-0.14)."""
    ir, vis = {n: (ir, vis) for n, ir, vis in eval_pairs()}[name]
    camera, _ = bench_align.central_view(ir, 0.6, (320, 240))
    calibration, _ = calibrate([camera], [vis])
    warp = calibration.warp((320, 240), (vis.shape[1], vis.shape[0]))
    x0, y0, x1, y1 = warp.view_box()
    assert (x1 - x0) * (y1 - y0) < 0.5 * vis.shape[0] * vis.shape[1]
    zero = AlignmentMonitor(hysteresis=1, every_n=1).process(camera, vis, warp).alignment
    assert zero.status == "ok" and np.hypot(zero.dx, zero.dy) < 0.5
    for drift in ((4.0, 0.0), (0.0, -3.0)):
        alignment = AlignmentMonitor(hysteresis=1, every_n=1).process(camera, vis, warp.shifted(*drift)).alignment
        assert alignment.status == "misaligned" and alignment.confidence > 0.3
        error = np.hypot(alignment.dx - zero.dx + drift[0], alignment.dy - zero.dy + drift[1])
        assert error < 0.25, (alignment, drift)


def test_the_state_is_shown_with_the_shift_and_threshold_it_was_decided_on():
    """The HUD labelled a (-0.4, -0.5) px offset "misaligned": it showed the newest measurement next to a state that
    hysteresis still held from earlier ones. The state is now decided on the median shift it is shown with, against
    the threshold it is shown with, on every frame: while the alarm holds, the label shows the offset that holds it."""
    from stream_fusion.display import hud_text
    from stream_fusion.sync import PairedFrame

    class Engine:
        name, provider = "classical", "numpy"

    frames = demo_frames(12)
    monitor = AlignmentMonitor(hysteresis=3, every_n=1, threshold_px=2.0)
    shifts = [(0, 0)] * 4 + [(6, 0)] * 4 + [(0, 0)] * 4
    labels = []
    for (ir, vis), (dx, dy) in zip(frames, shifts):
        record = monitor.process(shift_image(ir, dx, dy), vis).alignment
        if record.shift is None:
            assert record.status == "unknown"
        else:
            beyond = np.hypot(*record.shift) >= record.threshold_px
            assert record.status == ("misaligned" if beyond else "ok"), record
        item = PairedFrame(0, None, None, ir, 0.0, alignment=record)
        labels.append(hud_text(item, 6.0, Engine()).split("align ")[1].split("  ")[0])
    assert labels[0] == "unknown: too few edges both cameras see"
    assert labels[2].startswith("ok (") and labels[2].endswith(") px < 2 px")
    assert labels[6].startswith("misaligned (-") and labels[6].endswith(") px >= 2 px")
    # The first good frames after the alarm: the state holds, shown with the offset that holds it (about -6 px).
    held = labels[8]
    assert held.startswith("misaligned (") and float(held.split("(")[1].split(",")[0]) < -4, labels
    assert labels[11].startswith("ok (") and labels[11].endswith(") px < 2 px")
