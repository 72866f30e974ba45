"""The colour model (cdfusion) through the same export and engine as the luminance networks: parity on a real colour
pair, BGR metadata, channels-last frames in the session, the engine's colour path against PyTorch, gray cameras."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
import torch

from export import network as export_network
from stream_fusion import DATA_DIR, WEIGHTS_DIR
from stream_fusion.engine import create_engine
from stream_fusion.engine.graph import frame_graph
from stream_fusion.engine.onnx_engine import OnnxEngine
from stream_fusion.engine.sessions import provider_options
from stream_fusion.training.model import build_model, save_checkpoint
from stream_fusion.training.model.torch_engine import TorchEngine
from tiny_network import jittered, one_thread  # noqa: F401 - one_thread: autouse fixture

DATA = DATA_DIR
PAIR = "FLIR_00211.png"


def jittered_cdfusion(jitter: float = 0.2, seed: int = 0) -> torch.nn.Module:
    """The real cdfusion structure at 4 channels, weights jittered so the learned colour residual is not zero
    (freshly built, the network is exactly its colour prior, which would let parity pass on the prior alone)."""
    return jittered("cdfusion", {}, jitter, seed)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, Path, onnx.ModelProto]:
    model = jittered_cdfusion()
    folder = tmp_path_factory.mktemp("cdfusion")
    path = folder / "cdfusion.onnx"
    proto = export_network.export_model(model, path, metadata={"preset": "cdfusion", "model_version": "cdfusion-test",
                                                            "training": "untrained placeholder (test)"})
    save_checkpoint(folder / "cdfusion.pt", model, model.preset, {"note": "test"})
    return model, path, proto


def real_pair() -> tuple[np.ndarray, np.ndarray]:
    ir = cv2.imread(str(DATA / "eval/roadscene50/ir" / PAIR), cv2.IMREAD_GRAYSCALE)
    vis = cv2.imread(str(DATA / "eval/roadscene50/vis" / PAIR), cv2.IMREAD_COLOR)
    assert ir is not None and vis is not None and vis.shape[:2] == ir.shape
    return ir, vis


def test_export_parity_on_a_real_colour_pair(exported) -> None:
    model, path, _ = exported
    ir, vis = real_pair()
    [result] = export_network.parity(model, path, [(f"roadscene50/{PAIR}", ir, vis)], "fp32")
    assert result.over == 0 and result.max_diff <= 1e-4
    h, w = (n + -n % model.size_multiple for n in ir.shape)
    assert result.pixels == 3 * h * w  # all three colour planes of the padded frame are compared
    # The learned residual is really exercised: the output is not the YCbCr-route prior of the fresh network.
    fresh = build_model(model.preset).eval()
    planes = torch.from_numpy(vis[:296, :496].transpose(2, 0, 1).astype(np.float32) / 255)[None]
    ir_t = torch.from_numpy(ir[:296, :496].astype(np.float32) / 255)[None, None]
    with torch.no_grad():
        assert (model(ir_t, planes) - fresh(ir_t, planes)).abs().mean() > 0.01


def test_metadata_and_graph_say_bgr_three_channels(exported) -> None:
    _, _, proto = exported
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["model_name"] == "Dif-CDFusion" and meta["preset"] == "cdfusion"
    assert meta["vis_channels"] == "3" and meta["output"] == "bgr" and "BGR" in meta["input_layout"]
    assert meta["size_multiple"] == "8"
    shapes = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in [*proto.graph.input, *proto.graph.output]}
    assert shapes == {"ir": ["batch", 1, "height", "width"], "vis": ["batch", 3, "height", "width"],
                      "fused": ["batch", 3, "height", "width"]}
    assert export_network.graph_report(proto)[1] == []


def test_frame_graph_takes_and_returns_channels_last_bytes(exported) -> None:
    """OpenCV's HxWx3 frame goes into the session as it is; the transposes run inside (on the GPU there)."""
    _, _, proto = exported
    wrapped = frame_graph(proto)
    dims = {v.name: ([d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim], v.type.tensor_type.elem_type)
            for v in [*wrapped.graph.input, *wrapped.graph.output]}
    assert dims["vis"] == (["batch", "height", "width", 3], onnx.TensorProto.UINT8)
    assert dims["fused"] == (["batch", "height", "width", 3], onnx.TensorProto.UINT8)
    assert dims["ir"] == (["batch", 1, "height", "width"], onnx.TensorProto.UINT8)
    onnx.checker.check_model(wrapped)


def test_engine_colour_path_matches_pytorch_on_a_real_pair(exported) -> None:
    model, path, _ = exported
    engine = OnnxEngine(path, "cpu", warmup=False)
    assert engine.colour and engine.name == "Dif-CDFusion-cdfusion"
    ir, vis = real_pair()
    fused = engine.fuse(ir, vis)
    assert fused.shape == vis.shape and fused.dtype == np.uint8
    expected = TorchEngine(path.with_suffix(".pt")).fuse(ir, vis)
    diff = np.abs(fused.astype(int) - expected)
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3  # rounding of values at .5 only
    # Colour really comes out: the channels differ where the visible image is coloured.
    assert np.abs(fused[:, :, 0].astype(int) - fused[:, :, 2]).mean() > 3


def test_engine_handles_odd_sizes_and_gray_cameras(exported) -> None:
    _, path, _ = exported
    engine = create_engine(path, "cpu", resolution=(77, 101))
    ir, vis = real_pair()
    odd = engine.fuse(ir[:101, :77], vis[:101, :77])
    assert odd.shape == (101, 77, 3)
    gray = cv2.cvtColor(vis, cv2.COLOR_BGR2GRAY)
    fused_gray = engine.fuse(ir, gray)
    assert fused_gray.shape == gray.shape and fused_gray.dtype == np.uint8
    # A gray camera is fed as three equal channels: the same as handing the engine that BGR frame.
    as_bgr = engine.fuse(ir, cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR))
    assert np.array_equal(fused_gray, cv2.cvtColor(as_bgr, cv2.COLOR_BGR2GRAY))
    with pytest.raises(ValueError, match="differ in size"):
        engine.fuse(ir, vis[:-1])


def test_tensorrt_profile_names_each_input_with_its_own_layout() -> None:
    options = provider_options("tensorrt", shapes={"ir": (1, 1, 512, 640), "vis": (1, 512, 640, 3)},
                               cache_dir=Path("/tmp/x"), device_id=0)
    assert options["trt_profile_opt_shapes"] == "ir:1x1x512x640,vis:1x512x640x3"
    assert options["trt_profile_min_shapes"] == options["trt_profile_max_shapes"] == options["trt_profile_opt_shapes"]


def test_shipped_colour_model_keeps_colour_better_than_the_ycbcr_route() -> None:
    """The shipped cdfusion against the shipped lite (YCbCr route) on a colourful RoadScene test pair (never trained
    on): about a third of the a*/b* error, a higher chroma correlation, and the same edge transfer (measured
    2026-11-28: |Δa*|+|Δb*| 0.47 vs 1.42, chroma_r 0.9986 vs 0.9967, Qabf 0.625 vs 0.622)."""
    from stream_fusion.evaluate.metrics import colour_metrics, qabf

    if not (WEIGHTS_DIR / "difffuse_cdfusion.onnx").is_file():
        pytest.skip("no shipped cdfusion model")
    ir = cv2.imread(str(DATA / "eval/roadscene50/ir/FLIR_06282.png"), cv2.IMREAD_GRAYSCALE)
    vis = cv2.imread(str(DATA / "eval/roadscene50/vis/FLIR_06282.png"), cv2.IMREAD_COLOR)
    lab = lambda image: cv2.cvtColor(image.astype(np.float32) / 255, cv2.COLOR_BGR2Lab)  # noqa: E731
    scores = {}
    for name in ("cdfusion", "lite"):
        fused = create_engine(name, "cpu", warmup=False).fuse(ir, vis)
        chroma_error = float(np.abs(lab(fused)[..., 1:] - lab(vis)[..., 1:]).sum(axis=-1).mean())
        gray = cv2.cvtColor(fused, cv2.COLOR_BGR2GRAY)
        scores[name] = (chroma_error, colour_metrics(fused, vis)["chroma_r"],
                        qabf(gray, ir, cv2.cvtColor(vis, cv2.COLOR_BGR2GRAY)))
    (cd_error, cd_r, cd_qabf), (lite_error, lite_r, lite_qabf) = scores["cdfusion"], scores["lite"]
    assert cd_error < 0.5 * lite_error
    assert cd_r > lite_r
    assert cd_qabf > 0.97 * lite_qabf
