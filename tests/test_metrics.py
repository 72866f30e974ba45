"""Fusion metrics: hand-computable values and the properties the field relies on, on real TNO / RoadScene pairs."""
from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from stream_fusion import DATA_DIR
from stream_fusion.evaluate import metrics

EVAL = DATA_DIR / "eval"


def _gray(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    assert image is not None, f"cannot read {path}"
    return image


@pytest.fixture(scope="module")
def tno_pair() -> tuple[np.ndarray, np.ndarray]:
    """A real 768x576 TNO pair (IR, visible)."""
    return _gray(EVAL / "tno25" / "ir" / "tno25_01.png"), _gray(EVAL / "tno25" / "vis" / "tno25_01.png")


@pytest.fixture(scope="module")
def road_pair() -> tuple[np.ndarray, np.ndarray]:
    """A real RoadScene pair; the visible image is colour on disk and scored on its luma."""
    name = sorted((EVAL / "roadscene50" / "ir").glob("*.png"))[0].name
    return _gray(EVAL / "roadscene50" / "ir" / name), _gray(EVAL / "roadscene50" / "vis" / name)


def test_entropy_and_sd_of_constant_image_are_zero() -> None:
    flat = np.full((40, 50), 117, np.uint8)
    assert metrics.entropy(flat) == 0.0
    assert metrics.standard_deviation(flat) == 0.0
    assert metrics.spatial_frequency(flat) == 0.0
    assert metrics.average_gradient(flat) == 0.0


def test_entropy_of_half_half_image_is_one_bit() -> None:
    image = np.zeros((32, 32), np.uint8)
    image[:, 16:] = 200
    assert metrics.entropy(image) == pytest.approx(1.0)
    assert metrics.standard_deviation(image) == pytest.approx(100.0)


def test_entropy_of_uniform_histogram_is_eight_bits() -> None:
    image = np.arange(256, dtype=np.uint8).reshape(16, 16)
    assert metrics.entropy(image) == pytest.approx(8.0)


def test_spatial_frequency_and_gradient_by_hand() -> None:
    # A horizontal ramp of slope 2: every horizontal neighbour difference is 2, vertical ones are 0.
    ramp = np.tile(np.arange(0, 40, 2, dtype=np.uint8), (10, 1))
    assert metrics.spatial_frequency(ramp) == pytest.approx(2.0)
    assert metrics.average_gradient(ramp) == pytest.approx(2.0 / math.sqrt(2.0))


def test_mi_of_image_with_itself_is_its_entropy(tno_pair) -> None:
    ir, _ = tno_pair
    assert metrics.mutual_information(ir, ir) == pytest.approx(metrics.entropy(ir) * math.log(2), rel=1e-9)


def test_mi_of_independent_images_is_near_zero() -> None:
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (256, 256), dtype=np.uint8)
    b = rng.integers(0, 256, (256, 256), dtype=np.uint8)
    # The plug-in estimator is biased up by about (bins - 1)^2 / (2 N) nats; 65536 samples over 256^2 cells.
    assert metrics.mutual_information(a, b) < 0.6
    assert metrics.mutual_information(a, b) < 0.2 * metrics.mutual_information(a, a)


def test_ssim_and_vif_of_identical_images_are_one(tno_pair) -> None:
    ir, vis = tno_pair
    assert metrics.ssim_single(vis, vis) == pytest.approx(1.0)
    assert metrics.vif_single(vis, vis) == pytest.approx(1.0, abs=1e-6)
    assert metrics.ssim(ir, ir, ir) == pytest.approx(2.0)
    assert metrics.vif(ir, ir, ir) == pytest.approx(2.0, abs=1e-6)


def test_qabf_of_source_with_itself_is_the_perfect_transfer_score(tno_pair) -> None:
    ir, _ = tno_pair
    perfect = 0.9994 / (1 + math.exp(-15 * 0.5)) * 0.9879 / (1 + math.exp(-22 * 0.2))
    assert metrics.qabf(ir, ir, ir) == pytest.approx(perfect, abs=1e-9)
    assert 0.97 < perfect < 0.98


def test_metrics_match_reference_evaluator_values(tno_pair) -> None:
    """The plain average of tno25_01, scored by the MMIF-CDDFuse evaluator (scipy/sklearn/skimage, SSIM with
    data_range=255) in a separate environment: our vectorised versions must agree to 4 decimals."""
    ir, vis = tno_pair
    fused = np.rint((ir.astype(np.float64) + vis) / 2).astype(np.uint8)
    expected = {"EN": 6.2484, "SD": 23.3161, "SF": 6.6722, "AG": 2.6036, "MI": 1.4550, "SCD": 1.7660,
                "VIF": 0.5083, "Qabf": 0.3311, "SSIM": 1.5245}
    got = metrics.all_metrics(fused, ir, vis)
    assert list(got) == list(metrics.METRIC_NAMES)
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, abs=6e-5), name


def test_source_symmetric_metrics_do_not_depend_on_source_order(road_pair) -> None:
    ir, vis = road_pair
    fused = np.maximum(ir, vis)
    for fn in (metrics.fusion_mi, metrics.scd, metrics.vif, metrics.qabf, metrics.ssim):
        assert fn(fused, ir, vis) == pytest.approx(fn(fused, vis, ir), rel=1e-12), fn.__name__


def test_metric_ranges_on_real_fusion(road_pair) -> None:
    ir, vis = road_pair
    fused = np.rint((ir.astype(np.float64) + vis) / 2).astype(np.uint8)
    m = metrics.all_metrics(fused, ir, vis)
    assert 0 < m["EN"] <= 8
    assert 0 < m["SD"] <= 127.5
    assert 0 < m["Qabf"] < 1
    assert 0 < m["VIF"] < 2
    assert 0 < m["SSIM"] <= 2
    assert -2 <= m["SCD"] <= 2
    assert 0 < m["MI"] <= metrics.mutual_information(ir, ir) + metrics.mutual_information(vis, vis)


def test_blurred_fusion_scores_lower_on_edges_and_detail(tno_pair) -> None:
    ir, vis = tno_pair
    sharp = np.maximum(ir, vis)
    blurred = cv2.GaussianBlur(sharp, (0, 0), 2.0)
    assert metrics.qabf(blurred, ir, vis) < metrics.qabf(sharp, ir, vis) - 0.05
    assert metrics.spatial_frequency(blurred) < 0.7 * metrics.spatial_frequency(sharp)
    assert metrics.average_gradient(blurred) < 0.8 * metrics.average_gradient(sharp)


def test_scd_rewards_keeping_both_sources(tno_pair) -> None:
    ir, vis = tno_pair
    average = np.rint((ir.astype(np.float64) + vis) / 2).astype(np.uint8)
    # Output == one source: F - A is zero (correlation 0), and F - B = A - B correlates with A only partly.
    assert metrics.scd(average, ir, vis) > metrics.scd(vis, ir, vis) + 0.5


def test_shape_mismatch_is_rejected() -> None:
    with pytest.raises(ValueError, match="differ in shape"):
        metrics.all_metrics(np.zeros((10, 10), np.uint8), np.zeros((10, 11), np.uint8), np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError, match="2-D"):
        metrics.entropy(np.zeros((4, 4, 3), np.uint8))
