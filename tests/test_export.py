"""ONNX export: round trip, parity with PyTorch on a real pair, dynamic sizes, metadata, a runtime-clean graph."""
from __future__ import annotations

import collections
import json
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from export import network as export_network
from stream_fusion import DATA_DIR
from stream_fusion.engine.graph import opset_version
from stream_fusion.errors import StreamFusionError
from stream_fusion.training.model import save_checkpoint
from stream_fusion.training.model.pyramid import MultiScaleSkip
from tiny_network import jittered_lite

DATA = DATA_DIR


def session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def torch_run(model: torch.nn.Module, ir: np.ndarray, vis: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(ir), torch.from_numpy(vis)).numpy()


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, Path, onnx.ModelProto]:
    model = jittered_lite(jitter=0.2, seed=0)
    path = tmp_path_factory.mktemp("export") / "tiny.onnx"
    proto = export_network.export_model(model, path, metadata={"preset": "lite", "model_version": "lite-test",
                                                            "training": "untrained placeholder (test)"})
    return model, path, proto


def test_round_trip_parity_fp32_on_a_real_eval_pair(exported) -> None:
    model, path, _ = exported
    [result] = export_network.parity(model, path, export_network.eval_pairs(1), "fp32")
    assert result.name == "tno25/tno25_01.png" and result.pixels == 576 * 768
    assert result.ok("fp32") and result.over == 0 and result.max_diff <= 1e-4
    # The check means something only if the network is not the identity-like average of its inputs.
    ir = cv2.imread(str(DATA / "eval/tno25/ir/tno25_01.png"), cv2.IMREAD_GRAYSCALE)
    vis = cv2.imread(str(DATA / "eval/tno25/vis/tno25_01.png"), cv2.IMREAD_GRAYSCALE)
    frames = export_network.pad_to_multiple(np.stack([ir, vis])[:, None], model.size_multiple).astype(np.float32) / 255
    fused = session(path).run(None, {"ir": frames[0:1], "vis": frames[1:2]})[0]
    assert np.abs(fused - frames.mean(axis=0)).mean() > 0.01


def test_parity_check_catches_a_wrong_export(tmp_path: Path, exported) -> None:
    """Another network's export must fail the check."""
    model, _, _ = exported
    other = tmp_path / "other.onnx"
    with torch.no_grad():
        different = jittered_lite(jitter=0.2, seed=0)
        different.decoder[0].bias.add_(0.01)
    export_network.export_model(different, other, metadata={"preset": "lite", "model_version": "x", "training": "x"})
    [result] = export_network.parity(model, other, export_network.eval_pairs(1), "fp32")
    assert not result.ok("fp32") and result.over > 1e-2 * result.pixels


def test_metadata_names_the_model_layout_range_multiple_and_training(exported) -> None:
    _, path, _ = exported
    meta = session(path).get_modelmeta().custom_metadata_map
    assert meta["model_name"] == "DiffFuseNet"
    assert meta["preset"] == "lite" and meta["model_version"] == "lite-test"
    assert meta["size_multiple"] == "8"  # the lite structure: 4 x its half-resolution learned path (downscale 2)
    assert meta["precision"] == "fp32"
    assert "NCHW" in meta["input_layout"] and "luma" in meta["input_layout"]
    assert meta["value_range"].startswith("0..1")
    assert meta["training"] == "untrained placeholder (test)"


def test_graph_is_runtime_clean_with_dynamic_axes(exported) -> None:
    _, _, proto = exported
    ops, problems = export_network.graph_report(proto)
    assert problems == []
    assert opset_version(proto) >= 18 and proto.ir_version == 10
    assert ops["ConvTranspose"] >= 1 and ops["Conv"] >= 1  # Haar DWT / inverse as convolutions
    assert not {"ScatterND", "Sin", "Cos", "Gemm", "Constant"} & set(ops)  # timestep embedding folded away
    # The skip's blurs are convolutions in the file (two per blur, three blurs per level), not a Slice per tap:
    # its only Slices split the batch of the two sources (axis 0).
    constants = {init.name: onnx.numpy_helper.to_array(init) for init in proto.graph.initializer}
    skip = [node for node in proto.graph.node if node.name.startswith("/skip/")]
    assert sum(node.op_type == "Conv" for node in skip) == 2 * 3 * 4
    assert all(constants[node.input[3]].tolist() == [0] for node in skip if node.op_type == "Slice")
    for value in [*proto.graph.input, *proto.graph.output]:
        dims = [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]
        assert dims == ["batch", 1, "height", "width"], value.name


def test_graph_report_flags_scatter_and_data_dependent_slices() -> None:
    h = onnx.helper
    value = h.make_tensor_value_info
    graph = h.make_graph(
        [h.make_node("ScatterND", ["x", "idx", "upd"], ["s"]),
         h.make_node("ReduceMax", ["x"], ["m"], keepdims=0),
         h.make_node("Cast", ["m"], ["end"], to=onnx.TensorProto.INT64),
         h.make_node("Reshape", ["end", "one"], ["end1"]),
         h.make_node("Slice", ["s", "zero", "end1"], ["y"])],
        "bad", [value("x", 1, [4]), value("idx", 7, [1, 1]), value("upd", 1, [1])], [value("y", 1, None)],
        [onnx.numpy_helper.from_array(np.array([0]), "zero"), onnx.numpy_helper.from_array(np.array([1]), "one")],
    )
    _, problems = export_network.graph_report(h.make_model(graph, opset_imports=[h.make_opsetid("", 18)]))
    assert "ScatterND x1" in problems
    assert "data-dependent Slice " in [p.rstrip("0123456789_") for p in problems] or any(
        p.startswith("data-dependent Slice") for p in problems)


def test_dynamic_sizes_odd_and_1280x1024_and_batch(exported) -> None:
    model, path, _ = exported
    rng = np.random.default_rng(1)
    run = session(path)
    for shape in [(1, 1, 248, 344), (2, 1, 64, 96), (1, 1, 1024, 1280)]:  # multiples of lite's 8, not of 16
        ir, vis = rng.random(shape, dtype=np.float32), rng.random(shape, dtype=np.float32)
        got = run.run(None, {"ir": ir, "vis": vis})[0]
        assert got.shape == shape
        if shape[2] < 1024:  # torch on the full 1280x1024 frame is slow on 2 cores; the shape is what is checked
            diff = np.abs(got - torch_run(model, ir, vis))
            assert diff.max() <= 1e-4, shape


def test_fp16_export_runs_and_stays_within_1e_2(tmp_path: Path) -> None:
    # Milder jitter than the fp32 tests: at 0.2 the activations reach ~15, where fp16's 1e-3 relative step alone
    # is 1.5e-2 at the output; trained weights (and 0.02 here) keep them small.
    model = jittered_lite(jitter=0.02, seed=0)
    path = tmp_path / "tiny16.onnx"
    proto = export_network.export_model(model, path, fp16=True, metadata={"preset": "lite", "model_version": "t",
                                                                         "training": "test"})
    conv_inputs = {node.input[1] for node in proto.graph.node if node.op_type in ("Conv", "ConvTranspose")}
    conv_weights = [i for i in proto.graph.initializer if i.name in conv_inputs]
    assert conv_weights and all(i.data_type == onnx.TensorProto.FLOAT16 for i in conv_weights)
    assert session(path).get_modelmeta().custom_metadata_map["precision"] == "fp16"
    assert export_network.graph_report(proto)[1] == []
    # The GroupNorms stay fp32 throughout: no value of theirs goes to fp16 and straight back (the converter put
    # such a pair between every two of their nodes), so each needs one Cast in (its fp16 input) and one out.
    producer = {out: node for node in proto.graph.node for out in node.output}
    to = {node.name: next(a.i for a in node.attribute if a.name == "to") for node in proto.graph.node
          if node.op_type == "Cast"}
    round_trips = [node.name for node in proto.graph.node if to.get(node.name) == onnx.TensorProto.FLOAT
                   and to.get(getattr(producer.get(node.input[0]), "name", "")) == onnx.TensorProto.FLOAT16]
    assert round_trips == []
    scopes = [export_network.scope_prefix(name) for name, m in model.named_modules()
              if isinstance(m, torch.nn.GroupNorm)]
    inside = collections.Counter(next(p for p in scopes if name.startswith(p))
                                 for name in to if name.startswith(tuple(scopes)))
    assert scopes and set(inside.values()) == {1}  # each GroupNorm's one Cast: its output, to fp16
    [result] = export_network.parity(model, path, export_network.eval_pairs(1), "fp16")
    assert result.ok("fp16") and result.over == 0 and result.max_diff <= 1e-2
    # fp16 really ran: an fp32 file gives float rounding (~1e-6), fp16 activations a visibly larger difference.
    assert result.max_diff > 1e-5


def test_skip_share_is_fp16_safe_and_equals_the_trained_formula() -> None:
    """The skip's soft choose-max, rewritten to survive fp16, is the formula the networks were trained with."""
    rng = np.random.default_rng(0)
    activity = torch.from_numpy(10.0 ** rng.uniform(-6, 0, (2, 1, 64, 64))).float()
    activity[:, :, :4] = 0.0  # flat in both sources: one half each
    trained = ((activity[:1] ** 4 + 5e-13) / (activity[:1] ** 4 + activity[1:] ** 4 + 1e-12)).double()
    share = MultiScaleSkip.share(activity, 1)
    assert torch.allclose(share.double(), trained, rtol=0, atol=1e-6)
    assert torch.equal(share[:, :, :4], torch.full_like(share[:, :, :4], 0.5))
    half = MultiScaleSkip.share(activity.half(), 1)  # fp16 throughout: no NaN, within fp16 rounding of fp32
    assert torch.isfinite(half).all() and (half.float() - share).abs().max() < 5e-3


@pytest.mark.parametrize("size", [(1, 1), (3, 5), (37, 52)])
def test_exported_skip_blur_is_the_trained_blur(size: tuple[int, int]) -> None:
    """The export's convolution blur is the function the networks were trained with, at every dilation, also on
    frames smaller than the kernel's reach (replicate padding)."""
    x = torch.rand(2, 1, *size, generator=torch.Generator().manual_seed(size[1]))
    for dilation in (1, 2, 4, 8, 16):
        trained, exported = MultiScaleSkip.blur(x, dilation), export_network.ConvBlurSkip.blur(x, dilation)
        assert exported.shape == trained.shape and torch.allclose(exported, trained, rtol=0, atol=1e-6), dilation
    vis, ir, weight = x[:1], x[1:], torch.full_like(x[:1], 0.3)
    assert torch.allclose(export_network.ConvBlurSkip(4)(vis, ir, weight), MultiScaleSkip(4)(vis, ir, weight),
                          atol=1e-6)


def test_cli_exports_a_checkpoint_with_its_training_metadata(tmp_path: Path, capsys, exported) -> None:
    model, _, _ = exported
    checkpoint = tmp_path / "tiny.pt"
    save_checkpoint(checkpoint, model, model.preset, {"epochs": 3, "data": "train (205 pairs)"})
    out = tmp_path / "tiny_cli.onnx"
    assert export_network.main(["--checkpoint", str(checkpoint), "--out", str(out), "--pairs", "1"]) == 0
    printed = capsys.readouterr().out
    assert "parity ok" in printed and "GPU placement" in printed and "Conv" in printed
    meta = session(out).get_modelmeta().custom_metadata_map
    assert json.loads(meta["training"]) == {"epochs": 3, "data": "train (205 pairs)"}
    assert meta["model_version"].startswith("lite-") and meta["model_version"] != "lite-random-init"


def test_cli_rejects_a_missing_checkpoint_and_a_preset_mismatch(tmp_path: Path, exported) -> None:
    with pytest.raises(StreamFusionError, match="not found"):
        export_network.main(["--checkpoint", str(tmp_path / "none.pt"), "--out", str(tmp_path / "x.onnx")])
    model, _, _ = exported
    checkpoint = tmp_path / "tiny.pt"
    save_checkpoint(checkpoint, model, model.preset, {})
    with pytest.raises(StreamFusionError, match="lite preset, not base"):
        export_network.main(["--checkpoint", str(checkpoint), "--preset", "base", "--out", str(tmp_path / "x.onnx")])
    with pytest.raises(SystemExit):  # neither --checkpoint nor --random-init: argparse usage error, status 2
        export_network.main(["--out", str(tmp_path / "x.onnx")])
