"""Cost and accuracy of the per-frame alignment check, the numbers in docs/alignment.md.

    python -m stream_fusion.bench.align [--widths 160 192 256] [--refine-widths 0 320] [--repeats 200]

Cost: ``ShiftEstimator.measure`` and ``AlignmentMonitor.process`` on real TNO pairs resized to 640x512, on one core
(``cv2.setNumThreads(1)``), median and 95th percentile per pair of the thread's CPU time and of wall time, with and
without the sub-pixel refinement. Accuracy, on all 75 eval pairs
(``../shared/data/eval``): agreement with the second opinion ``calibrate.reference_shift`` and the verdicts on each
pair registered with it and then shifted by 3 px (8 directions) and 5-20 px (6 shifts), and the same with each pair's
own affine calibration as its zero (what a calibrated rig has). Agreement (``--agreement``): the
shift error on pairs registered by their own affine calibration, then shifted. Calibration (``--calibration``):
on every eval pair, cropped by 64 px, the IR is warped by 9 synthetic warps (shifts 1-20 px, rotations up to 3
degrees, scale up to 5 %); the mean corner error of the recovered warp against the pair's own calibration composed
with the synthetic one. Fields of view (``--fields-of-view``): on every third eval pair, one camera replaced by what
a camera with a narrower lens would see (the central share of the view, 4 % off-centre, at the same pixel count);
the same error. Confidence gate (``--gate``): every eval pair registered by the reference, unshifted and shifted by
``SHIFTS_GATE``; each measurement's confidence against its error, to place ``align.min_confidence`` between the
measurements that are right and those that are not.
"""
from __future__ import annotations

import argparse
import platform
import time

import cv2
import numpy as np
from tqdm import tqdm

from stream_fusion import DATA_DIR
from stream_fusion.align import AlignmentMonitor, ShiftEstimator, shift_image
from stream_fusion.calibrate import calibrate, estimate_pair, reference_shift
from stream_fusion.errors import StreamFusionError
from stream_fusion.warp import register, scale_matrix, translation

DATA = DATA_DIR / "eval"
SHIFTS_3PX = [(3, 0), (-3, 0), (0, 3), (0, -3), (2.13, 2.13), (-2.13, 2.13), (2.13, -2.13), (-2.13, -2.13)]
SHIFTS_LARGE = [(5, 0), (0, -5), (-10, 0), (0, 10), (14.2, 14.2), (-20, 0)]
SHIFTS_GATE = [(0, 0), (3, 0), (0, -3), (6, 4)]


def each_pair(pairs: list[tuple[str, np.ndarray, np.ndarray]], desc: str) -> tqdm:
    """``pairs`` with a progress bar on stderr: the sweeps below take minutes, and their result lines come at the end."""
    return tqdm(pairs, desc=desc, unit="pair", leave=False)


def eval_pairs() -> list[tuple[str, np.ndarray, np.ndarray]]:
    pairs = []
    for split in ("tno25", "roadscene50"):
        for path in sorted((DATA / split / "ir").glob("*.png")):
            ir = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
            vis = cv2.imread(str(DATA / split / "vis" / path.name), cv2.IMREAD_GRAYSCALE)
            pairs.append((path.stem, ir, vis))
    return pairs


def timing(widths: list[int], refine_widths: list[int], repeats: int) -> None:
    """Per-pair cost, as the CPU time of this thread (what the check costs one core, even while other processes
    share the machine) and as wall time (which also counts the time other processes held the core)."""
    cv2.setNumThreads(1)
    pairs = [(cv2.resize(ir, (640, 512)), cv2.resize(vis, (640, 512))) for _, ir, vis in eval_pairs()[:25:5]]
    print(f"cost per 640x512 pair, one core ({platform.machine()}, {platform.processor() or 'cpu'}), {repeats} runs:")
    for width in widths:
        for refine_width in refine_widths:
            estimator = ShiftEstimator(width, refine_width=refine_width)
            monitor = AlignmentMonitor("correct", every_n=1, width=width)
            monitor.estimator = estimator
            def process_and_correct(ir: np.ndarray, vis: np.ndarray) -> np.ndarray:
                return register(ir, monitor.process(ir, vis).warp)  # the correction warp, as a CPU engine runs it

            for name, call in (("measure", estimator.measure), ("process+correct", process_and_correct)):
                cpu, wall = [], []
                for i in range(repeats):
                    ir, vis = pairs[i % len(pairs)]
                    ir = shift_image(ir, 6, 0) if name != "measure" else ir  # misaligned: the correction warp runs too
                    started, started_cpu = time.perf_counter(), time.thread_time()
                    call(ir, vis)
                    cpu.append(time.thread_time() - started_cpu)
                    wall.append(time.perf_counter() - started)
                cpu_ms, wall_ms = (np.array(t[repeats // 10:]) * 1000 for t in (cpu, wall))  # first tenth: warm-up
                print(f"  width {width:>3}, refine {refine_width:>3} {name:>15}: CPU median {np.median(cpu_ms):.2f} ms, "
                      f"p95 {np.percentile(cpu_ms, 95):.2f} ms; wall median {np.median(wall_ms):.2f} ms, "
                      f"p95 {np.percentile(wall_ms, 95):.2f} ms")


TRACKING_SHIFTS = [(3, 0), (0, 3), (-3, 0), (0, -3), (5, 5), (-8, 4), (12, -12)]


def tracking(width: int, whitening: float) -> None:
    """Pairs on which the measured shift follows injected IR shifts within 1 px (no reference needed)."""
    estimator = ShiftEstimator(width, whitening)
    tracked = 0
    for _, ir, vis in each_pair(eval_pairs(), "tracking"):
        dx0, dy0, _ = estimator.measure(ir, vis)
        errors = []
        for sx, sy in TRACKING_SHIFTS:
            dx, dy, _ = estimator.measure(shift_image(ir, sx, sy, 0), vis)
            errors.append(np.hypot(dx - dx0 + sx, dy - dy0 + sy))
        tracked += max(errors) < 1.0
    print(f"width {width}, whitening {whitening}: measured shift follows 7 injected shifts (3-17 px) within 1 px on "
          f"{tracked} of 75 eval pairs")


AGREEMENT_SHIFTS = [(2, 0), (0, 2), (4, 0), (0, 4), (8, 0), (0, 8), (16, 0), (0, 16), (-5.5, 3.3), (3, -3)]
STUDY_PAIRS = ["tno25_07", "tno25_10", "tno25_16", "tno25_17", "tno25_18"]  # scripts/misalignment_study.py's


def agreement(refine_widths: list[int]) -> None:
    """How well the measured shift undoes injected shifts on pairs registered by their own affine calibration (the
    truth of scripts/misalignment_study.py), with and without the sub-pixel refinement."""
    registered = {}
    for name, ir, vis in each_pair(eval_pairs(), "agreement: calibrate"):
        try:
            calibration, _ = calibrate([ir], [vis])
        except StreamFusionError:
            continue
        registered[name] = (calibration.apply(ir, (vis.shape[1], vis.shape[0])), vis)
    for refine_width in refine_widths:
        estimator = ShiftEstimator(refine_width=refine_width)
        errors = {}
        for name, (ir, vis) in registered.items():
            errors[name] = [
                float(np.hypot(*np.add(estimator.measure(shift_image(ir, sx, sy, 0), vis)[:2], (sx, sy))))
                for sx, sy in AGREEMENT_SHIFTS
            ]
        for label, names in (("study pairs", STUDY_PAIRS), (f"{len(registered)} calibrated eval pairs", registered)):
            e = np.array([x for name in names for x in errors[name]])
            print(f"refine {refine_width:>3}, {label}: shift error median {np.median(e):.2f} px, within 0.25 px "
                  f"{np.mean(e < 0.25):.0%}, within 0.5 px {np.mean(e < 0.5):.0%}, within 1 px {np.mean(e < 1):.0%}")


def accuracy(width: int, threshold: float) -> None:
    monitor = lambda: AlignmentMonitor(hysteresis=1, every_n=1, width=width, threshold_px=threshold)  # noqa: E731
    raw_flags, false_alarms, disagree, unknown = [], [], [], []
    small, large = [], []
    for name, ir, vis in each_pair(eval_pairs(), "accuracy"):
        reference = reference_shift(ir, vis)
        raw = monitor().process(ir, vis).alignment
        registered_ir = shift_image(ir, *reference, min_shift=0) if reference else ir
        registered = monitor().process(registered_ir, vis).alignment
        if raw.status == "misaligned":
            raw_flags.append(name)
            if reference is None or np.hypot(*reference) < threshold:
                false_alarms.append(name)
        if registered.status == "misaligned":
            disagree.append(name)
            continue
        if registered.status == "unknown":
            unknown.append(name)
            continue
        small += [monitor().process(shift_image(registered_ir, dx, dy, 0), vis).alignment.status for dx, dy in SHIFTS_3PX]
        large += [monitor().process(shift_image(registered_ir, dx, dy, 0), vis).alignment.status for dx, dy in SHIFTS_LARGE]
    print(f"accuracy at width {width}, threshold {threshold} px, on the 75 eval pairs:")
    print(f"  unshifted pairs flagged: {len(raw_flags)}, of which the reference finds < {threshold} px off: {false_alarms}")
    print(f"  check and reference disagree by >= {threshold} px on the pair's own offset: {len(disagree)} {disagree}")
    print(f"  unknown (too little shared structure): {len(unknown)} {unknown}")
    for label, statuses in (("3 px", small), ("5-20 px", large)):
        counts = {s: statuses.count(s) for s in ("misaligned", "unknown", "ok")}
        print(f"  shifted by {label} on the other {len(statuses) // (8 if label == '3 px' else 6)} pairs: {counts} "
              f"({counts['misaligned'] / len(statuses):.1%} flagged)")


def accuracy_calibrated(width: int, threshold: float) -> None:
    """The same verdicts with each pair's own affine calibration as its zero (what a calibrated rig has): registered
    by it, unshifted, then shifted by 3 px (8 directions) and 5-20 px (6 shifts)."""
    monitor = lambda: AlignmentMonitor(hysteresis=1, every_n=1, width=width, threshold_px=threshold)  # noqa: E731
    flagged, refused, unknown, small, large = [], [], [], [], []
    for name, ir, vis in each_pair(eval_pairs(), "accuracy, calibrated"):
        try:
            calibration, _ = calibrate([ir], [vis])
        except StreamFusionError:
            refused.append(name)
            continue
        registered = calibration.apply(ir, (vis.shape[1], vis.shape[0]))
        status = monitor().process(registered, vis).alignment.status
        if status == "unknown":
            unknown.append(name)
            continue
        if status == "misaligned":
            flagged.append(name)
        small += [(name, monitor().process(shift_image(registered, dx, dy, 0), vis).alignment.status)
                  for dx, dy in SHIFTS_3PX]
        large += [(name, monitor().process(shift_image(registered, dx, dy, 0), vis).alignment.status)
                  for dx, dy in SHIFTS_LARGE]
    measured = 75 - len(refused) - len(unknown)
    print(f"accuracy at width {width}, threshold {threshold} px, each pair registered by its own affine calibration "
          f"({len(refused)} refused calibration: {refused}; {len(unknown)} unknown: {unknown}):")
    print(f"  registered pairs flagged: {len(flagged)} of {measured} {flagged}")
    for label, verdicts in (("3 px", small), ("5-20 px", large)):
        missed = [name for name, status in verdicts if status != "misaligned"]
        print(f"  shifted by {label}: {len(verdicts) - len(missed)} of {len(verdicts)} flagged "
              f"({1 - len(missed) / len(verdicts):.1%}); not flagged: {missed}")


CASES = [(1, 0, 0, 1), (-20, 15, 0, 1), (6, -9, 0, 1), (0, 0, 3, 1), (0, 0, -2, 1), (0, 0, 0, 0.95),
         (0, 0, 0, 1.05), (-12, 5, -3, 1.03), (8, 8, 1.5, 0.97)]


def confidence_gate(below: float = 0.25) -> None:
    """Each measurement under ``below`` confidence (pair, injected shift, confidence, error against the reference),
    the lowest confidence of a measurement within 1 px, and the highest under it of one that is not. (Above it, a few
    confident pairs disagree with the reference by a scene's parallax: the accuracy table, not the gate.)"""
    estimator = ShiftEstimator()
    rows = []
    for name, ir, vis in each_pair(eval_pairs(), "gate"):
        reference = reference_shift(ir, vis)
        if reference is None:
            print(f"{name}: no reference shift")
            continue
        registered = shift_image(ir, *reference)
        for dx, dy in SHIFTS_GATE:
            mx, my, confidence = estimator.measure(shift_image(registered, dx, dy, min_shift=0), vis)
            rows.append((confidence, float(np.hypot(mx + dx, my + dy)), name, (dx, dy)))
    rows.sort()
    for confidence, error, name, shift in rows:
        if confidence < below:
            print(f"  {name} shifted {shift}: confidence {confidence:.3f}, error {error:.2f} px")
    right = min((confidence for confidence, error, _, _ in rows if error < 1), default=0.0)
    wrong = max((confidence for confidence, error, _, _ in rows if error >= 1 and confidence < right), default=0.0)
    print(f"gate: {len(rows)} measurements; the lowest confidence within 1 px of the reference: {right:.3f}; the "
          f"highest below it off by 1 px or more: {wrong:.3f} (the gate belongs between them)")


def corner_error(found: np.ndarray, expected: np.ndarray, size: tuple[int, int]) -> float:
    """Mean distance (px) between where two warps send the four corners of a frame of ``size`` (w, h)."""
    w, h = size
    corners = np.float64([[0, 0], [w, 0], [w, h], [0, h]])[None]
    moved = cv2.perspectiveTransform(corners, found)[0] - cv2.perspectiveTransform(corners, expected)[0]
    return float(np.linalg.norm(moved, axis=1).mean())


def calibration_accuracy(model: str, margin: int = 64) -> None:
    errors, refused, per_pair = [], [], []
    for name, ir, vis in each_pair(eval_pairs(), f"calibration ({model})"):
        h, w = ir.shape
        size = (w - 2 * margin, h - 2 * margin)
        shift = np.array([[1, 0, margin], [0, 1, margin], [0, 0, 1]], np.float64)
        try:
            baseline, _ = estimate_pair(ir[margin:-margin, margin:-margin], vis[margin:-margin, margin:-margin], model)
        except StreamFusionError:
            refused.append(name)
            continue
        pair_errors = []
        for tx, ty, degrees, scale in CASES:
            applied = np.vstack([cv2.getRotationMatrix2D((w / 2, h / 2), degrees, scale), [0, 0, 1]])
            applied[:2, 2] += (tx, ty)
            warped = cv2.warpAffine(ir, applied[:2], (w, h))[margin:-margin, margin:-margin]
            expected = baseline @ np.linalg.inv(shift) @ np.linalg.inv(applied) @ shift
            try:
                found, _ = estimate_pair(warped, vis[margin:-margin, margin:-margin], model)
            except StreamFusionError:
                pair_errors.append(np.inf)
                continue
            pair_errors.append(corner_error(found, expected, size))
        errors += pair_errors
        per_pair.append(max(pair_errors))
    errors, per_pair = np.array(errors), np.array(per_pair)
    print(f"{model} calibration on {len(per_pair)} eval pairs x {len(CASES)} synthetic warps (refused as baseline: "
          f"{refused}): median corner error {np.median(errors):.2f} px; cases within 0.5 px {np.mean(errors < 0.5):.0%}, "
          f"within 1 px {np.mean(errors < 1):.0%}; pairs with every case within 0.5 px {np.sum(per_pair < 0.5)}, "
          f"within 1 px {np.sum(per_pair < 1)}")


FIELDS_OF_VIEW = [0.5, 0.6, 0.7, 0.8, 0.9, 1.15, 1.3, 1.6, 2.0]  # IR's field of view over the visible camera's


def central_view(
    image: np.ndarray, share: float, size: tuple[int, int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """What a camera with ``share`` of this one's field of view (its optical axis 4 % of the width to the right)
    sees, and the 3x3 map from this frame's pixels to that view's. ``size`` (w, h): that camera's frame, of its own
    shape (square pixels: the view is ``share`` of this frame's width, or of its height where that binds); default
    this frame's size."""
    h, w = image.shape
    out = size or (w, h)
    cw, ch = w * share, w * share * out[1] / out[0]
    if ch > h * share:
        cw, ch = h * share * out[0] / out[1], h * share
    cw, ch = round(cw), round(ch)
    x0, y0 = min((w - cw) // 2 + round(0.04 * w), w - cw), (h - ch) // 2
    view = cv2.resize(image[y0:y0 + ch, x0:x0 + cw], out, interpolation=cv2.INTER_LINEAR)
    return view, scale_matrix(out[0] / cw, out[1] / ch) @ translation(-x0, -y0)


IR_CAMERA = (320, 240)  # a 4:3 thermal sensor, for the frames-of-another-shape sweep
CAMERA_SHARES = [1.0, 0.8, 0.6]


def fields_of_view() -> None:
    """Calibration of cameras whose lenses differ: the IR narrower than the visible (ratio < 1: the IR frame is the
    visible camera's central view) or wider (> 1: the visible frame is the IR camera's central view); then a 4:3 IR
    camera (``IR_CAMERA``) whose view spans the visible one's width or height (whichever binds) times 1, 0.8, 0.6."""
    cases = [(f"IR field of view x{ratio:g}", ratio, None) for ratio in FIELDS_OF_VIEW]
    cases += [(f"4:3 IR camera {IR_CAMERA[0]}x{IR_CAMERA[1]}, view x{share:g}", share, IR_CAMERA)
              for share in CAMERA_SHARES]
    errors: dict[str, list[float]] = {label: [] for label, _, _ in cases}
    refused = []
    for name, ir, vis in each_pair(eval_pairs()[::3], "fields of view"):
        try:
            baseline, _ = estimate_pair(ir, vis)
        except StreamFusionError:
            refused.append(name)
            continue
        for label, ratio, size in cases:
            if ratio < 1 or size:
                narrow_ir, to_view = central_view(ir, ratio, size)
                pair, expected = (narrow_ir, vis), baseline @ np.linalg.inv(to_view)
            else:
                narrow_vis, to_view = central_view(vis, 1 / ratio)
                pair, expected = (ir, narrow_vis), to_view @ baseline
            try:
                found, _ = estimate_pair(*pair)
            except StreamFusionError:
                errors[label].append(np.inf)
                continue
            errors[label].append(corner_error(found, expected, (pair[0].shape[1], pair[0].shape[0])))
    print(f"affine calibration of cameras with other fields of view and frame shapes, every third eval pair "
          f"(refused as baseline: {refused}); error: mean corner distance of the IR frame, visible px:")
    for label, values in errors.items():
        values = np.array(values)
        print(f"  {label}: median {np.median(values):.2f} px, within 1 px {np.mean(values < 1):.0%}, "
              f"within 2 px {np.mean(values < 2):.0%}, refused {np.mean(np.isinf(values)):.0%}")
    every = np.array([e for label, values in errors.items() if label.startswith("IR field") for e in values])
    print(f"  all fields of view: within 1 px {np.mean(every < 1):.0%}, within 2 px {np.mean(every < 2):.0%}, "
          f"refused {np.mean(np.isinf(every)):.0%}")


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m stream_fusion.bench.align",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[160, 192, 256])
    parser.add_argument("--refine-widths", type=int, nargs="+", default=[0, 320],
                        help="sub-pixel refinement grids to time (0 = coarse phase correlation only)")
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--accuracy-widths", type=int, nargs="*", default=[160, 192, 256])
    parser.add_argument("--thresholds", type=float, nargs="+", default=[2.0], help="align.threshold_px values")
    parser.add_argument("--whitening", type=float, nargs="*", default=[1.0, 0.3],
                        help="spectrum whitening exponents to compare (1 = plain phase correlation)")
    parser.add_argument("--agreement", action="store_true",
                        help="also measure the shift error on eval pairs registered by their own calibration (minutes)")
    parser.add_argument("--calibration", action="store_true", help="also sweep calibrate over all eval pairs (minutes)")
    parser.add_argument("--gate", action="store_true",
                        help="also place the confidence gate: confidence against error on every eval pair (minutes)")
    parser.add_argument("--fields-of-view", action="store_true",
                        help="also calibrate cameras with other fields of view on every third eval pair (minutes)")
    args = parser.parse_args()
    timing(args.widths, args.refine_widths, args.repeats)
    for whitening in args.whitening:
        tracking(192, whitening)
    for width in args.accuracy_widths:
        for threshold in args.thresholds:
            accuracy(width, threshold)
            accuracy_calibrated(width, threshold)
    if args.agreement:
        agreement(args.refine_widths)
    if args.calibration:
        for model in ("affine", "homography"):
            calibration_accuracy(model)
    if args.fields_of_view:
        fields_of_view()
    if args.gate:
        confidence_gate()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
