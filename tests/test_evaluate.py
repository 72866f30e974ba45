"""Evaluate CLI on real pairs: tables, CSV, grid, and the errors a user can run into."""
from __future__ import annotations

import csv
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from stream_fusion import DATA_DIR
from stream_fusion.evaluate import metrics
from stream_fusion.evaluate import score as evaluate
from stream_fusion.engine.classical import AverageFusion
from stream_fusion.errors import StreamFusionError
from stream_fusion.batch import fuse_folder
from eval_script import load_eval_all

REPO = Path(__file__).resolve().parents[1]
EVAL = DATA_DIR / "eval"


@pytest.fixture()
def dataset(tmp_path: Path) -> tuple[Path, Path, Path, list[str]]:
    """Two gray TNO pairs and one colour RoadScene pair, fused by the plain average."""
    ir_dir, vis_dir = tmp_path / "ir", tmp_path / "vis"
    ir_dir.mkdir()
    vis_dir.mkdir()
    road = sorted((EVAL / "roadscene50" / "ir").glob("*.png"))[0].stem
    names = ["tno25_01", "tno25_13", road]
    for name in names:
        split = "roadscene50" if name == road else "tno25"
        shutil.copy(EVAL / split / "ir" / f"{name}.png", ir_dir)
        shutil.copy(EVAL / split / "vis" / f"{name}.png", vis_dir)
    fused_dir = tmp_path / "average"
    fuse_folder(AverageFusion(), ir_dir, vis_dir, fused_dir, progress=False)
    return ir_dir, vis_dir, fused_dir, names


def _luma(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    return image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)


def test_evaluate_writes_tables_csv_and_grid(dataset, tmp_path: Path) -> None:
    ir_dir, vis_dir, fused_dir, names = dataset
    out = tmp_path / "report"
    assert evaluate.main(["--ir", str(ir_dir), "--vis", str(vis_dir), "--fused", str(fused_dir),
                          "--out", str(out), "--label", "plain average"]) == 0

    with (out / "metrics.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [row["name"] for row in rows] == sorted(names) + ["mean"]
    for row in rows[:-1]:
        expected = metrics.all_metrics(_luma(fused_dir / f"{row['name']}.png"), _luma(ir_dir / f"{row['name']}.png"),
                                       _luma(vis_dir / f"{row['name']}.png"))
        for name in metrics.METRIC_NAMES:
            assert float(row[name]) == pytest.approx(expected[name], abs=1e-6)
    for name in metrics.METRIC_NAMES:
        assert float(rows[-1][name]) == pytest.approx(np.mean([float(r[name]) for r in rows[:-1]]), abs=1e-5)

    report = (out / "metrics.md").read_text()
    assert report.startswith("# Fusion metrics: plain average")
    mean_vif = float(rows[-1]["VIF"])
    assert f"| plain average | {float(rows[-1]['EN']):.2f} |" in report
    assert f"{mean_vif:.3f}" in report
    assert all(f"| {name} |" in report for name in names)

    grid = cv2.imread(str(out / "grid.png"))
    assert grid.shape[0] == 28 + 3 * (240 + 4)  # header bar + 3 rows (all pairs, as the set has only 3)
    # Every row holds three images side by side: IR, visible, fused.
    assert grid.shape[1] >= 3 * 240


def test_grid_names_choose_rows_and_unknown_names_fail(dataset, tmp_path: Path) -> None:
    ir_dir, vis_dir, fused_dir, _ = dataset
    args = ["--ir", str(ir_dir), "--vis", str(vis_dir), "--fused", str(fused_dir), "--out", str(tmp_path / "r")]
    evaluate.main([*args, "--grid", "tno25_13.png"])
    assert cv2.imread(str(tmp_path / "r" / "grid.png")).shape[0] == 28 + 240 + 4
    with pytest.raises(StreamFusionError, match="--grid names nope are not pairs"):
        evaluate.main([*args, "--grid", "tno25_13,nope"])


def test_colour_fused_images_are_scored_on_their_luma(dataset, tmp_path: Path) -> None:
    ir_dir, vis_dir, fused_dir, _ = dataset
    colour_dir = tmp_path / "colour"
    colour_dir.mkdir()
    for path in fused_dir.glob("*.png"):
        gray = _luma(path)
        cv2.imwrite(str(colour_dir / path.name), cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR))
    colour = evaluate.score_folder(ir_dir, vis_dir, colour_dir, progress=False)
    gray = evaluate.score_folder(ir_dir, vis_dir, fused_dir, progress=False)
    assert [name for name, _ in colour] == [name for name, _ in gray]
    for (_, got), (_, expected) in zip(colour, gray):
        assert got == pytest.approx(expected, abs=1e-12)


def test_a_better_fusion_scores_higher_edge_transfer(dataset, tmp_path: Path) -> None:
    ir_dir, vis_dir, fused_dir, _ = dataset
    blurred_dir = tmp_path / "blurred"
    blurred_dir.mkdir()
    for path in fused_dir.glob("*.png"):
        cv2.imwrite(str(blurred_dir / path.name), cv2.GaussianBlur(cv2.imread(str(path)), (0, 0), 2.0))
    sharp = evaluate.mean_scores(evaluate.score_folder(ir_dir, vis_dir, fused_dir, progress=False))
    blurred = evaluate.mean_scores(evaluate.score_folder(ir_dir, vis_dir, blurred_dir, progress=False))
    assert blurred["Qabf"] < sharp["Qabf"] and blurred["SF"] < sharp["SF"] and blurred["VIF"] < sharp["VIF"]


def test_missing_or_wrong_size_fused_image_is_an_error(dataset) -> None:
    ir_dir, vis_dir, fused_dir, _ = dataset
    fused = fused_dir / "tno25_13.png"
    image = cv2.imread(str(fused), cv2.IMREAD_UNCHANGED)
    cv2.imwrite(str(fused), image[:-2])
    with pytest.raises(StreamFusionError, match=r"fused tno25_13.png is 620x448 but its sources are 620x450"):
        evaluate.score_folder(ir_dir, vis_dir, fused_dir, progress=False)
    fused.unlink()
    with pytest.raises(StreamFusionError, match="no fused image for tno25_13 in"):
        evaluate.score_folder(ir_dir, vis_dir, fused_dir, progress=False)


def test_cli_missing_fused_exits_2_with_one_line(dataset) -> None:
    ir_dir, vis_dir, fused_dir, _ = dataset
    (fused_dir / "tno25_01.png").unlink()
    result = subprocess.run(
        [sys.executable, "-m", "stream_fusion.evaluate", "--ir", str(ir_dir), "--vis", str(vis_dir),
         "--fused", str(fused_dir)],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: no fused image for tno25_01 in {fused_dir}"]



def test_quality_bar_verdicts() -> None:
    eval_all = load_eval_all()
    flat = dict.fromkeys(metrics.METRIC_NAMES, 0.0)
    means = {
        "tno25": {
            "average": {**flat, "VIF": 0.575, "Qabf": 0.358, "SSIM": 1.458},
            "laplacian": {**flat, "VIF": 0.679, "Qabf": 0.544, "SSIM": 1.363},
            "lite": {**flat, "VIF": 0.70, "Qabf": 0.50, "SSIM": 1.40},
            "base": {**flat, "VIF": 0.73, "Qabf": 0.55, "SSIM": 1.30},
        },
        "roadscene50": {
            "average": {**flat, "VIF": 0.572, "Qabf": 0.383, "SSIM": 1.478},
            "laplacian": {**flat, "VIF": 0.674, "Qabf": 0.587, "SSIM": 1.391},
        },
    }
    verdicts = {(check, split): verdict for check, split, _, _, verdict in eval_all.quality_bar(means)}
    assert verdicts[("base VIF > both baselines", "tno25")] == "PASS"
    assert verdicts[("base Qabf > both baselines", "tno25")] == "PASS"
    assert verdicts[("base SSIM >= 0.92 x average", "tno25")] == "FAIL"  # 1.30 < 0.92 * 1.458
    assert verdicts[("base VIF >= paper's weakest ablation", "tno25")] == "PASS"
    assert verdicts[("lite VIF >= 0.95 x base", "tno25")] == "PASS"  # 0.70 >= 0.6935
    assert verdicts[("lite Qabf >= 0.95 x base", "tno25")] == "FAIL"  # 0.50 < 0.5225
    assert verdicts[("base VIF > both baselines", "roadscene50")] == "not run"
    assert len(verdicts) == 12


def test_results_section_is_replaced_and_hand_written_text_kept(tmp_path: Path) -> None:
    eval_all = load_eval_all()
    doc = tmp_path / "evaluation.md"
    doc.write_text("# Usage\n\nhand-written\n")
    eval_all.write_results(doc, "first numbers")
    eval_all.write_results(doc, "second numbers")
    text = doc.read_text()
    assert text.startswith("# Usage\n\nhand-written\n")
    assert "second numbers" in text and "first numbers" not in text
    assert text.count(eval_all.RESULTS_BEGIN) == 1 and text.count(eval_all.RESULTS_END) == 1
