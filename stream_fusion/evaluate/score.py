"""Score a folder of fused images: ``python -m stream_fusion.evaluate --ir DIR --vis DIR --fused DIR [--out DIR]``.

Works for any method's output, ours or another paper's: fused images are matched to the source pairs by file name
(stem, any image extension) and scored on their gray / luma with :mod:`stream_fusion.evaluate.metrics`. When every visible
image of the set is colour, the colour fidelity of the fused images to them (``dE00``, ``dE00_ab``, ``chroma_r``) is scored too.
Writes ``metrics.md`` (mean and per-pair Markdown tables), ``metrics.csv`` and ``grid.png`` (rows of IR | visible |
fused, in colour where the images are) into ``--out`` (default: the fused folder).
"""
from __future__ import annotations

import argparse
import csv
import logging
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from stream_fusion.engine.frames import to_gray
from stream_fusion.errors import StreamFusionError
from stream_fusion.batch import load_pair, read_colour
from stream_fusion.capture import list_images, match_pairs
from stream_fusion.evaluate.metrics import COLOUR_METRIC_NAMES, METRIC_NAMES, all_metrics, colour_metrics
from stream_fusion.evaluate.stability import (
    DAYLIGHT_BAR, STATIC_LEVELS, daylight_summary, luma_ratio, temporal_change, visible_is_brighter,
)
from stream_fusion.config import load_config
from stream_fusion.steady import SteadyFilter

Scores = dict[str, float]
log = logging.getLogger(__name__)

# What each column means, for the header of every table we write (higher is better for all but dE00).
METRIC_NOTES = (
    "EN entropy (bits), SD standard deviation, SF spatial frequency, AG average gradient (these four reward contrast "
    "and noise alike); MI mutual information with IR + with visible (nats); SCD sum of correlations of differences; "
    "VIF visual information fidelity, IR + visible; Qabf edge transfer (perfect = 0.975); SSIM IR + visible (L = 255). "
    "Higher is better for all; judge mainly by VIF, Qabf, SSIM and MI."
)
# Added to the notes when the set's visible images are colour and the two colour-fidelity columns are present.
COLOUR_NOTES = (
    "Colour fidelity to the visible image (colour sets only): dE00 mean CIEDE2000 colour difference fused vs visible "
    "(LOWER is better; about 1 is just noticeable; lightness changes count too), dE00_ab the same at the visible "
    "lightness (hue and saturation error alone; LOWER is better), chroma_r mean correlation of the a* "
    "and b* channels fused vs visible (higher is better; 1 = colour structure kept, 0 = none, e.g. a gray fusion)."
)


def fused_paths(pairs: list[tuple[str, Path, Path]], fused_dir: Path) -> list[Path]:
    """The fused image of every pair; a missing one is an error (a mean over fewer pairs would silently flatter)."""
    fused = list_images(fused_dir, "fused")
    missing = [name for name, _, _ in pairs if name not in fused]
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise StreamFusionError(f"no fused image for {', '.join(missing[:3])}{more} in {fused_dir}")
    return [fused[name] for name, _, _ in pairs]


def load_triplet(name: str, ir_path: Path, vis_path: Path, fused_path: Path) -> tuple[np.ndarray, ...]:
    """IR gray, visible as stored (gray or BGR) and fused as stored, all checked to one size."""
    ir, vis = load_pair(name, ir_path, vis_path)
    fused = read_colour(fused_path)
    if fused.shape[:2] != vis.shape[:2]:
        raise StreamFusionError(f"fused {fused_path.name} is {fused.shape[1]}x{fused.shape[0]} but its sources are "
                                f"{vis.shape[1]}x{vis.shape[0]}")
    return ir, vis, fused


def is_colour(image: np.ndarray) -> bool:
    """True for a BGR image whose channels differ somewhere: a gray picture saved as RGB has no colour to keep."""
    if image.ndim != 3:
        return False
    return bool(np.any(image[:, :, 0] != image[:, :, 1]) or np.any(image[:, :, 1] != image[:, :, 2]))


def score_pairs(
    pairs: list[tuple[str, Path, Path]], fused: list[Path], progress: bool = True
) -> list[tuple[str, Scores]]:
    """Per-pair metrics of every fused image against its IR and visible sources (gray / luma), plus the colour
    fidelity (:data:`COLOUR_METRIC_NAMES`) when every visible image of the set is colour. A mixed set gets none
    (with a warning): a mean over only its colour pairs would be another set's number under the same name."""
    rows, colour = [], []
    for (name, ir_path, vis_path), fused_path in tqdm(
        list(zip(pairs, fused)), desc="evaluate", unit="pair", disable=not progress
    ):
        ir, vis, image = load_triplet(name, ir_path, vis_path, fused_path)
        fused_gray, vis_gray = to_gray(image), to_gray(vis)
        scores = all_metrics(fused_gray, ir, vis_gray)
        scores["luma_r"] = luma_ratio(fused_gray, vis_gray)
        scores["vis_brighter"] = float(visible_is_brighter(ir, vis_gray))
        rows.append((name, scores))
        if is_colour(vis):
            colour.append(colour_metrics(image, vis))
    if colour and len(colour) == len(rows):
        for (_, scores), extra in zip(rows, colour):
            scores.update(extra)
    elif colour:
        log.warning("colour fidelity (dE00, dE00_ab, chroma_r) not scored: %d of the %d visible images are gray; score the "
                    "colour pairs as a set of their own", len(rows) - len(colour), len(rows))
    return rows


def score_folder(ir_dir: Path, vis_dir: Path, fused_dir: Path, progress: bool = True) -> list[tuple[str, Scores]]:
    """Per-pair metrics, in name order, of a folder of fused images."""
    pairs = match_pairs(ir_dir, vis_dir)
    return score_pairs(pairs, fused_paths(pairs, fused_dir), progress)


def metric_columns(rows: Sequence[tuple[str, Scores]]) -> tuple[str, ...]:
    """The nine metrics, plus the colour-fidelity ones when every row has them (a colour set)."""
    colour = bool(rows) and all(all(m in scores for m in COLOUR_METRIC_NAMES) for _, scores in rows)
    return METRIC_NAMES + (COLOUR_METRIC_NAMES if colour else ())


# Per-pair columns of the CSV besides the metrics: fused / visible mean luma, and whether the visible frame is the
# brighter source (1) or not (0): the daylight measure's inputs (stream_fusion.evaluate.stability).
BRIGHTNESS_COLUMNS = ("luma_r", "vis_brighter")


def daylight(rows: Sequence[tuple[str, Scores]]) -> dict[str, float]:
    """The daylight measure of a scored set (:func:`stream_fusion.evaluate.stability.daylight_summary`)."""
    return daylight_summary([scores["luma_r"] for _, scores in rows if scores["vis_brighter"]])


def daylight_text(summary: dict[str, float]) -> str:
    """One line: how many pairs have the brighter visible frame and how much of its brightness the fusion keeps."""
    if not summary:
        return "daylight: no pair where the visible frame is the brighter source"
    return (f"daylight (fused / visible mean luma, {summary['pairs']:.0f} pairs where the visible frame is brighter): "
            f"min {summary['min']:.2f}, median {summary['median']:.2f}, {100 * summary['kept']:.0f} % of them "
            f">= {DAYLIGHT_BAR}")


def temporal_text(result: dict[str, float], label: str = "") -> str:
    """One line of the steady-video measure (``label``: which frames, e.g. "as streamed")."""
    return (f"temporal{', ' + label if label else ''} (static regions, both inputs change < {STATIC_LEVELS:g} levels, {result['steps']:.0f} steps, "
            f"{100 * result['static']:.0f} % of the frame static): fused changes {result['fused']:.2f} levels per "
            f"frame where the inputs change {result['inputs']:.2f}: ratio {result['ratio']:.2f} "
            f"(per step {result['ratio_min']:.2f}-{result['ratio_max']:.2f}; bar <= 1.0)")


def stream_filter() -> SteadyFilter:
    """The steady-video filter a stream applies to its fused frames, with the shipped defaults (the ``steady:``
    section of configs/default.yaml; built even where that switches it off, since it is what is measured)."""
    steady = SteadyFilter.from_config({**load_config()["steady"], "enabled": True})
    assert steady is not None
    return steady


def score_sequence(pairs: list[tuple[str, Path, Path]], fused: list[Path],
                   steady: SteadyFilter | None = None) -> dict[str, float]:
    """The steady-video measure of fused frames of a sequence, frames in name order (``match_pairs`` sorts); with
    ``steady``, of the frames that filter makes of them, in that order, as a stream delivers them (a replay: no
    grab times, so no gap rule)."""
    frames = []
    for (name, ir_path, vis_path), fused_path in zip(pairs, fused):
        ir, vis, image = load_triplet(name, ir_path, vis_path, fused_path)
        if steady is not None:
            image = steady(image, ir, vis)
        frames.append((to_gray(image), ir, to_gray(vis)))
    try:
        return temporal_change(frames)
    except ValueError as error:
        raise StreamFusionError(f"--temporal: {error}") from None


def mean_scores(rows: list[tuple[str, Scores]]) -> Scores:
    """Mean of every metric over the pairs (the number papers report)."""
    return {metric: float(np.mean([scores[metric] for _, scores in rows])) for metric in metric_columns(rows)}


def markdown_table(rows: Sequence[tuple[str, Scores]], first_column: str = "pair") -> str:
    """A Markdown table, one row per (label, scores), metrics to 2 decimals (3 for the 0..2 ranged ones)."""
    digits = {"MI": 3, "SCD": 3, "VIF": 3, "Qabf": 3, "SSIM": 3, "chroma_r": 3, "dE00_ab": 3}
    columns = metric_columns(rows)
    lines = [f"| {first_column} | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for label, scores in rows:
        cells = [f"{scores[m]:.{digits.get(m, 2)}f}" for m in columns]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_csv(rows: list[tuple[str, Scores]], path: Path) -> None:
    """Per-pair rows then a ``mean`` row, full precision."""
    columns = metric_columns(rows) + tuple(c for c in BRIGHTNESS_COLUMNS if rows and c in rows[0][1])
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["name", *columns])
        mean = {**mean_scores(rows), **{c: float(np.mean([s[c] for _, s in rows])) for c in columns if c in
                                         BRIGHTNESS_COLUMNS}}
        for name, scores in [*rows, ("mean", mean)]:
            writer.writerow([name, *(f"{scores[m]:.6f}" for m in columns)])


def _tile(image: np.ndarray, height: int) -> np.ndarray:
    bgr = image if image.ndim == 3 else cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    width = max(1, round(bgr.shape[1] * height / bgr.shape[0]))
    return cv2.resize(bgr, (width, height), interpolation=cv2.INTER_AREA)


def _label(image: np.ndarray, text: str, origin: tuple[int, int], scale: float = 0.55) -> None:
    """White text with a dark outline, legible on bright and dark images alike."""
    for colour, thickness in (((0, 0, 0), 3), ((255, 255, 255), 1)):
        cv2.putText(image, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, colour, thickness, cv2.LINE_AA)


def make_grid(rows: Sequence[tuple[str, Sequence[np.ndarray]]], headers: Sequence[str], height: int = 240) -> np.ndarray:
    """One row per pair (its images side by side at a common height, the pair's name in the corner), a header
    bar naming the columns on top. Rows of different widths are padded with black on the right."""
    gap, bar = 4, 28
    built, column_x = [], []
    for name, images in rows:
        tiles = [_tile(image, height) for image in images]
        row = np.zeros((height, sum(t.shape[1] for t in tiles) + gap * (len(tiles) - 1), 3), np.uint8)
        x, xs = 0, []
        for tile in tiles:
            row[:, x:x + tile.shape[1]] = tile
            xs.append(x)
            x += tile.shape[1] + gap
        _label(row, name, (6, height - 8), 0.45)
        built.append(row)
        column_x.append(xs)
    width = max(row.shape[1] for row in built)
    canvas = np.zeros((bar + len(built) * (height + gap), width, 3), np.uint8)
    for i, header in enumerate(headers):
        _label(canvas, header, (column_x[0][i] + 6, bar - 9))
    for i, row in enumerate(built):
        y = bar + i * (height + gap)
        canvas[y:y + height, :row.shape[1]] = row
    return canvas


def write_png(path: Path, image: np.ndarray) -> None:
    """Maximum PNG compression: grids go into docs and git, where half the bytes matter more than a second."""
    if not cv2.imwrite(str(path), image, [cv2.IMWRITE_PNG_COMPRESSION, 9]):
        raise StreamFusionError(f"cannot write {path}")


def default_grid_names(names: Sequence[str], count: int = 4) -> list[str]:
    """A few pairs spread evenly over the set."""
    picks = np.linspace(0, len(names) - 1, min(count, len(names))).round().astype(int)
    return [names[i] for i in dict.fromkeys(picks)]


def parse_names(text: str | None, available: Sequence[str]) -> list[str]:
    """``--grid a,b`` by stem (``a.png`` accepted too); unknown names are an error, not a silently shorter grid."""
    if not text:
        return default_grid_names(available)
    names = [Path(part.strip()).stem for part in text.split(",") if part.strip()]
    unknown = [name for name in names if name not in available]
    if unknown or not names:
        raise StreamFusionError(f"--grid names {', '.join(unknown) or '(none)'} are not pairs of this set "
                                f"(e.g. {', '.join(available[:3])})")
    return names


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m stream_fusion.evaluate",
        description="Score fused images against their IR / visible sources (EN SD SF AG MI SCD VIF Qabf SSIM; "
        "dE00, dE00_ab and chroma_r colour fidelity when the visible images are colour).",
    )
    parser.add_argument("--ir", type=Path, help="folder of infrared images (default with --temporal: DIR/ir)")
    parser.add_argument("--vis", type=Path, help="folder of visible images, same names (default with --temporal: "
                        "DIR/vis)")
    parser.add_argument("--fused", type=Path, required=True, help="folder of fused images, same names")
    parser.add_argument("--out", type=Path, help="where metrics.md, metrics.csv and grid.png go (default: --fused)")
    parser.add_argument("--grid", help="comma-separated pair names for grid.png (default: 4 spread over the set)")
    parser.add_argument("--label", help="method name for the tables and the grid (default: the fused folder name)")
    parser.add_argument("--temporal", type=Path, metavar="DIR",
                        help="the pairs are consecutive frames of a sequence (DIR/ir, DIR/vis, in name order): also "
                        "score the static-region frame-to-frame change of the fused frames against the inputs'")
    parser.add_argument("--steady", action="store_true",
                        help="with --temporal: also score the frames as run_stream.py delivers them, through its "
                        "steady-video filter (the steady: defaults of configs/default.yaml)")
    args = parser.parse_args(argv)
    if args.temporal is not None:
        args.ir = args.ir or args.temporal / "ir"
        args.vis = args.vis or args.temporal / "vis"
    if args.ir is None or args.vis is None:
        parser.error("--ir and --vis are required (or --temporal DIR with DIR/ir and DIR/vis)")
    if args.steady and args.temporal is None:
        parser.error("--steady scores a sequence: it needs --temporal DIR")
    out = args.out or args.fused
    label = args.label or args.fused.resolve().name

    pairs = match_pairs(args.ir, args.vis)
    if args.temporal is not None and len(pairs) < 2:  # before minutes of scoring, not after
        raise StreamFusionError(f"--temporal: a temporal measure needs at least 2 frames, got {len(pairs)}")
    fused = fused_paths(pairs, args.fused)
    grid_names = parse_names(args.grid, [name for name, _, _ in pairs])
    rows = score_pairs(pairs, fused)
    paths = {name: (ir_path, vis_path, fused_path) for (name, ir_path, vis_path), fused_path in zip(pairs, fused)}
    grid = make_grid([(name, load_triplet(name, *paths[name])) for name in grid_names], ["IR", "visible", label])

    lines = [daylight_text(daylight(rows))]
    if args.temporal is not None:
        lines.append(temporal_text(score_sequence(pairs, fused), "fused frames as given" if args.steady else ""))
    if args.steady:
        lines.append(temporal_text(score_sequence(pairs, fused, stream_filter()), "as streamed, through the steady filter"))

    out.mkdir(parents=True, exist_ok=True)
    mean = mean_scores(rows)
    notes = METRIC_NOTES + (" " + COLOUR_NOTES if "dE00" in mean else "")
    (out / "metrics.md").write_text(
        f"# Fusion metrics: {label}\n\n{len(rows)} pairs; IR `{args.ir}`, visible `{args.vis}`, fused `{args.fused}`."
        f"\n\n{notes}\n\n## Mean\n\n{markdown_table([(label, mean)], 'method')}\n\n"
        + "".join(f"- {line}\n" for line in lines)
        + f"\n## Per pair\n\n{markdown_table(rows)}\n"
    )
    write_csv(rows, out / "metrics.csv")
    write_png(out / "grid.png", grid)
    print(markdown_table([(label, mean)], "method"))
    for line in lines:
        print(line)
    print(f"{len(rows)} pairs -> {out / 'metrics.md'}, {out / 'metrics.csv'}, {out / 'grid.png'}")
    return 0

