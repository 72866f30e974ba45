"""Calibrate a two-camera rig: estimate the warp that maps the IR camera onto the visible camera's pixel grid.

    python -m stream_fusion.calibrate --ir SRC --vis SRC --out configs/calibration.yaml [--model affine|homography]
                                      [--frames N]

SRC is an image file, a folder of images (name order), a video file, a camera index or a stream URL (as for
``run_stream.py``). The rig should look at a
scene with structure at the working distance (parallax makes near and far objects disagree). For each of N frame
pairs the warp is estimated by multi-scale ECC (``cv2.findTransformECC``, coarse to fine) on gradient-magnitude maps,
started from the phase-correlation shift of the alignment check; the frames' estimates are combined by the median of
where they send the frame corners. The written YAML is read by ``stream_fusion.align.load_calibration`` and used by
``run_stream.py --calibration PATH``.

Why gradients and ECC: IR and visible intensities are unrelated, but their edges coincide; ECC maximises the
correlation of the two edge maps directly, so it needs no feature matches that cross-modal images rarely give.
"""
from __future__ import annotations

import argparse
import sys
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np
import yaml
from tqdm import tqdm

from stream_fusion.evaluate import metrics
from stream_fusion.align import MODELS, Calibration, ShiftEstimator, gradient_map
from stream_fusion.capture import open_source
from stream_fusion.engine.frames import to_gray
from stream_fusion.errors import StreamFusionError, run_cli
from stream_fusion.warp import IrWarp, resize_onto, scale_matrix

# Final ECC correlation of the registered gradient maps (over the template, border band left out) below which the
# warp is refused: 70 of the 75 eval pairs reach 0.21-0.69 (the other 5: smoke, night, a featureless field, 0.08-0.14),
# 10 random mismatched eval scenes reached 0.08-0.19 (one did not converge); noise against an image is refused (tested).
MIN_CORRELATION = 0.2
# Finer levels blur more (1 px per BLUR_WIDTH px of width): full-resolution gradients are mostly sensor noise and
# texture one camera does not see, which would drown the correlation of the shared edges.
BLUR_WIDTH = 320
CHECK_WARNING_PX = 2.0  # residual or frame-to-frame spread from which the CLI warns (the check's default threshold)
COARSEST_WIDTH = 160  # the pyramid starts where the alignment check measures, so its shift is a good start
# Share of the visible frame's width and height left out of the ECC template at each border. ECC scores only pixels
# whose partner lies inside the IR frame, so with the whole frame as template the scored region moves with the warp
# (a 20 px shift trades a 20 px strip at one border for one at the other), and on cross-modal pairs, where different
# parts of the frame prefer slightly different warps, the optimum moves with it. A template that the warped IR covers
# whole is scored on the same pixels whatever the warp: the affine median corner error of 9 synthetic warps on the
# eval pairs fell from 0.33 to 0.10 px, cases within 0.5 px from 63 % to 80 % (docs/alignment.md). Bands of 5 and 8 %
# did about as well on a subset; a narrower band lets the border strips back in, a wider one leaves less structure.
TEMPLATE_BAND = 0.06
# The scale and rotation search that finds ECC's starting points: IR footprint widths from 0.4 to 2.5 times the
# visible frame's (4 % apart) and rotations up to 6 degrees, on gradient maps SEARCH_WIDTH px wide (most of the time a
# pair takes to calibrate: docs/alignment.md).
SEARCH_WIDTH = 128
SEARCH_SCALES = np.geomspace(0.4, 2.5, 47)
SEARCH_ANGLES = np.linspace(-6.0, 6.0, 9)
SEARCH_STARTS = 3  # best distinct search results ECC starts from
NEAR_SCALE = 0.09  # |log scale| of the search's hypotheses that count as the same field of view
MAX_ANISOTROPY = 1.1  # stretch or shear (singular value ratio) beyond which a searched start's result is dropped
SAME_ASPECT = 0.02  # |log| of the frames' aspect ratio over each other's below which they count as one shape
FOV_EVIDENCE = 1.5  # how many times better a fit at another field of view must be to be tried (see _similarity_search)
# Area of the IR frame's footprint on the visible frame, as a share of it, beyond which a warp is refused as
# degenerate: a thermal lens of 0.35 times the visible camera's field of view still passes (0.12), a collapse does not.
MIN_COVER, MAX_COVER = 0.1, 8.0
# The same bounds where the search found no other field of view (nor frame shape): a warp there that covers under half
# or over twice the frame is a homography that wandered off on a weak pair (FLIR_07206, FLIR_09465: 2.0 and 3.5
# times), not a lens.
SAME_VIEW_COVER = (0.5, 2.0)


def read_frames(spec: str, count: int, role: str) -> list[np.ndarray]:
    """Up to ``count`` gray frames of a source, any kind ``run_stream.py`` takes (an image file, a folder of images,
    a video file, a camera index or a stream URL), read through the same source layer."""
    source = open_source(spec, role)
    frames = []
    try:
        while len(frames) < count:
            frame = source.read()
            if frame is None:
                break
            frames.append(to_gray(frame))
    finally:
        source.close()
    if not frames:
        raise StreamFusionError(f"no frames could be read from {role} source {spec}")
    return frames


def _pyramid(width: int, height: int) -> list[tuple[int, int]]:
    """Level sizes from ~COARSEST_WIDTH px wide up to full resolution, halving each step."""
    sizes = [(width, height)]
    while sizes[-1][0] // 2 >= COARSEST_WIDTH:
        w, h = sizes[-1]
        sizes.append((w // 2, max(16, h // 2)))
    return sizes[::-1]


def estimate_pair(ir: np.ndarray, vis: np.ndarray, model: str = "affine") -> tuple[np.ndarray, float]:
    """3x3 matrix mapping IR pixel coordinates to visible ones, and the final ECC correlation (0..1).

    Raises ``StreamFusionError`` when ECC does not converge or the warp is degenerate.
    """
    if model not in MODELS:
        raise StreamFusionError(f"--model must be one of {', '.join(MODELS)}, got {model!r}")
    ir, vis = to_gray(ir), to_gray(vis)
    vh, vw = vis.shape
    ih, iw = ir.shape
    ir_to_grid = scale_matrix(vw / iw, vh / ih)  # IR pixel -> IR resampled onto the visible frame's size

    def ir_to_visible(warp: np.ndarray) -> np.ndarray:  # ECC's warp maps visible coordinates to the IR's
        return np.linalg.inv(warp) @ ir_to_grid

    ir_on_grid = resize_onto(ir, (vw, vh))
    dx, dy, _ = ShiftEstimator(COARSEST_WIDTH).measure(ir_on_grid, vis)
    # ECC's warp W maps template (visible) coordinates to input (IR) ones: vis(x) ~ ir(W x); registering the IR
    # by (dx, dy) means W x = x - (dx, dy). Repetitive structure (windows, fences) can fool the phase correlation by
    # a period, so ECC also starts from no shift (cameras side by side look roughly the same way), and from the best
    # few warps of a search over scale and rotation (lenses of different fields of view, a camera mounted askew:
    # ECC converges only from within ~10 % of the right scale). The start that ends with the highest correlation wins.
    starts = [np.array([[1, 0, -dx], [0, 1, -dy], [0, 0, 1]], np.float64)]
    if np.hypot(dx, dy) >= 2.0:
        starts.append(np.eye(3))
    aspect = (ih * vw) / (vh * iw)  # the IR frame's height-to-width ratio over the visible frame's
    searched = [np.linalg.inv(found) for found in _similarity_search(ir_on_grid, vis, aspect)]
    results = []
    for index, start in enumerate(starts + searched):
        try:
            warp, correlation = _ecc_pyramid(ir_on_grid, vis, start, model)
        except cv2.error:
            continue
        # Square pixels on both cameras: another field of view scales both axes alike. A searched start that ECC
        # stretched or sheared is a chance fit of a weak pair (seen on the eval pairs), not a lens.
        if index < len(starts) or _anisotropy(ir_to_visible(warp)) <= MAX_ANISOTROPY:
            results.append((warp, correlation))
    if not results:
        raise StreamFusionError(
            "calibration did not converge: the IR and visible frames share too little structure "
            "(point both cameras at a scene with clear edges at the working distance, or try more --frames)"
        )
    warp, correlation = max(results, key=lambda result: result[1])
    warp /= warp[2, 2]
    matrix = ir_to_visible(warp)  # IR pixel -> visible pixel
    cover = (MIN_COVER, MAX_COVER) if searched else SAME_VIEW_COVER
    _check_warp(np.linalg.inv(warp), (vw, vh), correlation, cover)
    return matrix / matrix[2, 2], float(correlation)


def _similarity_search(
    ir_on_grid: np.ndarray, vis: np.ndarray, aspect: float = 1.0, count: int = SEARCH_STARTS
) -> list[np.ndarray]:
    """The ``count`` best distinct similarity warps of the IR frame (3x3, IR-on-grid -> visible full-size
    coordinates) of a brute-force search over ``SEARCH_SCALES`` x ``SEARCH_ANGLES`` on small gradient maps, or none
    where the frames look like one field of view. For each hypothesis the IR map is scaled and rotated about the
    centre, its translation found by phase correlation, and the result scored by the correlation of the two maps
    where they overlap (the same score at every scale, unlike a template match).

    ``aspect``: the IR frame's height-to-width ratio over the visible frame's. ``ir_on_grid`` was stretched to the
    visible frame's shape, so a similarity of the IR's own (square) pixels scales its rows ``aspect`` times as much
    as its columns here: a 5:4 thermal camera beside a 16:9 visible one is ``aspect`` 1.42, and no start of one
    scale both ways would fit it."""
    vh, vw = vis.shape
    size = (SEARCH_WIDTH, max(16, round(vh * SEARCH_WIDTH / vw)))
    fixed, moving = gradient_map(vis, size), gradient_map(ir_on_grid, size)
    # Windowed here: cv2.phaseCorrelate given a window multiplies its inputs by it in place.
    window = cv2.createHanningWindow(size, cv2.CV_32F)
    fixed_windowed = fixed * window
    centre = ((size[0] - 1) / 2, (size[1] - 1) / 2)
    found = []
    for scale in SEARCH_SCALES:
        for angle in SEARCH_ANGLES:
            similarity = cv2.getRotationMatrix2D(centre, float(angle), float(scale))  # IR -> visible, search px
            similarity[:, 1] *= aspect  # the stretch back to square IR pixels, then the rotation and scale
            similarity[:, 2] = centre - similarity[:, :2] @ centre  # about the centre
            (sx, sy), _ = cv2.phaseCorrelate(fixed_windowed, cv2.warpAffine(moving, similarity, size) * window)
            similarity[:, 2] -= (sx, sy)  # the IR content sits (sx, sy) from where the visible has it: move it back
            found.append((_overlap_correlation(fixed, moving, similarity), float(scale), float(angle), similarity))
    found.sort(key=lambda item: -item[0])
    # A weak cross-modal pair can also fit a magnified or shrunk copy of itself, often better than its true warp
    # (coarse, smooth edge maps correlate with anything), and on the eval pairs, starts near the same scale sent ECC
    # to optima the alignment check disagrees with as often as they helped. So the search only speaks when another
    # field of view fits clearly better: FOV_EVIDENCE times better than anything within NEAR_SCALE of the same scale.
    near = max((item[0] for item in found if abs(np.log(item[1])) <= NEAR_SCALE), default=0.0)
    if abs(np.log(aspect)) <= SAME_ASPECT and found[0][0] < FOV_EVIDENCE * near:
        return []  # (frames of other shapes always need the search: the other starts have the wrong shape)
    kept: list[tuple[float, float, np.ndarray]] = []
    for _, scale, angle, similarity in found:
        if all(abs(np.log(scale / s)) > 0.08 or abs(angle - a) > 3 or np.abs(similarity[:, 2] - m[:, 2]).max() > 3
               for s, a, m in kept):
            kept.append((scale, angle, similarity))
            if len(kept) == count:
                break
    to_search = scale_matrix(size[0] / vw, size[1] / vh)
    return [np.linalg.inv(to_search) @ np.vstack([m, [0, 0, 1]]) @ to_search for _, _, m in kept]


def _anisotropy(matrix: np.ndarray) -> float:
    """Ratio of the largest to the smallest singular value of a warp's linear part (1 for a similarity)."""
    singular = np.linalg.svd(matrix[:2, :2] / matrix[2, 2], compute_uv=False)
    return float(singular[0] / max(singular[1], 1e-9))


def _overlap_correlation(fixed: np.ndarray, moving: np.ndarray, warp: np.ndarray) -> float:
    """Pearson correlation of ``fixed`` and ``moving`` warped by ``warp`` (2x3) over the pixels both frames cover;
    0 where they share less than a quarter of the fixed frame (a sliver can correlate by chance)."""
    h, w = fixed.shape
    inside = cv2.warpAffine(np.ones_like(moving), warp, (w, h), flags=cv2.INTER_NEAREST) > 0
    if inside.sum() < 0.25 * w * h:
        return 0.0
    return metrics.correlation(fixed[inside], cv2.warpAffine(moving, warp, (w, h))[inside])


def _ecc_pyramid(ir_on_grid: np.ndarray, vis: np.ndarray, warp: np.ndarray, model: str) -> tuple[np.ndarray, float]:
    """ECC coarse to fine from ``warp`` (3x3, visible -> IR coordinates at full size); raises cv2.error when ECC
    does not converge. A homography's 8 parameters wander on cross-modal edges at coarse levels: it starts from the
    affine solution and is refined on the two finest levels only."""
    vh, vw = vis.shape
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 200, 1e-6)
    sizes = _pyramid(vw, vh)
    steps = [(size, "affine") for size in sizes]
    if model == "homography":
        steps += [(size, "homography") for size in sizes[-2:]]
    correlation = 0.0
    affine: tuple[np.ndarray, float] | None = None
    for size, step in steps:
        if step == "homography" and affine is None:
            affine = (warp.copy(), correlation)
        blur = max(1.0, size[0] / BLUR_WIDTH)
        bx, by = round(TEMPLATE_BAND * size[0]), round(TEMPLATE_BAND * size[1])
        template = np.ascontiguousarray(gradient_map(vis, size, blur, 4 * blur)[by:size[1] - by, bx:size[0] - bx])
        moving = gradient_map(ir_on_grid, size, blur, 4 * blur)
        # ECC's warp at this level maps template px (visible, scaled, band cropped off) to moving px (IR, scaled).
        scaled = scale_matrix(size[0] / vw, size[1] / vh)
        level = np.array([[1, 0, -bx], [0, 1, -by], [0, 0, 1]]) @ scaled
        level_warp = scaled @ warp @ np.linalg.inv(level)
        motion = cv2.MOTION_HOMOGRAPHY if step == "homography" else cv2.MOTION_AFFINE
        start = (level_warp / level_warp[2, 2] if step == "homography" else level_warp[:2]).astype(np.float32)
        correlation, found = cv2.findTransformECC(template, moving, start, motion, criteria, None, 5)
        found = found.astype(np.float64)
        level_warp = found if step == "homography" else np.vstack([found, [0, 0, 1]])
        warp = np.linalg.inv(scaled) @ level_warp @ level
    if affine is not None and correlation < affine[1]:
        return affine[0], float(affine[1])  # the homography wandered off to a worse optimum: keep the affine start
    return warp, float(correlation)


def reference_shift(ir: np.ndarray, vis: np.ndarray, width: int = 384) -> tuple[float, float] | None:
    """Translation registering the IR (same-size frames), by translation-only ECC on gradient maps at up to ``width``
    px wide; None where ECC does not converge.

    A second opinion on the alignment check's estimate (another algorithm at twice its resolution): the tests and
    ``stream_fusion.bench.align`` judge the check against it, since the eval pairs are registered to a few px only.
    """
    h, w = vis.shape[:2]
    width = min(width, w)
    size, scale = (width, round(h * width / w)), w / width
    dx, dy, _ = ShiftEstimator().measure(ir, vis)
    start = np.float32([[1, 0, -dx / scale], [0, 1, -dy / scale]])
    criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-5)
    try:
        _, warp = cv2.findTransformECC(
            gradient_map(to_gray(vis), size, 1.2, 4.8), gradient_map(to_gray(ir), size, 1.2, 4.8), start,
            cv2.MOTION_TRANSLATION, criteria, None, 5,
        )
    except cv2.error:
        return None
    return -float(warp[0, 2]) * scale, -float(warp[1, 2]) * scale


def _check_warp(
    grid_matrix: np.ndarray, size: tuple[int, int], correlation: float, cover: tuple[float, float]
) -> None:
    """Refuse warps no real rig has: low correlation, a flipped or collapsed image, or one that misses the frame."""
    if not np.isfinite(grid_matrix).all() or correlation < MIN_CORRELATION:
        raise StreamFusionError(
            f"calibration did not converge to a trustworthy warp (edge correlation {correlation:.2f} < "
            f"{MIN_CORRELATION}): the frames do not show the same scene, or share too little structure"
        )
    mapped, share = footprint(grid_matrix, size, size)
    edges = np.roll(mapped, -1, axis=0) - mapped
    quad = np.array([_cross(edges[i], edges[(i + 1) % 4]) for i in range(4)])  # same sign everywhere: convex
    if not cover[0] <= share <= cover[1] or not (np.all(quad > 0) or np.all(quad < 0)):
        raise StreamFusionError(
            f"calibration result is degenerate (the IR frame would cover {share:.0%} of the visible frame, "
            "or be folded): the frames do not show the same scene"
        )


def footprint(matrix: np.ndarray, ir_size: tuple[int, int], vis_size: tuple[int, int]) -> tuple[np.ndarray, float]:
    """Where ``matrix`` (IR pixel -> visible pixel) puts the IR frame's four corners, and the area of that
    quadrilateral as a share of the visible frame's (below 1: the IR camera sees less than the visible one)."""
    mapped = IrWarp(matrix, ir_size, vis_size).view_corners()
    area = 0.5 * abs(_cross(mapped[2] - mapped[0], mapped[3] - mapped[1]))
    return mapped, area / (vis_size[0] * vis_size[1])


def _cross(a: np.ndarray, b: np.ndarray) -> float:
    return float(a[0] * b[1] - a[1] * b[0])


def combine(matrices: list[np.ndarray], ir_size: tuple[int, int], model: str) -> tuple[np.ndarray, float]:
    """One warp from several frames' estimates (median of where they send the IR frame corners), and the spread:
    mean distance (visible px) of each frame's corners from the combined ones, a measure of repeatability."""
    w, h = ir_size
    corners = np.float64([[0, 0], [w, 0], [w, h], [0, h]])
    mapped = np.stack([cv2.perspectiveTransform(corners[None], m)[0] for m in matrices])
    median = np.median(mapped, axis=0)
    if model == "homography":
        matrix = cv2.getPerspectiveTransform(corners.astype(np.float32), median.astype(np.float32)).astype(np.float64)
    else:
        design = np.hstack([corners, np.ones((4, 1))])
        solution, *_ = np.linalg.lstsq(design, median, rcond=None)
        matrix = np.vstack([solution.T, [0, 0, 1]])
    spread = float(np.linalg.norm(mapped - median, axis=2).mean())
    return matrix, spread


def residual_px(calibration: Calibration, irs: list[np.ndarray], viss: list[np.ndarray]) -> float:
    """Median shift (visible px) the alignment check still measures after the calibration, at up to 640 px wide
    (median: one frame with a passing car should not hide a good calibration)."""
    estimator = ShiftEstimator(640)
    shifts = []
    for ir, vis in zip(irs, viss):
        warped = calibration.apply(ir, (vis.shape[1], vis.shape[0]))
        dx, dy, _ = estimator.measure(warped, vis)
        shifts.append(float(np.hypot(dx, dy)))
    return float(np.median(shifts))


def calibrate(
    irs: list[np.ndarray], viss: list[np.ndarray], model: str = "affine", progress: bool = False
) -> tuple[Calibration, float]:
    """The rig's calibration from paired frames, and the spread of the per-frame estimates (px). ``progress``: a
    progress bar on stderr (a homography on many full-HD frames takes a while)."""
    if len(irs) != len(viss) or not irs:
        raise StreamFusionError(f"need the same number of IR and visible frames, got {len(irs)} and {len(viss)}")
    if len({ir.shape[:2] for ir in irs}) > 1 or len({vis.shape[:2] for vis in viss}) > 1:
        raise StreamFusionError("all IR frames must have one size, and all visible frames another")
    matrices, correlations = [], []
    for ir, vis in tqdm(list(zip(irs, viss)), desc="calibrate", unit="frame", disable=not progress, leave=False):
        matrix, correlation = estimate_pair(ir, vis, model)
        matrices.append(matrix)
        correlations.append(correlation)
    ir_size = (irs[0].shape[1], irs[0].shape[0])
    vis_size = (viss[0].shape[1], viss[0].shape[0])
    matrix, spread = combine(matrices, ir_size, model)
    calibration = Calibration(model, matrix, ir_size, vis_size, 0.0, float(np.mean(correlations)))
    residual = residual_px(calibration, irs, viss)
    return Calibration(model, matrix, ir_size, vis_size, residual, calibration.correlation), spread


def write_calibration(calibration: Calibration, path: str | Path) -> None:
    """Plain YAML a person can read and edit: model, matrix rows, sizes, residual, date."""
    matrix = calibration.matrix if calibration.model == "homography" else calibration.matrix[:2]
    data = {
        "model": calibration.model,
        "matrix": [[round(float(v), 8) for v in row] for row in matrix],
        "ir_size": list(calibration.ir_size),
        "vis_size": list(calibration.vis_size),
        "residual_px": round(calibration.residual_px, 3),
        "correlation": round(calibration.correlation, 4),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            "# IR -> visible warp written by python -m stream_fusion.calibrate (matrix maps IR pixels to visible pixels)\n"
            + yaml.safe_dump(data, sort_keys=False, default_flow_style=None)
        )
    except OSError as error:
        raise StreamFusionError(f"cannot write {path}: {error.strerror or error}") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m stream_fusion.calibrate",
        description="Estimate the IR -> visible warp of a two-camera rig and write it as YAML.",
    )
    parser.add_argument("--ir", required=True, help="IR source: image, image folder, video file, camera index or URL")
    parser.add_argument("--vis", required=True, help="visible source (same kinds as --ir)")
    parser.add_argument("--out", required=True, help="YAML file to write, e.g. configs/calibration.yaml")
    parser.add_argument("--model", choices=MODELS, default="affine", help="warp model (default: affine)")
    parser.add_argument("--frames", type=int, default=5, help="frame pairs to use (default: 5)")
    args = parser.parse_args(argv)
    if args.frames < 1:
        raise StreamFusionError(f"--frames must be at least 1, got {args.frames}")
    irs = read_frames(args.ir, args.frames, "ir")
    viss = read_frames(args.vis, args.frames, "vis")
    count = min(len(irs), len(viss))
    # A bar for people at a terminal; logs and pipes get only the result line (and a refusal stays one line).
    calibration, spread = calibrate(irs[:count], viss[:count], args.model, progress=sys.stderr.isatty())
    write_calibration(calibration, args.out)
    _, share = footprint(calibration.matrix, calibration.ir_size, calibration.vis_size)
    print(
        f"{calibration.model} calibration from {count} frame pair(s): residual {calibration.residual_px:.2f} px, "
        f"edge correlation {calibration.correlation:.2f}, spread across frames {spread:.2f} px, IR view "
        f"{share:.0%} of the visible frame -> {args.out}"
    )
    if calibration.residual_px >= CHECK_WARNING_PX or spread >= CHECK_WARNING_PX:
        # Not a refusal: on some cross-modal scenes the check and ECC disagree by a few px (docs/alignment.md).
        print(
            f"warning: the frames disagree (spread {spread:.1f} px) or the alignment check still measures "
            f"{calibration.residual_px:.1f} px after this warp; look at the fused output, or calibrate on a scene "
            "with more structure at the working distance",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    run_cli(main)
