"""Batch fusion CLI on real pairs copied from ../shared/data (gray TNO and colour RoadScene)."""
from __future__ import annotations

import logging
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from stream_fusion import DATA_DIR, batch
from stream_fusion.capture import match_pairs
from stream_fusion.engine.classical import AverageFusion, LaplacianFusion
from stream_fusion.errors import StreamFusionError

REPO = Path(__file__).resolve().parents[1]
EVAL = DATA_DIR / "eval"
TNO = ["tno25_01", "tno25_07"]


def _copy_pairs(root: Path) -> tuple[Path, Path, list[str]]:
    """Two gray TNO pairs and two colour RoadScene pairs in fresh ir/ and vis/ folders."""
    ir_dir, vis_dir = root / "ir", root / "vis"
    ir_dir.mkdir(parents=True)
    vis_dir.mkdir()
    road = [p.stem for p in sorted((EVAL / "roadscene50" / "ir").glob("*.png"))[:2]]
    for split, names in (("tno25", TNO), ("roadscene50", road)):
        for name in names:
            shutil.copy(EVAL / split / "ir" / f"{name}.png", ir_dir)
            shutil.copy(EVAL / split / "vis" / f"{name}.png", vis_dir)
    return ir_dir, vis_dir, TNO + road


def test_fuse_writes_one_png_per_pair_keeping_colour(tmp_path: Path) -> None:
    ir_dir, vis_dir, names = _copy_pairs(tmp_path)
    out = tmp_path / "out"
    assert batch.main(["--ir", str(ir_dir), "--vis", str(vis_dir), "--out", str(out), "--model", "average"]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{n}.png" for n in names)
    for name in names:
        vis = cv2.imread(str(vis_dir / f"{name}.png"), cv2.IMREAD_UNCHANGED)
        ir = cv2.imread(str(ir_dir / f"{name}.png"), cv2.IMREAD_GRAYSCALE)
        fused = cv2.imread(str(out / f"{name}.png"), cv2.IMREAD_UNCHANGED)
        assert fused.shape == vis.shape, name  # gray in -> gray out, colour in -> colour out
        np.testing.assert_array_equal(fused, AverageFusion().fuse(ir, vis))
    colour = names[-1]
    vis = cv2.imread(str(vis_dir / f"{colour}.png"))
    fused = cv2.imread(str(out / f"{colour}.png"))
    # The visible chroma is kept: Cr/Cb of the output equal the input's up to 8-bit round trips.
    chroma = cv2.cvtColor(fused, cv2.COLOR_BGR2YCrCb)[:, :, 1:].astype(int)
    assert np.abs(chroma - cv2.cvtColor(vis, cv2.COLOR_BGR2YCrCb)[:, :, 1:]).mean() < 1.5


def test_laplacian_model_by_name(tmp_path: Path) -> None:
    ir_dir, vis_dir, names = _copy_pairs(tmp_path)
    out = tmp_path / "out"
    count, seconds = batch.fuse_folder(batch.load_engine("laplacian"), ir_dir, vis_dir, out, progress=False)
    assert count == len(names) and seconds > 0
    ir = cv2.imread(str(ir_dir / "tno25_01.png"), cv2.IMREAD_GRAYSCALE)
    vis = cv2.imread(str(vis_dir / "tno25_01.png"), cv2.IMREAD_GRAYSCALE)
    np.testing.assert_array_equal(cv2.imread(str(out / "tno25_01.png"), cv2.IMREAD_UNCHANGED),
                                  LaplacianFusion().fuse(ir, vis))


def test_laplacian_of_identical_sources_is_the_source() -> None:
    vis = cv2.imread(str(EVAL / "tno25" / "vis" / "tno25_01.png"), cv2.IMREAD_GRAYSCALE)
    np.testing.assert_array_equal(LaplacianFusion().fuse(vis, vis), vis)
    odd = vis[:251, :333]
    np.testing.assert_array_equal(LaplacianFusion().fuse(odd, odd), odd)


def test_ir_of_other_size_is_resized_to_visible_with_warning(tmp_path: Path, caplog) -> None:
    ir_dir, vis_dir = tmp_path / "ir", tmp_path / "vis"
    ir_dir.mkdir()
    vis_dir.mkdir()
    ir = cv2.imread(str(EVAL / "tno25" / "ir" / "tno25_01.png"), cv2.IMREAD_GRAYSCALE)
    cv2.imwrite(str(ir_dir / "a.png"), cv2.resize(ir, (384, 288)))
    # A visible JPEG pairs with the IR PNG by name.
    cv2.imwrite(str(vis_dir / "a.jpg"), cv2.imread(str(EVAL / "tno25" / "vis" / "tno25_01.png")))
    with caplog.at_level(logging.WARNING, logger="stream_fusion.batch"):
        batch.fuse_folder(AverageFusion(), ir_dir, vis_dir, tmp_path / "out", progress=False)
    assert "a: IR 384x288 resized to the visible size 768x576" in caplog.text
    assert cv2.imread(str(tmp_path / "out" / "a.png"), cv2.IMREAD_UNCHANGED).shape[:2] == (576, 768)


def test_unpaired_names_are_an_error(tmp_path: Path) -> None:
    ir_dir, vis_dir, _ = _copy_pairs(tmp_path)
    (vis_dir / "tno25_07.png").rename(vis_dir / "other.png")
    with pytest.raises(StreamFusionError, match="no visible image for IR tno25_07; no IR image for visible other"):
        match_pairs(ir_dir, vis_dir)


def test_unreadable_image_and_missing_folder_are_errors(tmp_path: Path) -> None:
    ir_dir, vis_dir, _ = _copy_pairs(tmp_path)
    (ir_dir / "tno25_01.png").write_bytes(b"not a png")
    with pytest.raises(StreamFusionError, match="cannot read image .*tno25_01.png"):
        batch.fuse_folder(AverageFusion(), ir_dir, vis_dir, tmp_path / "out", progress=False)
    with pytest.raises(StreamFusionError, match="IR folder .*nowhere does not exist"):
        match_pairs(tmp_path / "nowhere", vis_dir)
    (tmp_path / "empty").mkdir()
    with pytest.raises(StreamFusionError, match="holds no images"):
        match_pairs(tmp_path / "empty", vis_dir)


def test_cli_bad_input_exits_2_with_one_line(tmp_path: Path) -> None:
    ir_dir, _, _ = _copy_pairs(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "stream_fusion.batch", "--ir", str(ir_dir), "--vis", str(tmp_path / "missing"),
         "--out", str(tmp_path / "out"), "--model", "average"],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: visible folder {tmp_path / 'missing'} does not exist "
                                                  "or is not a folder"]


def test_classical_model_through_the_engine_factory(tmp_path: Path) -> None:
    from stream_fusion.engine.classical import ClassicalEngine

    ir_dir, vis_dir, names = _copy_pairs(tmp_path)
    out = tmp_path / "out"
    assert batch.main(["--ir", str(ir_dir), "--vis", str(vis_dir), "--out", str(out), "--model", "classical"]) == 0
    for name in names:
        ir = cv2.imread(str(ir_dir / f"{name}.png"), cv2.IMREAD_GRAYSCALE)
        vis = cv2.imread(str(vis_dir / f"{name}.png"), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(cv2.imread(str(out / f"{name}.png"), cv2.IMREAD_UNCHANGED),
                                      ClassicalEngine().fuse(ir, vis))


def _mean_model(path: Path) -> None:
    """A real ONNX fusion model in the engine's contract (ir, vis -> fused, N x 1 x H x W in 0..1): the mean."""
    import onnx
    from onnx import TensorProto, helper

    shape = ["N", 1, "H", "W"]
    graph = helper.make_graph(
        [helper.make_node("Add", ["ir", "vis"], ["sum"]), helper.make_node("Mul", ["sum", "half"], ["fused"])],
        "mean",
        [helper.make_tensor_value_info("ir", TensorProto.FLOAT, shape),
         helper.make_tensor_value_info("vis", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("fused", TensorProto.FLOAT, shape)],
        [helper.make_tensor("half", TensorProto.FLOAT, [], [0.5])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 10
    helper.set_model_props(model, {"model_name": "mean", "preset": "test", "size_multiple": "1"})
    onnx.save(model, str(path))


def test_onnx_model_path_runs_through_onnx_runtime(tmp_path: Path) -> None:
    ir_dir, vis_dir, names = _copy_pairs(tmp_path)
    _mean_model(tmp_path / "mean.onnx")
    out = tmp_path / "out"
    assert batch.main(["--ir", str(ir_dir), "--vis", str(vis_dir), "--out", str(out),
                      "--model", str(tmp_path / "mean.onnx"), "--provider", "cpu"]) == 0
    for name in names:
        ir = cv2.imread(str(ir_dir / f"{name}.png"), cv2.IMREAD_GRAYSCALE)
        vis = cv2.imread(str(vis_dir / f"{name}.png"), cv2.IMREAD_UNCHANGED)
        fused = cv2.imread(str(out / f"{name}.png"), cv2.IMREAD_UNCHANGED)
        assert fused.shape == vis.shape
        # The session's mean of the lumas equals the average baseline up to float rounding (and chroma round trip).
        assert np.abs(fused.astype(int) - AverageFusion().fuse(ir, vis)).max() <= 1


def test_missing_model_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(StreamFusionError, match="does not exist"):
        batch.load_engine(str(tmp_path / "nope.onnx"), "cpu")


def test_calibration_warps_each_ir_image_onto_its_visible_image(tmp_path: Path) -> None:
    """``--calibration``: an IR camera of another size (here the demo clip's IR at 3/4 size) is warped onto the
    visible grid by the calibration, scaled to that size, not resized; and a malformed calibration is one line."""
    from stream_fusion import DEMO_IR, DEMO_VIS
    from stream_fusion.align import load_calibration
    from stream_fusion.engine.classical import ClassicalEngine

    calibration_path = DEMO_IR.parent / "calibration.yaml"
    calibration = load_calibration(calibration_path)
    ir_dir, vis_dir, out = tmp_path / "ir", tmp_path / "vis", tmp_path / "out"
    ir_dir.mkdir()
    vis_dir.mkdir()
    names = [path.stem for path in sorted(DEMO_IR.glob("*.png"))[:2]]
    for name in names:
        ir = cv2.imread(str(DEMO_IR / f"{name}.png"), cv2.IMREAD_GRAYSCALE)
        cv2.imwrite(str(ir_dir / f"{name}.png"), cv2.resize(ir, (ir.shape[1] * 3 // 4, ir.shape[0] * 3 // 4)))
        shutil.copy(DEMO_VIS / f"{name}.png", vis_dir)
    assert batch.main(["--ir", str(ir_dir), "--vis", str(vis_dir), "--out", str(out), "--model", "classical",
                      "--calibration", str(calibration_path)]) == 0
    for name in names:
        ir = cv2.imread(str(ir_dir / f"{name}.png"), cv2.IMREAD_GRAYSCALE)
        vis = cv2.imread(str(vis_dir / f"{name}.png"), cv2.IMREAD_UNCHANGED)
        warp = calibration.warp((ir.shape[1], ir.shape[0]), (vis.shape[1], vis.shape[0]))
        np.testing.assert_array_equal(cv2.imread(str(out / f"{name}.png"), cv2.IMREAD_UNCHANGED),
                                      ClassicalEngine().fuse(ir, vis, warp))
        assert warp.matrix[0, 0] > 1.3  # scaled from 3/4 size, not resized first
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: affine\nmatrix: [[1, 0]]\n")
    result = subprocess.run(
        [sys.executable, "-m", "stream_fusion.batch", "--ir", str(ir_dir), "--vis", str(vis_dir), "--out", str(out),
         "--model", "classical", "--calibration", str(bad)],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith(f"error: malformed calibration {bad}")
