"""The daylight and steady-video measures (stream_fusion.evaluate.stability) on real frames, and the evaluate CLI's
``--temporal`` and daylight lines."""
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
from stream_fusion.batch import fuse_folder
from stream_fusion.engine.classical import AverageFusion
from stream_fusion.evaluate import score as evaluate
from stream_fusion.evaluate import stability

REPO = Path(__file__).resolve().parents[1]
NATO = DATA_DIR / "sequences" / "nato_camp"
ROAD = DATA_DIR / "eval" / "roadscene50"
DAY = "FLIR_00211"  # a daylight street: bright visible frame, dark flat IR


def _gray(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    return image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)


def _sequence(count: int = 8) -> list[tuple[np.ndarray, np.ndarray]]:
    names = sorted(p.name for p in (NATO / "ir").glob("*.png"))[:count]
    return [(_gray(NATO / "ir" / n), _gray(NATO / "vis" / n)) for n in names]


def test_luma_ratio_of_a_real_daylight_pair() -> None:
    ir, vis = _gray(ROAD / "ir" / f"{DAY}.png"), _gray(ROAD / "vis" / f"{DAY}.png")
    assert stability.visible_is_brighter(ir, vis)
    assert stability.luma_ratio(vis, vis) == pytest.approx(1.0)
    average = (ir.astype(np.float64) + vis) / 2
    expected = (ir.mean() + vis.mean()) / 2 / vis.mean()
    assert stability.luma_ratio(average, vis) == pytest.approx(expected)
    assert stability.luma_ratio(average, vis) < 0.95  # the dark IR pulls the average down
    assert not stability.visible_is_brighter(vis, ir)


def test_daylight_summary_counts_pairs_under_the_bar() -> None:
    summary = stability.daylight_summary([0.5, 0.79, 0.8, 1.2])
    assert summary == {"pairs": 4.0, "min": 0.5, "median": pytest.approx(0.795), "kept": 0.5}
    assert stability.daylight_summary([]) == {}


def test_temporal_change_on_real_frames() -> None:
    frames = _sequence()
    visible = stability.temporal_change([(vis, ir, vis) for ir, vis in frames])
    assert 0 < visible["ratio"] <= 1.0  # one source passed through never changes more than the larger of the two
    assert visible["inputs"] == pytest.approx(0.89, abs=0.1)  # nato_camp's sensor noise in its static regions
    average = stability.temporal_change([((ir.astype(np.float64) + vis) / 2, ir, vis) for ir, vis in frames])
    assert 0.4 < average["ratio"] < 0.6  # averaging two independent noises halves the larger one
    rng = np.random.default_rng(0)
    noisy = stability.temporal_change([(vis + rng.normal(0, 2, vis.shape), ir, vis) for ir, vis in frames])
    assert noisy["ratio"] > 1.5  # fresh noise every frame: flicker the fusion added
    frozen = stability.temporal_change([(frames[0][1], ir, vis) for ir, vis in frames])
    assert frozen["fused"] == 0.0 and frozen["ratio"] == 0.0
    assert visible["steps"] == len(frames) - 1 and 0 < visible["static"] < 1
    with pytest.raises(ValueError, match="at least 2 frames"):
        stability.temporal_change(frames[:1])


def test_a_changing_region_is_not_static() -> None:
    ir, vis = _sequence(1)[0]
    moved_ir = ir.copy()
    moved_ir[:, : ir.shape[1] // 2] = 255 - moved_ir[:, : ir.shape[1] // 2]  # a big change in half the frame
    _, _, count = stability.frame_change((vis, ir, vis), (vis, moved_ir, vis))
    changed = np.abs(moved_ir.astype(int) - ir) >= stability.STATIC_LEVELS
    assert count == ir.size - changed.sum()


@pytest.fixture()
def fused_sequence(tmp_path: Path) -> tuple[Path, Path]:
    seq = tmp_path / "seq"
    for role in ("ir", "vis"):
        (seq / role).mkdir(parents=True)
        for path in sorted((NATO / role).glob("*.png"))[:6]:
            shutil.copy(path, seq / role)
    fused = tmp_path / "average"
    fuse_folder(AverageFusion(), seq / "ir", seq / "vis", fused, progress=False)
    return seq, fused


def test_cli_temporal_scores_a_sequence(fused_sequence, tmp_path: Path) -> None:
    seq, fused = fused_sequence
    out = tmp_path / "report"
    result = subprocess.run([sys.executable, "-m", "stream_fusion.evaluate", "--temporal", str(seq), "--fused",
                             str(fused), "--out", str(out)], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr
    line = next(x for x in result.stdout.splitlines() if x.startswith("temporal"))
    frames = [(_gray(fused / p.name), _gray(seq / "ir" / p.name), _gray(seq / "vis" / p.name))
              for p in sorted((seq / "ir").glob("*.png"))]
    expected = stability.temporal_change(frames)
    assert f"ratio {expected['ratio']:.2f}" in line and "5 steps" in line
    assert line in (out / "metrics.md").read_text()


def test_cli_temporal_with_one_frame_is_one_line_error(fused_sequence) -> None:
    seq, fused = fused_sequence
    for path in sorted((seq / "ir").glob("*.png"))[1:]:
        path.unlink()
        (seq / "vis" / path.name).unlink()
    result = subprocess.run([sys.executable, "-m", "stream_fusion.evaluate", "--temporal", str(seq), "--fused",
                             str(fused)], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["error: --temporal: a temporal measure needs at least 2 frames, got 1"]


def test_cli_reports_daylight_and_writes_its_columns(tmp_path: Path) -> None:
    pairs = tmp_path / "pairs"
    names = [DAY, "FLIR_05893"]  # a day street and a night street
    for role in ("ir", "vis"):
        (pairs / role).mkdir(parents=True)
        for name in names:
            shutil.copy(ROAD / role / f"{name}.png", pairs / role)
    fused = tmp_path / "fused"
    fuse_folder(AverageFusion(), pairs / "ir", pairs / "vis", fused, progress=False)
    assert evaluate.main(["--ir", str(pairs / "ir"), "--vis", str(pairs / "vis"), "--fused", str(fused)]) == 0
    with (fused / "metrics.csv").open() as handle:
        rows = {row["name"]: row for row in csv.DictReader(handle)}
    day = rows[DAY]
    assert float(day["vis_brighter"]) == 1.0
    expected = stability.luma_ratio(_gray(fused / f"{DAY}.png"), _gray(pairs / "vis" / f"{DAY}.png"))
    assert float(day["luma_r"]) == pytest.approx(expected, abs=1e-6)
    brighter = [float(r["luma_r"]) for n, r in rows.items() if n != "mean" and float(r["vis_brighter"])]
    summary = stability.daylight_summary(brighter)
    assert evaluate.daylight_text(summary) in (fused / "metrics.md").read_text()


def test_eval_all_checks_issue_15s_bar_for_the_default_network() -> None:
    from eval_script import load_eval_all

    eval_all = load_eval_all()
    flat = {"VIF": 0.0, "Qabf": 0.0, "SSIM": 0.0}
    means = {"tno25": {"average": {**flat, "SSIM": 1.458}, "laplacian": {**flat, "VIF": 0.679, "Qabf": 0.544},
                       "seafusion": {**flat, "VIF": 0.689, "Qabf": 0.507},
                       "lite": {"VIF": 0.685, "Qabf": 0.576, "SSIM": 1.34}}}
    days = {"tno25": {"lite": stability.daylight_summary([0.55, 0.9, 1.0])},
            "roadscene50": {"lite": stability.daylight_summary([0.7] + [0.9] * 9)}}
    means["roadscene50"] = means["tno25"]
    rows = {(check, split): (value, verdict) for check, split, value, _, verdict in
            eval_all.robustness_bar(means, days, {"lite": {"alone": 1.58, "streamed": 0.83}})}
    assert rows[("lite VIF > Laplacian pyramid", "tno25")][1] == "PASS"
    assert rows[("lite VIF > SeAFusion", "tno25")][1] == "FAIL"  # 0.685 < 0.689
    assert rows[("lite Qabf > SeAFusion", "tno25")][1] == "PASS"
    assert rows[("lite SSIM >= 0.92 x average", "tno25")][1] == "FAIL"  # 1.34 < 1.341
    assert rows[("lite daylight >= 0.8x visible", "tno25")] == ("min 0.55, 67 % of 3", "FAIL")
    assert rows[("lite daylight >= 0.8x visible", "roadscene50")] == ("min 0.70, 90 % of 10", "PASS")  # nearly all
    assert rows[("lite flicker <= 1.0x the inputs', as streamed", "nato_camp")] == ("0.83 (network alone 1.58)", "PASS")
    failing = eval_all.robustness_bar(means, days, {"lite": {"alone": 0.9, "streamed": 1.02}})
    assert failing[-1][2:] == ("1.02 (network alone 0.90)", "<= 1.00", "FAIL")  # the bar is the stream's number
    absent = eval_all.robustness_bar(means, days, {}, model="base")
    assert {verdict for *_, verdict in absent} == {"not run"}
    table = eval_all.stability_table(days, {"lite": {"alone": 1.58, "streamed": 0.83}})
    assert "| ours (lite) | 0.55 / 0.90 / 67 % | 0.70 / 0.90 / 90 % | 1.58 | 0.83 |" in table
