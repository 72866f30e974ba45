"""The ONNX Runtime engine: same frames as the bare session, odd sizes, colour handling, clear errors, providers."""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from export import network as export_network
from stream_fusion import DATA_DIR, batch
from stream_fusion.bench import profile_engine
from stream_fusion.engine import SHIPPED_MODELS, FusionEngine, create_engine
from stream_fusion.engine.classical import ClassicalEngine
from stream_fusion.engine.frames import pad_to_multiple, split_luma
from stream_fusion.engine.onnx_engine import OnnxEngine
from stream_fusion.engine.sessions import provider_options
from stream_fusion.errors import StreamFusionError
from tiny_network import jittered_lite

DATA = DATA_DIR
ROADSCENE = DATA / "eval" / "roadscene50"


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, Path]:
    model = jittered_lite(jitter=0.1, seed=1)
    path = tmp_path_factory.mktemp("engine") / "tiny.onnx"
    export_network.export_model(model, path, metadata={"preset": "lite", "model_version": "t", "training": "test"})
    return model, path


@pytest.fixture(scope="module")
def engine(network) -> OnnxEngine:
    return create_engine(network[1], "cpu", resolution=(96, 64))


def real_pair(name: str = "FLIR_00211.png") -> tuple[np.ndarray, np.ndarray]:
    ir = cv2.imread(str(ROADSCENE / "ir" / name), cv2.IMREAD_GRAYSCALE)
    vis = cv2.imread(str(ROADSCENE / "vis" / name), cv2.IMREAD_COLOR)
    assert ir is not None and vis is not None and vis.ndim == 3
    return ir, vis


def reference_fuse(path: Path, ir: np.ndarray, vis_y: np.ndarray, multiple: int = 4) -> np.ndarray:
    """The bare float session with the engine's pre/post written out in numpy: pad, /255, run, crop, clip, round."""
    h, w = ir.shape
    frames = pad_to_multiple(np.stack([ir, vis_y])[:, None], multiple)
    x = frames.astype(np.float32) * np.float32(1 / 255)
    out = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {"ir": x[0:1], "vis": x[1:2]})[0]
    return np.rint(np.clip(out[0, 0, :h, :w], 0, 1) * np.float32(255)).astype(np.uint8)


def test_engine_equals_the_bare_session_with_the_same_pre_and_post(network, engine) -> None:
    ir, vis = real_pair()
    vis_y = split_luma(vis)[0]
    fused = engine.fuse(ir, vis_y)
    expected = reference_fuse(network[1], ir, vis_y)
    assert fused.dtype == np.uint8 and fused.shape == ir.shape
    assert np.abs(fused.astype(int) - expected).max() <= 1  # x/255 vs x*(1/255) may move a rounding by one level
    assert (fused != expected).mean() < 1e-3
    assert engine.provider == "cpu" and engine.name == "DiffFuseNet-lite" and isinstance(engine, FusionEngine)


def test_odd_size_is_padded_and_cropped_and_matches_torch(network, engine) -> None:
    model, _ = network
    ir, vis = real_pair()
    ir, vis_y = ir[:250, :333], split_luma(vis)[0][:250, :333].copy()
    fused = engine.fuse(ir, vis_y)
    assert fused.shape == (250, 333)
    frames = pad_to_multiple(np.stack([ir, vis_y])[:, None], model.size_multiple).astype(np.float32) / 255
    assert frames.shape[-2:] == (256, 336)  # lite's size multiple is 8
    with torch.no_grad():
        expected = model(torch.from_numpy(frames[0:1]), torch.from_numpy(frames[1:2])).numpy()[0, 0, :250, :333]
    assert np.abs(fused.astype(np.float32) - expected * 255).max() <= 0.5 + 255e-4


def test_colour_in_colour_out_keeps_the_visible_chroma(engine) -> None:
    ir, vis = real_pair()
    fused = engine.fuse(ir, vis)
    assert fused.shape == vis.shape and fused.dtype == np.uint8
    fused_ycrcb = cv2.cvtColor(fused, cv2.COLOR_BGR2YCrCb).astype(int)
    vis_ycrcb = cv2.cvtColor(vis, cv2.COLOR_BGR2YCrCb).astype(int)
    assert np.abs(fused_ycrcb[..., 1:] - vis_ycrcb[..., 1:]).mean() < 1.5  # chroma survives the BGR round trip
    luma = engine.fuse(ir, split_luma(vis)[0])
    assert np.abs(fused_ycrcb[..., 0] - luma).mean() < 1.0  # and the luma is the gray fusion
    assert np.abs(luma.astype(int) - vis_ycrcb[..., 0]).mean() > 2  # which is not just the visible luma


def test_gray_in_gray_out_and_three_channel_ir_is_gray(engine) -> None:
    ir, vis = real_pair()
    vis_y = split_luma(vis)[0]
    gray = engine.fuse(ir, vis_y)
    assert gray.ndim == 2
    np.testing.assert_array_equal(engine.fuse(cv2.cvtColor(ir, cv2.COLOR_GRAY2BGR), vis_y), gray)


def test_1280x1024_through_the_session(engine) -> None:
    frame = np.random.default_rng(0).integers(0, 256, (1, 1, 1024, 1280), dtype=np.uint8)
    out = engine.run(frame, frame)
    assert out.shape == (1, 1, 1024, 1280) and out.dtype == np.uint8 and out.std() > 1


def test_fuse_cli_gives_the_engine_frames(network, engine, tmp_path: Path) -> None:
    ir, vis = real_pair()
    for kind, image in (("ir", ir), ("vis", vis)):
        (tmp_path / kind).mkdir()
        cv2.imwrite(str(tmp_path / kind / "pair.png"), image)
    batch.fuse_folder(batch.load_engine(str(network[1]), "cpu"), tmp_path / "ir", tmp_path / "vis",
                         tmp_path / "out", progress=False)
    np.testing.assert_array_equal(cv2.imread(str(tmp_path / "out" / "pair.png"), cv2.IMREAD_UNCHANGED),
                                  engine.fuse(ir, vis))


def test_missing_corrupt_and_wrong_model_files_are_one_line_errors(tmp_path: Path, network) -> None:
    with pytest.raises(StreamFusionError, match="does not exist"):
        create_engine(tmp_path / "none.onnx")
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(network[1].read_bytes()[:5000])
    with pytest.raises(StreamFusionError, match="not a valid ONNX model"):
        create_engine(corrupt)
    checkpoint = tmp_path / "model.pt"
    checkpoint.write_bytes(b"not really")
    with pytest.raises(StreamFusionError, match="PyTorch checkpoint"):
        create_engine(checkpoint)
    h = onnx.helper
    relu = h.make_model(h.make_graph([h.make_node("Relu", ["x"], ["y"])], "g",
                                     [h.make_tensor_value_info("x", 1, [1])], [h.make_tensor_value_info("y", 1, [1])]),
                        opset_imports=[h.make_opsetid("", 18)], ir_version=10)
    onnx.save(relu, str(tmp_path / "relu.onnx"))
    with pytest.raises(StreamFusionError, match="not a fusion model"):
        create_engine(tmp_path / "relu.onnx")
    bare = onnx.load(str(network[1]))
    del bare.metadata_props[:]
    onnx.save(bare, str(tmp_path / "bare.onnx"))
    with pytest.raises(StreamFusionError, match="lacks stream_fusion metadata"):
        create_engine(tmp_path / "bare.onnx")


def test_model_names_and_unknown_provider(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert isinstance(create_engine("classical"), ClassicalEngine)
    with pytest.raises(StreamFusionError, match="unknown model 'lightweight': use default, lite, base, cdfusion, classical"):
        create_engine("lightweight")
    with pytest.raises(StreamFusionError, match="unknown provider 'gpu'"):
        create_engine("classical", "gpu")
    monkeypatch.setitem(SHIPPED_MODELS, "base", tmp_path / "difffuse_base.onnx")
    with pytest.raises(StreamFusionError, match="shipped base model .* is missing: export it"):
        create_engine("base")


@pytest.mark.parametrize("provider", ["cuda", "tensorrt"])
def test_forcing_an_unavailable_gpu_provider_is_an_error(network, provider: str) -> None:
    try:
        engine = create_engine(network[1], provider, resolution=(64, 64))
    except StreamFusionError as error:
        assert f"provider {provider} is unavailable here" in str(error) and "\n" not in str(error)
    else:  # a machine where it does load: then it must really be the one running
        assert engine.provider == provider


def test_cuda_graph_is_asked_of_the_gpu_providers_for_one_frame_size(network, engine) -> None:
    """``cuda_graph`` turns on each GPU provider's own capture option (names from their docs), only when asked; a
    graph is captured for one frame size, so the option without a resolution is refused; the CPU provider has no
    graphs and fuses as without it."""
    options = {name: provider_options(name, shapes=None, cache_dir=Path("c"), device_id=0,
                                                    cuda_graph=True) for name in ("cuda", "tensorrt", "cpu")}
    assert options["cuda"]["enable_cuda_graph"] == "True" and options["tensorrt"]["trt_cuda_graph_enable"] == "True"
    assert options["cpu"] == {}
    plain = provider_options("cuda", shapes=None, cache_dir=Path("c"), device_id=0)
    assert "enable_cuda_graph" not in plain
    with pytest.raises(StreamFusionError, match="cuda_graph needs resolution"):
        create_engine(network[1], "cpu", cuda_graph=True)
    graphed = create_engine(network[1], "cpu", resolution=(96, 64), cuda_graph=True)
    ir, vis = real_pair()
    np.testing.assert_array_equal(graphed.fuse(ir, vis), engine.fuse(ir, vis))


def test_auto_falls_back_to_cpu_with_one_short_warning_and_no_log_spam(network, caplog, capfd, monkeypatch) -> None:
    caplog.set_level(logging.WARNING, logger="stream_fusion.engine")
    engine = create_engine(network[1], "auto", resolution=(64, 64))
    out, err = capfd.readouterr()
    if engine.provider != "cpu":
        pytest.skip(f"a GPU provider ({engine.provider}) loads on this machine")
    gpu_listed = {"TensorrtExecutionProvider", "CUDAExecutionProvider"} & set(ort.get_available_providers())
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    if gpu_listed:  # the GPU build without a GPU: one short line, the reasons on request
        assert warnings == ["onnxruntime: running on CPU: TensorRT and CUDA did not load (STREAM_FUSION_VERBOSE=1 "
                            "says why)"]
    else:  # a CPU build: the CPU is all it has, nothing to say
        assert warnings == []
    assert "EP Error" not in out + err and "Failed to load library" not in out + err
    caplog.clear()
    monkeypatch.setenv("STREAM_FUSION_VERBOSE", "1")
    create_engine(network[1], "auto", resolution=(64, 64))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and warnings[0].startswith("onnxruntime: running on CPU; unavailable: tensorrt: ")
    assert "; cuda: " in warnings[0]
    if not gpu_listed:
        assert "tensorrt: not in this onnxruntime build; cuda: not in this onnxruntime build" in warnings[0]


@pytest.mark.parametrize("preset", ["lite", "base", "cdfusion"])
def test_shipped_onnx_is_the_export_of_the_shipped_checkpoint(preset: str) -> None:
    """A new checkpoint without a re-export would ship stale weights to every deployment: the ONNX metadata names the
    checkpoint it came from (preset + sha256 prefix)."""
    onnx_path = SHIPPED_MODELS[preset]
    checkpoint = onnx_path.with_suffix(".pt")
    if not onnx_path.is_file() or not checkpoint.is_file():
        pytest.skip(f"no shipped {preset} pair")
    meta = {p.key: p.value for p in onnx.load(str(onnx_path)).metadata_props}
    digest = hashlib.sha256(checkpoint.read_bytes()).hexdigest()[:12]
    assert meta["model_version"] == f"{preset}-{digest}", "re-export: python -m export.network --checkpoint ..."
    assert "untrained" not in meta["training"]


def test_default_engine_fuses_the_demo_clip() -> None:
    from stream_fusion import DEMO_IR, DEMO_VIS

    engine = create_engine("default", "cpu", resolution=(360, 270))
    ir = cv2.imread(str(sorted(DEMO_IR.glob("*.png"))[-1]), cv2.IMREAD_GRAYSCALE)
    vis = cv2.imread(str(sorted(DEMO_VIS.glob("*.png"))[-1]), cv2.IMREAD_GRAYSCALE)
    fused = engine.fuse(ir, vis)
    assert fused.shape == (270, 360) and engine.preset == "lite"
    assert 5 < np.abs(fused.astype(int) - vis).mean() and 5 < np.abs(fused.astype(int) - ir).mean()


def test_profile_splits_a_real_session_by_op_type_and_module(network, tmp_path: Path, capsys) -> None:
    """stream_fusion.bench.profile_engine: every profiled run has the same nodes (the warm-up runs are left out), and the
    per-op-type and per-module times add up to the node total; the CLI writes it and refuses a bad size."""
    result = profile_engine.profile(network[1], "cpu", (96, 64), runs=3)
    assert result["provider"] == "cpu" and result["size"] == "96x64" and result["runs"] == 3
    assert result["nodes_per_run"] == int(result["nodes_per_run"]) > 100
    assert sum(row["nodes_per_run"] for row in result["op_types"]) == result["nodes_per_run"]
    assert sum(row["ms_per_run"] for row in result["op_types"]) == pytest.approx(result["node_ms_per_run"])
    assert sum(result["scopes"].values()) == pytest.approx(result["node_ms_per_run"])
    assert {"skip", "encoder", "decoder"} <= set(result["scopes"]) and result["scopes"]["skip"] > 0
    assert 0 < result["node_ms_per_run"] < 10 * result["wall_ms_median"]
    out = tmp_path / "profile.json"
    with pytest.raises(SystemExit) as done:
        profile_engine.run_cli(lambda: profile_engine.main(["--model", str(network[1]), "--size", "96x64",
                                                           "--runs", "2", "--json", str(out)]))
    assert done.value.code == 0 and json.loads(out.read_text())["runs"] == 2
    assert "| Conv |" in capsys.readouterr().out
    with pytest.raises(StreamFusionError, match="--size must be WIDTHxHEIGHT"):
        profile_engine.main(["--size", "640"])


def test_cuda_graph_is_on_by_default_whenever_the_frame_size_is_known(network, monkeypatch) -> None:
    """Issue #16: the CUDA graph is the GPU providers' default once the frame size is known (a graph is captured for
    one size), off without a size or when turned off; the option reaches every provider attempt of the session (the
    CPU provider ignores it)."""
    from stream_fusion.engine import onnx_engine

    asked: list[bool] = []
    real_open = onnx_engine.open_session

    def recording_open(*args, **kwargs):
        asked.append(kwargs["cuda_graph"])
        return real_open(*args, **kwargs)

    monkeypatch.setattr(onnx_engine, "open_session", recording_open)
    for options, expected in [({"resolution": (96, 64)}, True), ({}, False),
                              ({"resolution": (96, 64), "cuda_graph": False}, False),
                              ({"resolution": (96, 64), "cuda_graph": True}, True)]:
        engine = create_engine(network[1], "cpu", warmup=False, **options)
        assert asked[-1] is expected and engine.cuda_graph is expected, options


def test_engine_config_cuda_graph_accepts_null_true_false_only(network) -> None:
    from stream_fusion.engine import engine_from_config

    cfg = {"model": str(network[1]), "provider": "cpu"}
    for value in (None, True, False):
        assert engine_from_config({**cfg, "cuda_graph": value}, (96, 64)).provider == "cpu"
    with pytest.raises(StreamFusionError, match="'engine.cuda_graph' must be true, false or null") as error:
        engine_from_config({**cfg, "cuda_graph": "yes"}, (96, 64))
    assert "\n" not in str(error.value)
