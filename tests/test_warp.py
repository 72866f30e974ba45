"""The engine's per-pixel work on the host (OpenCV) or inside the ONNX Runtime session (what runs on the GPU): the IR
warp (calibration + live correction, one resampling) and a luma model's colour split and merge. The in-session
GridSample against OpenCV's warp on real frames, the engine both ways on colour and gray cameras, IR of another size
than the visible camera, warps that change from frame to frame through the reused device buffers, the TensorRT
profile, and the pipeline fusing a calibrated stream."""
from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest

from eval_script import load_script
from stream_fusion import DATA_DIR, DEMO_IR, DEMO_VIS
from stream_fusion.align import AlignmentMonitor, load_calibration
from stream_fusion.capture import SourcePair, open_source
from stream_fusion.engine import SHIPPED_MODELS
from stream_fusion.engine.graph import frame_dims, frame_graph, read_model
from stream_fusion.engine.onnx_engine import OnnxEngine
from stream_fusion.engine.sessions import provider_options, session_options
from stream_fusion.pipeline import Pipeline
from stream_fusion.warp import IrRegistration, IrWarp, resize_onto, translation

DATA = DATA_DIR
DEMO_CALIBRATION = DEMO_IR.parent / "calibration.yaml"

# A calibration-like affine warp (small rotation, scale, shift) and a homography (a keystone), both for an IR camera
# of 3/4 the visible camera's size: the case a real rig with two different sensors has.
AFFINE = np.array([[4 / 3 * 1.01, 0.012, -3.2], [-0.011, 4 / 3 * 0.99, 4.1], [0, 0, 1]])
HOMOGRAPHY = np.array([[4 / 3 * 1.01, 0.02, -4.0], [0.01, 4 / 3 * 0.98, 3.0], [4e-5, -2e-5, 1]])


def real_pair(name: str = "FLIR_00211.png") -> tuple[np.ndarray, np.ndarray]:
    ir = cv2.imread(str(DATA / "eval/roadscene50/ir" / name), cv2.IMREAD_GRAYSCALE)
    vis = cv2.imread(str(DATA / "eval/roadscene50/vis" / name), cv2.IMREAD_COLOR)
    assert ir is not None and vis is not None
    return ir, vis


def small_ir(ir: np.ndarray) -> np.ndarray:
    """The IR frame as a camera with 3/4 of the visible camera's pixels would deliver it."""
    return cv2.resize(ir, (ir.shape[1] * 3 // 4, ir.shape[0] * 3 // 4), interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="module")
def warp_session() -> ort.InferenceSession:
    """The lite frame graph with the in-session warp, its resampled IR and its coverage weights exposed as outputs."""
    graph = frame_graph(read_model(SHIPPED_MODELS["lite"]), in_session=True)
    onnx.checker.check_model(graph)
    for name in ("ir_float", "ir_weight"):
        graph.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    return ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("matrix", [AFFINE, HOMOGRAPHY, translation(3.4, -2.2)])
def test_the_in_session_warp_resamples_as_opencv_does(warp_session, matrix: np.ndarray) -> None:
    """GridSample on the grid built in the graph gives OpenCV's bilinear warp with edges replicated to within its
    uint8 rounding (0.5 level), its weights are IrWarp.coverage's (0 where the IR camera does not see, 1 where it
    does), and the padded rows and columns reflect the frame as the host pads the visible frame."""
    ir, vis = real_pair()
    ir = ir if matrix[0, 0] == 1 else small_ir(ir)  # AFFINE and HOMOGRAPHY are for a camera of 3/4 the size
    h, w = vis.shape[:2]
    warp = IrWarp(matrix, (ir.shape[1], ir.shape[0]), (w, h))
    assert warp.is_affine == (matrix is not HOMOGRAPHY)
    padded = (w + -w % 8, h + -h % 8)
    feeds = {"ir": ir[None, None], "vis": np.zeros((1, padded[1], padded[0], 3), np.uint8),
             **warp.session_inputs(padded)}
    resampled, weight = warp_session.run(["ir_float", "ir_weight"], feeds)
    resampled, weight = resampled[0, 0] * 255, weight[0, :, :, 0]
    host = replace(warp, replicate=True).apply(ir).astype(np.float32)
    error = np.abs(resampled[:h, :w] - host)
    assert error.max() <= 0.51 and error.mean() < 0.3
    # The IR camera sees a little less than the visible one: weights below 1 beyond its view, 1 inside, both ways.
    assert warp.coverage is not None and (warp.coverage < 1).mean() > 0.002 and (warp.coverage == 1).mean() > 0.8
    np.testing.assert_allclose(weight[:h, :w], warp.coverage, atol=1e-4)
    reflected = np.pad(resampled[:h, :w], ((0, padded[1] - h), (0, padded[0] - w)), mode="reflect")
    np.testing.assert_allclose(resampled, reflected, atol=1e-4)


@pytest.mark.parametrize("model", ["lite", "cdfusion"])
def test_the_engine_fuses_the_same_frame_with_the_warp_in_the_session_or_on_the_host(model: str) -> None:
    """What a GPU engine does (warp and colour handling inside the session) against what a CPU engine does (OpenCV,
    then the network): the same fused frame to one grey level for the colour network, two for a luminance one
    (whose host route rounds the fused Y and the visible Cr, Cb to bytes before merging them; measured on 11 eval
    pairs: 0.05 % of values differ by 2, mean 0.08), with an IR camera of another size than the visible one."""
    ir, vis = real_pair()
    ir = small_ir(ir)
    h, w = vis.shape[:2]
    warp = IrWarp(HOMOGRAPHY, (ir.shape[1], ir.shape[0]), (w, h))
    host = OnnxEngine(SHIPPED_MODELS[model], "cpu", resolution=(w, h), threads=1)
    session = OnnxEngine(SHIPPED_MODELS[model], "cpu", resolution=(w, h), ir_resolution=warp.ir_size,
                         in_session=True, threads=1)
    assert not host.in_session and session.in_session
    # The host route: the IR warped with its edges replicated, fused, the visible frame where the IR does not see.
    expected = warp.blend_outside(host.fuse(replace(warp, replicate=True).apply(ir), vis), vis)
    np.testing.assert_array_equal(host.fuse(ir, vis, warp), expected)
    got = session.fuse(ir, vis, warp)
    assert got.shape == expected.shape == vis.shape
    tolerance = 1 if model == "cdfusion" else 2
    difference = np.abs(got.astype(int) - expected)
    assert difference.max() <= tolerance and difference.mean() < 0.3 and (difference > 1).mean() < 0.002
    # No warp at all: the session's identity resample leaves the pair as it is.
    registered = warp.apply(ir)
    assert np.abs(session.fuse(registered, vis).astype(int) - host.fuse(registered, vis)).max() <= tolerance
    # Frames of no size multiple: the session pads by reflection and crops back as the host does.
    odd = (slice(0, 299), slice(0, 493))
    got_odd, expected_odd = session.fuse(registered[odd], vis[odd]), host.fuse(registered[odd], vis[odd])
    assert got_odd.shape == expected_odd.shape == (299, 493, 3)
    assert np.abs(got_odd.astype(int) - expected_odd).max() <= tolerance
    # A gray visible camera: gray out, both ways.
    gray = cv2.cvtColor(vis, cv2.COLOR_BGR2GRAY)
    expected_gray, got_gray = host.fuse(registered, gray), session.fuse(registered, gray)
    assert got_gray.shape == expected_gray.shape == gray.shape
    assert np.abs(got_gray.astype(int) - expected_gray).max() <= 1


@pytest.mark.parametrize("model", ["lite", "cdfusion"])
def test_the_in_session_pre_and_post_processing_has_no_matrix_product(model: str) -> None:
    """The CUDA provider runs MatMul, Gemm and Einsum in TF32 by default (a 10-bit mantissa): as MatMuls, the warp's
    sampling positions moved by up to ~0.5 px and the fused frame came out up to 12 levels off the CPU's on an H200
    (scripts/check_routes.py: 30 of 60 cases failed; 60 of 60 pass with multiply-adds). The nodes the engine adds
    around the network use none. (The network's own convolutions, and cdfusion's colour-space Einsum, stay within
    the routes' 1-2 levels under TF32: measured there.)"""
    proto = read_model(SHIPPED_MODELS[model])
    network = {output for node in proto.graph.node for output in node.output} | {"fused_float"}
    graph = frame_graph(proto, in_session=True)
    added = [node for node in graph.graph.node if not set(node.output) & network]
    assert {"GridSample", "Round"} <= {node.op_type for node in added}  # the warp and the uint8 output are there
    assert not {"MatMul", "Gemm", "MatMulInteger", "Einsum"} & {node.op_type for node in added}


def test_the_feathered_edge_blends_the_clipped_fused_frame_on_both_routes() -> None:
    """A 3 px shift leaves a strip the IR does not see, where the fused frame fades to the visible one. The session
    used to blend the merged colour before clipping it, so where the fused colour saturates (this pair, rows
    144-161) it showed values the fused frame cannot take: 5 levels off the host route for lite, 11 for base."""
    ir, vis = real_pair("FLIR_04269.png")
    h, w = vis.shape[:2]
    warp = IrWarp(translation(3, -2), (w, h), (w, h))
    strip = (warp.coverage > 0) & (warp.coverage < 1)
    host = OnnxEngine(SHIPPED_MODELS["lite"], "cpu", threads=1, warmup=False).fuse(ir, vis, warp).astype(int)
    session = OnnxEngine(SHIPPED_MODELS["lite"], "cpu", in_session=True, threads=1, warmup=False).fuse(ir, vis, warp)
    assert strip[144:162, :3].all() and (host[144:162, :3] >= 245).any()  # saturated colour in the strip
    assert np.abs(session.astype(int) - host).max() <= 2


def test_where_the_ir_camera_does_not_see_the_fused_frame_is_the_visible_frame() -> None:
    """A narrower thermal lens (its view 0.6 of the visible camera's, turned 2 degrees): outside its view there is no
    thermal information, so the fused frame there is the visible frame, on the host and in the session alike."""
    ir, vis = real_pair()
    h, w = vis.shape[:2]
    warp = IrWarp(np.vstack([cv2.getRotationMatrix2D((w / 2, h / 2), 2, 0.6), [0, 0, 1]]), (w, h), (w, h))
    outside = warp.coverage == 0
    assert 0.4 < outside.mean() < 0.8
    for in_session in (False, True):
        engine = OnnxEngine(SHIPPED_MODELS["lite"], "cpu", in_session=in_session, threads=1, warmup=False)
        fused = engine.fuse(ir, vis, warp)
        assert np.abs(fused[outside].astype(int) - vis[outside]).max() <= 1  # measured 0 both ways
        inside = warp.coverage == 1
        assert np.abs(fused[inside].astype(int) - vis[inside]).mean() > 5  # and the IR is fused where it sees


def test_the_demo_has_no_dark_band_where_its_calibration_moves_the_ir_in() -> None:
    """The demo's calibration moves the IR 5 px right, so the first columns have no IR pixel. Fused with black IR they
    came out at a quarter of the visible brightness (column means 21 against 83-87); with the IR's edge replicated
    and the visible frame faded in there, they keep it (measured 84-93; lite round 3, which keeps daylight brighter,
    puts column 0 3.2 levels above the visible frame's: brighter is not the dark band this test is about)."""
    calibration = load_calibration(DEMO_CALIBRATION)
    ir = cv2.imread(str(sorted(DEMO_IR.iterdir())[-1]), cv2.IMREAD_UNCHANGED)
    vis = cv2.imread(str(sorted(DEMO_VIS.iterdir())[-1]), cv2.IMREAD_UNCHANGED)
    warp = calibration.warp((ir.shape[1], ir.shape[0]), (vis.shape[1], vis.shape[0]))
    assert (warp.apply(ir)[:, :5] == 0).all()  # black there, as the IR panel shows it
    for in_session in (False, True):
        engine = OnnxEngine(SHIPPED_MODELS["lite"], "cpu", in_session=in_session, threads=1, warmup=False)
        fused = engine.fuse(ir, vis, warp).astype(float)
        assert (fused[:, :8].mean(axis=0) > 0.9 * vis[:, :8].mean(axis=0)).all()
        assert -3 < fused[:, 0].mean() - vis[:, 0].mean() < 6


def test_a_warp_that_changes_between_frames_reaches_the_session() -> None:
    """The session's warp inputs live in device buffers that are copied only when the warp changes: a new
    correction must still reach the next frame, and returning to the first warp must give its frame again."""
    ir, vis = real_pair()
    h, w = vis.shape[:2]
    base = IrWarp.resize((ir.shape[1], ir.shape[0]), (w, h))
    engine = OnnxEngine(SHIPPED_MODELS["lite"], "cpu", resolution=(w, h), in_session=True, threads=1)
    first = engine.fuse(ir, vis, base.shifted(2.0, 0.0))
    second = engine.fuse(ir, vis, base.shifted(-3.0, 1.5))
    fresh = OnnxEngine(SHIPPED_MODELS["lite"], "cpu", resolution=(w, h), in_session=True, threads=1)
    np.testing.assert_array_equal(second, fresh.fuse(ir, vis, base.shifted(-3.0, 1.5)))
    assert np.abs(first.astype(int) - second).mean() > 2
    np.testing.assert_array_equal(engine.fuse(ir, vis, base.shifted(2.0, 0.0)), first)


def test_an_uncalibrated_ir_frame_is_area_averaged_down_and_bilinear_up() -> None:
    ir, _ = real_pair()
    h, w = ir.shape[:2]
    assert resize_onto(ir, (w, h)) is ir
    # wider but less tall, fewer pixels in all: a shrink, so averaged too (a rule on one axis would alias)
    for size in ((w // 3, h // 3), (w + 8, h // 2)):
        area = cv2.resize(ir, size, interpolation=cv2.INTER_AREA)
        np.testing.assert_array_equal(resize_onto(ir, size), area)
        assert not np.array_equal(cv2.resize(ir, size), area)
    np.testing.assert_array_equal(resize_onto(ir, (w * 2, h * 2)), cv2.resize(ir, (w * 2, h * 2)))


def test_a_warp_for_other_frame_sizes_is_refused() -> None:
    ir, vis = real_pair()
    engine = OnnxEngine(SHIPPED_MODELS["lite"], "cpu", in_session=True, threads=1, warmup=False)
    warp = IrWarp(AFFINE, (100, 80), (vis.shape[1], vis.shape[0]))
    with pytest.raises(ValueError, match="the warp maps 100x80 IR onto"):
        engine.fuse(ir, vis, warp)


def test_the_tensorrt_profile_covers_the_warp_inputs() -> None:
    """One TensorRT profile for the camera sizes, the IR at its own size, the visible frame as BGR (the luma split
    runs in the session) and the warp's small inputs: without them TensorRT would rebuild its engine at the first
    frame."""
    engine = OnnxEngine(SHIPPED_MODELS["lite"], "cpu", resolution=(640, 512), ir_resolution=(320, 256),
                        in_session=True, threads=1, warmup=False)
    shapes = engine._shapes((640, 512), (320, 256))
    options = provider_options("tensorrt", shapes=shapes, cache_dir=Path("c"), device_id=0)
    assert options["trt_profile_opt_shapes"] == ("ir:1x1x256x320,vis:1x512x640x3,ir_warp:3x3,grid_x:640,grid_y:512,"
                                                 "ir_low:2,ir_high:2,ir_feather:2")
    graph = frame_graph(read_model(SHIPPED_MODELS["lite"]), in_session=True)
    assert set(shapes) == {value.name for value in graph.graph.input}  # every input the session takes


def test_the_pipeline_fuses_a_calibrated_stream_with_one_resampling_of_the_ir() -> None:
    """The demo clip with its calibration: the pairs reach the engine as captured with the calibration's warp, and
    the fused frames are those of the IR warped by the calibration; with ``correct`` the live shift is composed into
    the same warp (one resampling), and the mosaic shows the IR as it was fused."""
    calibration = load_calibration(DEMO_CALIBRATION)
    engine = OnnxEngine(SHIPPED_MODELS["lite"], "cpu", in_session=True, threads=1, warmup=False)
    pipeline = Pipeline(SourcePair(open_source(DEMO_IR, "ir"), open_source(DEMO_VIS, "vis"), live=False), engine,
                        AlignmentMonitor("correct", every_n=1, hysteresis=1), queue_size=2,
                        registration=IrRegistration(calibration))
    fused_frames = []
    engine_fuse = engine.fuse

    def spy(ir: np.ndarray, vis: np.ndarray, warp: IrWarp | None = None) -> np.ndarray:
        fused_frames.append((ir, vis, warp))
        return engine_fuse(ir, vis, warp)

    engine.fuse = spy  # type: ignore[method-assign]
    summary = pipeline.run()
    assert summary.frames == 32 and summary.error is None
    ir, vis, warp = fused_frames[-1]
    raw = cv2.imread(str(sorted(DEMO_IR.iterdir())[31]), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(ir, raw)  # as captured: the engine resamples it
    calibrated = calibration.warp((ir.shape[1], ir.shape[0]), (vis.shape[1], vis.shape[0]))
    dx, dy = pipeline.monitor.correction
    if np.hypot(dx, dy) >= 1.0:
        np.testing.assert_allclose(warp.matrix, translation(dx, dy) @ calibrated.matrix, atol=1e-9)
    else:
        assert warp.matrix is calibrated.matrix or np.allclose(warp.matrix, calibrated.matrix)
    host = OnnxEngine(SHIPPED_MODELS["lite"], "cpu", threads=1, warmup=False)
    assert np.abs(pipeline.last.fused.astype(int) - host.fuse(ir, vis, warp)).max() <= 1
    mosaic_ir = pipeline.last.registered_ir
    np.testing.assert_array_equal(mosaic_ir, warp.apply(ir))


def test_fixed_sizes_fold_the_shape_arithmetic_a_gpu_would_run_on_the_cpu(tmp_path: Path) -> None:
    """What a GPU engine with a known resolution gets (``session_options(dims=frame_dims(...))``): every named
    dimension fixed, so ONNX Runtime folds the network's Shape/Gather-of-sizes nodes into constants (they would run
    on the CPU between GPU kernels) and the session still gives the same frame; another size is refused. Checked
    here on the CPU provider, which the engine itself leaves dynamic."""
    import collections

    graph = frame_graph(read_model(SHIPPED_MODELS["lite"]), in_session=True)
    ir, vis = real_pair()
    h, w = vis.shape[:2]
    counts = {}
    outputs = {}
    for fixed in (False, True):
        options = session_options(1, dims=frame_dims((w, h), (w, h), 8, in_session=True) if fixed else None)
        options.optimized_model_filepath = str(tmp_path / f"optimised_{fixed}.onnx")
        session = ort.InferenceSession(graph.SerializeToString(), options, providers=["CPUExecutionProvider"])
        warp = IrWarp.resize((w, h), (w, h))
        feeds = {"ir": ir[None, None], "vis": vis[None], **warp.session_inputs((w + -w % 8, h + -h % 8))}
        outputs[fixed] = session.run(None, feeds)[0]
        counts[fixed] = collections.Counter(n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node)
        if fixed:
            smaller = {**feeds, "vis": vis[None, :-8], "grid_y": feeds["grid_y"][:-8]}
            with pytest.raises(Exception, match="dimension|shape|Dimension"):
                session.run(None, smaller)
    assert counts[False]["Shape"] >= 10 and counts[True]["Shape"] == 0
    np.testing.assert_array_equal(outputs[True], outputs[False])


@pytest.mark.parametrize("in_session", [False, True])
def test_a_fixed_size_session_is_rebuilt_when_the_frames_change_size(
    in_session: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """A GPU session is built for the camera sizes (``fixed_size``, forced here on the CPU provider); a camera that
    switches mode mid-stream gets the session rebuilt for its new size, with one warning, not an error, and the
    frames are those of an engine of free sizes."""
    ir, vis = real_pair()
    h, w = vis.shape[:2]
    engine = OnnxEngine(SHIPPED_MODELS["lite"], "cpu", resolution=(w, h), in_session=in_session, fixed_size=True,
                        threads=1)
    free = OnnxEngine(SHIPPED_MODELS["lite"], "cpu", in_session=in_session, threads=1, warmup=False)
    assert engine.fixed_size and not free.fixed_size
    np.testing.assert_array_equal(engine.fuse(ir, vis), free.fuse(ir, vis))
    smaller_ir, smaller_vis = ir[:200, :320], vis[:200, :320]
    with caplog.at_level(logging.WARNING):
        fused = engine.fuse(smaller_ir, smaller_vis)
    np.testing.assert_array_equal(fused, free.fuse(smaller_ir, smaller_vis))
    assert engine.resolution == (320, 200) and engine.provider == "cpu"
    assert [r.getMessage() for r in caplog.records] == [
        f"{engine.name}: frames are now IR 320x200 and visible 320x200, not the sizes its cpu session was built for: "
        "rebuilding it"]


def test_the_route_check_script_finds_the_routes_in_agreement(tmp_path: Path) -> None:
    """scripts/check_routes.py, which the GPU job runs against the CUDA engine, run here on the CPU: every case of a
    real pair (registered, a smaller IR camera's calibration, a narrow lens; colour and gray) within tolerance."""
    check_routes = load_script("check_routes")
    rows = check_routes.check(SHIPPED_MODELS["lite"], "cpu", 1)
    assert len(rows) == 2 * 3 * 2 and all(row["ok"] for row in rows)
    assert {row["case"] for row in rows} == {"registered", "calibrated", "narrow lens"}
    assert max(row["max"] for row in rows) <= 2 and max(row["mean"] for row in rows) < 0.3
    out = tmp_path / "routes.json"
    assert check_routes.main(["--provider", "cpu", "--models", "cdfusion", "--pairs", "1", "--json", str(out)]) == 0
    assert len(json.loads(out.read_text())) == 2 * 3
    # The CUDA-graph check: per pair an engine for its size, each frame then its mirror image then itself again (the
    # calibrated case, whose IR is of another size, left out); on the CPU provider the graph option is a no-op.
    graphed = check_routes.check(SHIPPED_MODELS["cdfusion"], "cpu", 1, cuda_graph=True)
    assert len(graphed) == 2 * 2 * 3 and all(row["ok"] and row["cuda_graph"] for row in graphed)
    assert {row["case"] for row in graphed} >= {"registered", "registered mirrored", "narrow lens again"}

