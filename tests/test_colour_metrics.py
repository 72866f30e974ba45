"""Colour-fidelity metrics (CIEDE2000, a*/b* chroma correlation) against scikit-image and Sharma et al.'s published
test data, on real RoadScene pairs, and their place in the evaluate CLI and scripts/eval_all.py."""
from __future__ import annotations

import csv
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage.color import deltaE_ciede2000

from stream_fusion import DATA_DIR
from stream_fusion.evaluate import score as evaluate
from stream_fusion.engine.classical import AverageFusion
from stream_fusion.batch import fuse_folder, load_pair
from stream_fusion.evaluate.metrics import bgr_to_lab, ciede2000, colour_metrics
from eval_script import load_eval_all

REPO = Path(__file__).resolve().parents[1]
EVAL = DATA_DIR / "eval"
ROAD = EVAL / "roadscene50"

# Sharma, Wu & Dalal (2005), Table 1: L1 a1 b1 L2 a2 b2 dE00, all 34 pairs (hue wraparound, neutral colours, the
# blue region's rotation term). Every row is also reproduced by scikit-image's independent implementation.
SHARMA = """
50.0000 2.6772 -79.7751 50.0000 0.0000 -82.7485 2.0425
50.0000 3.1571 -77.2803 50.0000 0.0000 -82.7485 2.8615
50.0000 2.8361 -74.0200 50.0000 0.0000 -82.7485 3.4412
50.0000 -1.3802 -84.2814 50.0000 0.0000 -82.7485 1.0000
50.0000 -1.1848 -84.8006 50.0000 0.0000 -82.7485 1.0000
50.0000 -0.9009 -85.5211 50.0000 0.0000 -82.7485 1.0000
50.0000 0.0000 0.0000 50.0000 -1.0000 2.0000 2.3669
50.0000 -1.0000 2.0000 50.0000 0.0000 0.0000 2.3669
50.0000 2.4900 -0.0010 50.0000 -2.4900 0.0009 7.1792
50.0000 2.4900 -0.0010 50.0000 -2.4900 0.0010 7.1792
50.0000 2.4900 -0.0010 50.0000 -2.4900 0.0011 7.2195
50.0000 2.4900 -0.0010 50.0000 -2.4900 0.0012 7.2195
50.0000 -0.0010 2.4900 50.0000 0.0009 -2.4900 4.8045
50.0000 -0.0010 2.4900 50.0000 0.0010 -2.4900 4.8045
50.0000 -0.0010 2.4900 50.0000 0.0011 -2.4900 4.7461
50.0000 2.5000 0.0000 50.0000 0.0000 -2.5000 4.3065
50.0000 2.5000 0.0000 73.0000 25.0000 -18.0000 27.1492
50.0000 2.5000 0.0000 61.0000 -5.0000 29.0000 22.8977
50.0000 2.5000 0.0000 56.0000 -27.0000 -3.0000 31.9030
50.0000 2.5000 0.0000 58.0000 24.0000 15.0000 19.4535
50.0000 2.5000 0.0000 50.0000 3.1736 0.5854 1.0000
50.0000 2.5000 0.0000 50.0000 3.2972 0.0000 1.0000
50.0000 2.5000 0.0000 50.0000 1.8634 0.5757 1.0000
50.0000 2.5000 0.0000 50.0000 3.2592 0.3350 1.0000
60.2574 -34.0099 36.2677 60.4626 -34.1751 39.4387 1.2644
63.0109 -31.0961 -5.8663 62.8187 -29.7946 -4.0864 1.2630
61.2901 3.7196 -5.3901 61.4292 2.2480 -4.9620 1.8731
35.0831 -44.1164 3.7933 35.0232 -40.0716 1.5901 1.8645
22.7233 20.0904 -46.6940 23.0331 14.9730 -42.5619 2.0373
36.4612 47.8580 18.3852 36.2715 50.5065 21.2231 1.4146
90.8027 -2.0831 1.4410 91.1528 -1.6435 0.0447 1.4441
90.9257 -0.5406 -0.9208 88.6381 -0.8985 -0.7239 1.5381
6.7747 -0.2908 -2.4247 5.8714 -0.0985 -2.2286 0.6377
2.0776 0.0795 -1.1350 0.9033 -0.0636 -0.5514 0.9082
"""


def _lab_from_polar(lightness: np.ndarray, chroma: np.ndarray, hue_degrees: np.ndarray) -> np.ndarray:
    hue = np.radians(hue_degrees)
    return np.stack([lightness, chroma * np.cos(hue), chroma * np.sin(hue)], axis=-1)


def test_ciede2000_matches_scikit_image_on_random_and_hue_wraparound_pairs() -> None:
    rng = np.random.default_rng(7)
    n = 4000
    random_pairs = [rng.uniform([0, -128, -128], [100, 127, 127], (n, 3)) for _ in range(2)]
    # Hue pairs straddling every branch of the mean-hue / hue-difference rules: |h1 - h2| just under and over 180,
    # h1 + h2 under and over 360, hues either side of 0/360, and neutral colours (C = 0) on one or both sides.
    h1 = rng.uniform(0, 360, n)
    h2 = (h1 + rng.choice([179.0, 179.9, 180.1, 181.0, 359.0, 1.0, -1.0, -179.5, -180.5], n)) % 360
    chroma = rng.uniform(0, 80, (2, n))
    chroma[:, :200] = 0.0
    chroma[0, 200:400] = 0.0
    lightness = rng.uniform(0, 100, (2, n))
    wrap_pairs = [_lab_from_polar(lightness[0], chroma[0], h1), _lab_from_polar(lightness[1], chroma[1], h2)]
    for lab1, lab2 in (random_pairs, wrap_pairs):
        ours = ciede2000(lab1, lab2)
        assert ours.shape == (n,) and ours.dtype == np.float64
        np.testing.assert_allclose(ours, deltaE_ciede2000(lab1, lab2), rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(ciede2000(lab2, lab1), ours, rtol=1e-10, atol=1e-10)  # symmetric
    # Image-shaped input keeps its shape.
    assert ciede2000(random_pairs[0][:12].reshape(3, 4, 3), random_pairs[1][:12].reshape(3, 4, 3)).shape == (3, 4)


def test_ciede2000_reproduces_sharma_test_data() -> None:
    rows = np.array([[float(v) for v in line.split()] for line in SHARMA.strip().splitlines()])
    assert rows.shape == (34, 7)
    np.testing.assert_array_equal(np.round(ciede2000(rows[:, :3], rows[:, 3:6]), 4), rows[:, 6])


def test_ciede2000_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="one shape"):
        ciede2000(np.zeros((4, 3)), np.zeros((5, 3)))


@pytest.fixture(scope="module")
def road_pair() -> tuple[np.ndarray, np.ndarray]:
    """A real RoadScene pair (IR gray, visible BGR)."""
    name = "FLIR_05893"
    return load_pair(name, ROAD / "ir" / f"{name}.png", ROAD / "vis" / f"{name}.png")


def test_identical_images_score_zero_and_full_correlation(road_pair) -> None:
    _, vis = road_pair
    assert colour_metrics(vis, vis.copy()) == {"dE00": 0.0, "dE00_ab": 0.0, "chroma_r": 1.0}


def test_gray_fusion_of_a_colour_scene_keeps_no_chroma(road_pair) -> None:
    _, vis = road_pair
    gray = cv2.cvtColor(vis, cv2.COLOR_BGR2GRAY)
    scores = colour_metrics(gray, vis)
    # OpenCV's float Lab of a gray image leaves a*/b* noise (std ~0.02) that correlates with lightness; the
    # constant-channel rule turns it into the 0 it is, not a spurious 0.1-0.2.
    assert scores["chroma_r"] == 0.0
    assert scores["dE00"] > 2.0  # the visible scene's colour, lost (lightness is nearly the same)
    assert colour_metrics(cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR), vis) == scores  # gray as 3 channels: same
    # Two gray images: no colour structure on either side, nothing lost.
    assert colour_metrics(gray, gray)["chroma_r"] == 1.0


def test_lightness_change_keeps_chroma_structure(road_pair) -> None:
    _, vis = road_pair
    lab = bgr_to_lab(vis)
    lab[:, :, 0] = lab[:, :, 0] * 0.7 + 20  # flatter, brighter; a* and b* untouched
    brighter = np.clip(np.rint(cv2.cvtColor(lab, cv2.COLOR_Lab2BGR) * 255), 0, 255).astype(np.uint8)
    scores = colour_metrics(brighter, vis)
    assert scores["chroma_r"] > 0.99
    assert scores["dE00"] > 3.0  # CIEDE2000 counts the lightness change
    assert scores["dE00_ab"] < 0.3 * scores["dE00"]  # ... and at the visible lightness little is left (8-bit rounding)
    # A hue rotation keeps lightness but scrambles the colour structure: correlation collapses.
    ab = lab[:, :, 1:].copy()
    lab[:, :, 0], lab[:, :, 1], lab[:, :, 2] = bgr_to_lab(vis)[:, :, 0], -ab[:, :, 1], ab[:, :, 0]
    rotated = np.clip(np.rint(cv2.cvtColor(lab, cv2.COLOR_Lab2BGR) * 255), 0, 255).astype(np.uint8)
    rotated_scores = colour_metrics(rotated, vis)
    assert rotated_scores["chroma_r"] < 0.5
    assert rotated_scores["dE00_ab"] > 0.8 * rotated_scores["dE00"]  # a colour error, not a lightness one


def test_ycbcr_route_keeps_chroma_better_than_gray(road_pair) -> None:
    ir, vis = road_pair
    fused = AverageFusion().fuse(ir, vis)
    scores = colour_metrics(fused, vis)
    assert scores["chroma_r"] > 0.95  # Cr/Cb restored: colour structure kept
    assert scores["chroma_r"] > colour_metrics(cv2.cvtColor(fused, cv2.COLOR_BGR2GRAY), vis)["chroma_r"] + 0.9


def test_colour_metrics_reject_size_mismatch(road_pair) -> None:
    _, vis = road_pair
    with pytest.raises(ValueError, match="differ in size"):
        colour_metrics(vis[:-1], vis)


def _copy_pairs(split: str, names: list[str], root: Path) -> tuple[Path, Path]:
    ir_dir, vis_dir = root / "ir", root / "vis"
    ir_dir.mkdir(parents=True)
    vis_dir.mkdir(parents=True)
    for name in names:
        shutil.copy(EVAL / split / "ir" / f"{name}.png", ir_dir)
        shutil.copy(EVAL / split / "vis" / f"{name}.png", vis_dir)
    return ir_dir, vis_dir


def test_evaluate_adds_colour_columns_for_a_colour_set_only(tmp_path: Path) -> None:
    road = ["FLIR_00211", "FLIR_05893"]
    ir_dir, vis_dir = _copy_pairs("roadscene50", road, tmp_path / "road")
    fused_dir = tmp_path / "road_average"
    fuse_folder(AverageFusion(), ir_dir, vis_dir, fused_dir, progress=False)
    out = tmp_path / "report"
    assert evaluate.main(["--ir", str(ir_dir), "--vis", str(vis_dir), "--fused", str(fused_dir), "--out", str(out),
                          "--label", "plain average"]) == 0
    with (out / "metrics.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["name", *evaluate.METRIC_NAMES, "dE00", "dE00_ab", "chroma_r", *evaluate.BRIGHTNESS_COLUMNS]
    for row in rows[:-1]:
        ir, vis = load_pair(row["name"], ir_dir / f"{row['name']}.png", vis_dir / f"{row['name']}.png")
        expected = colour_metrics(cv2.imread(str(fused_dir / f"{row['name']}.png")), vis)
        assert float(row["dE00"]) == pytest.approx(expected["dE00"], abs=1e-6)
        assert float(row["chroma_r"]) == pytest.approx(expected["chroma_r"], abs=1e-6)
    assert float(rows[-1]["dE00"]) == pytest.approx(np.mean([float(r["dE00"]) for r in rows[:-1]]), abs=1e-5)
    report = (out / "metrics.md").read_text()
    assert "| method | EN | SD | SF | AG | MI | SCD | VIF | Qabf | SSIM | dE00 | dE00_ab | chroma_r |" in report
    assert "dE00 mean CIEDE2000" in report and "LOWER is better" in report
    # The grid shows colour images in colour: the fused tile of the first row has differing channels.
    grid = cv2.imread(str(out / "grid.png")).astype(int)
    fused_tile = grid[28:28 + 240, -200:]
    assert np.abs(fused_tile[:, :, 0] - fused_tile[:, :, 2]).mean() > 1.0

    tno = ["tno25_01", "tno25_13"]
    ir_dir, vis_dir = _copy_pairs("tno25", tno, tmp_path / "tno")
    fused_dir = tmp_path / "tno_average"
    fuse_folder(AverageFusion(), ir_dir, vis_dir, fused_dir, progress=False)
    evaluate.main(["--ir", str(ir_dir), "--vis", str(vis_dir), "--fused", str(fused_dir), "--out", str(out)])
    with (out / "metrics.csv").open() as handle:
        assert next(csv.reader(handle)) == ["name", *evaluate.METRIC_NAMES, *evaluate.BRIGHTNESS_COLUMNS]
    report = (out / "metrics.md").read_text()
    assert "dE00" not in report and "chroma_r" not in report


def test_a_set_mixing_gray_and_colour_visible_images_gets_no_colour_columns(tmp_path: Path, caplog) -> None:
    ir_dir, vis_dir = _copy_pairs("roadscene50", ["FLIR_00211"], tmp_path)
    shutil.copy(EVAL / "tno25" / "ir" / "tno25_01.png", ir_dir)
    shutil.copy(EVAL / "tno25" / "vis" / "tno25_01.png", vis_dir)
    fused_dir = tmp_path / "average"
    fuse_folder(AverageFusion(), ir_dir, vis_dir, fused_dir, progress=False)
    rows = evaluate.score_folder(ir_dir, vis_dir, fused_dir, progress=False)
    assert all(set(scores) == {*evaluate.METRIC_NAMES, *evaluate.BRIGHTNESS_COLUMNS} for _, scores in rows)
    assert "1 of the 2 visible images are gray" in caplog.text



def test_colour_bar_verdicts() -> None:
    eval_all = load_eval_all()
    base = {"dE00": 15.9, "dE00_ab": 0.38, "chroma_r": 0.993, "VIF": 0.80, "Qabf": 0.63}
    good = {"dE00": 9.0, "dE00_ab": 0.24, "chroma_r": 0.97, "VIF": 0.77, "Qabf": 0.60}  # 0.77 >= 0.76, 0.60 >= 0.5985
    verdicts = {check: verdict for check, _, _, verdict in eval_all.colour_bar({"base": base, "cdfusion": good})}
    assert verdicts == {"cdfusion dE00 < base dE00 (YCbCr route)": "PASS",
                        "cdfusion dE00_ab < base dE00_ab (YCbCr route)": "PASS", "cdfusion VIF >= 0.95 x base": "PASS",
                        "cdfusion Qabf >= 0.95 x base": "PASS"}
    worse = {**good, "dE00": 16.0, "dE00_ab": 0.40, "Qabf": 0.59}
    verdicts = {check: verdict for check, _, _, verdict in eval_all.colour_bar({"base": base, "cdfusion": worse})}
    assert verdicts["cdfusion dE00 < base dE00 (YCbCr route)"] == "FAIL"
    assert verdicts["cdfusion dE00_ab < base dE00_ab (YCbCr route)"] == "FAIL"
    assert verdicts["cdfusion Qabf >= 0.95 x base"] == "FAIL"
    assert {verdict for _, _, _, verdict in eval_all.colour_bar({"base": base})} == {"not run"}


def test_eval_all_limited_run_has_colour_columns_table_and_skips_absent_networks(tmp_path: Path, monkeypatch) -> None:
    """A 2-pair run with the baselines only (no network files): the script's outputs, not its numbers."""
    eval_all = load_eval_all()
    weights = tmp_path / "weights"
    networks = ("lite", "base", "cdfusion")
    monkeypatch.setattr(eval_all, "SHIPPED_MODELS", {n: weights / f"difffuse_{n}.onnx" for n in networks})
    out, docs = tmp_path / "runs", tmp_path / "docs"
    assert eval_all.main(["--limit", "2", "--out", str(out), "--docs", str(docs)]) == 0
    text = (docs / "evaluation.md").read_text()
    assert "Quick check (`--limit 2`)" in text
    shown = tmp_path / "weights" / "difffuse_cdfusion.onnx"
    assert f"- ours (cdfusion, colour): not evaluated, {shown} does not exist yet" in text
    tno, road = text.split("### tno25")[1].split("### roadscene50")
    assert "| method | EN | SD | SF | AG | MI | SCD | VIF | Qabf | SSIM |\n" in tno
    assert "| method | EN | SD | SF | AG | MI | SCD | VIF | Qabf | SSIM | dE00 | dE00_ab | chroma_r |" in road
    colour = text.split("### Colour fidelity on roadscene50")[1].split("### Metric conventions")[0]
    assert "| method | dE00 | dE00_ab | chroma_r | VIF | Qabf |" in colour
    assert "| plain average |" in colour and "| Laplacian pyramid |" in colour
    assert "| cdfusion dE00 < base dE00 (YCbCr route) | - | < base | not run |" in colour
    assert "colour_grid.jpg` (visible | IR | ours (base), YCbCr route | ours (cdfusion, colour)): not drawn" in text
    assert not (docs / "colour_grid.jpg").exists()
    # The subset: grid pairs first, 2 per set, and the grids show them.
    with (out / "roadscene50" / "average.csv").open() as handle:
        assert [row["name"] for row in csv.DictReader(handle)] == ["FLIR_00211", "FLIR_05893", "mean"]
    assert cv2.imread(str(docs / "grid_roadscene50.png")).shape[0] == 28 + 2 * (220 + 4)


def test_eval_all_scores_cdfusion_and_draws_the_colour_grid_once_the_engine_serves_it(tmp_path, monkeypatch) -> None:
    """The path the colour model will take: its file exists and the engine knows the name. Stand-in engines
    (the two baselines) replace the networks so the test is fast; what is checked is the script's wiring."""
    from stream_fusion.engine.classical import LaplacianFusion

    eval_all = load_eval_all()
    weights = tmp_path / "weights"
    weights.mkdir()
    for name in ("base", "cdfusion"):
        (weights / f"difffuse_{name}.onnx").write_bytes(b"stand-in")
    stand_ins = {"base": AverageFusion, "cdfusion": LaplacianFusion}
    monkeypatch.setattr(eval_all, "SHIPPED_MODELS", {name: weights / f"difffuse_{name}.onnx" for name in stand_ins})
    monkeypatch.setattr(eval_all, "onnx_metadata", lambda path: {"model_version": "test", "training": "{}"})
    monkeypatch.setattr(eval_all, "load_engine", lambda name, provider: stand_ins[name]())
    docs = tmp_path / "docs"
    assert eval_all.main(["--limit", "2", "--out", str(tmp_path / "runs"), "--docs", str(docs)]) == 0
    text = (docs / "evaluation.md").read_text()
    colour = text.split("### Colour fidelity on roadscene50")[1].split("### Metric conventions")[0]
    assert "| ours (cdfusion, colour) |" in colour and "| ours (base) |" in colour
    # Stand-ins: "cdfusion" is the Laplacian pyramid, "base" the plain average; their verdicts follow the numbers.
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ") for line in colour.splitlines() if " | " in line}
    cd_de, base_de = float(rows["ours (cdfusion, colour)"][1]), float(rows["ours (base)"][1])
    verdict = rows["cdfusion dE00 < base dE00 (YCbCr route)"][3].strip(" |")
    assert verdict == ("PASS" if cd_de < base_de else "FAIL")
    grid = cv2.imread(str(docs / "colour_grid.jpg"))
    assert grid.shape[0] == 28 + 4 * (220 + 4)  # its four colour pairs, whatever --limit scored
    assert "`docs/colour_grid.jpg`: colour examples from roadscene50, pairs FLIR_06282, FLIR_08021, FLIR_06993, " \
           "FLIR_00211: visible | IR | ours (base), YCbCr route | ours (cdfusion, colour)." in text
    # Columns in order visible | IR | base | cdfusion: the first tile is the visible image itself, in colour.
    vis = cv2.imread(str(ROAD / "vis" / "FLIR_06282.png"))
    width = round(vis.shape[1] * 220 / vis.shape[0])
    expected = cv2.resize(vis, (width, 220), interpolation=cv2.INTER_AREA)
    tile = grid[28:28 + 220, :width]
    assert np.abs(tile.astype(int) - expected).mean() < 3  # only the name label differs
