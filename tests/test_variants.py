"""Issue #16 point 3's candidate exports (export/variants.py, export/groupnorm.py) and their GPU timing job
(stream_fusion/bench/variants.py), checked on the CPU: the same network in fewer nodes, and the job's logic."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from export import variants
from export.network import export_model, load_network
from stream_fusion import WEIGHTS_DIR
from stream_fusion.bench import variants as bench_variants
from stream_fusion.errors import StreamFusionError


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, dict]]:
    """Every variant of the shipped lite network, as python -m export.variants writes them, and the manifest."""
    out = tmp_path_factory.mktemp("variants")
    assert variants.main(["--preset", "lite", "--out", str(out), "--pairs", "1"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    return out, {f"{row['variant']}_{row['precision']}": row for row in manifest["files"]}


def test_every_variant_is_the_shipped_network_in_fewer_nodes(built) -> None:
    out, rows = built
    assert set(rows) == {f"{v}_{p}" for v in variants.VARIANTS for p in ("fp32", "fp16")}
    for name, row in rows.items():
        # On the CPU (CUDA-only nodes written out by their meaning): fp32 as shipped, fp16 within its rounding.
        assert row["cpu_levels_vs_shipped_fp32"] <= (0.01 if name.endswith("fp32") else 0.5), name
    norms = 8  # lite's GroupNorms
    for variant, op, domain in (("gn-onnx", "GroupNormalization", ""), ("gn-contrib", "GroupNorm", "com.microsoft"),
                                ("ort-unet", "GroupNorm", "com.microsoft")):
        proto = onnx.load(str(out / rows[f"{variant}_fp32"]["file"]))
        assert sum(n.op_type == op and n.domain == domain for n in proto.graph.node) == norms, variant
        assert rows[f"{variant}_fp32"]["nodes"] < rows["twopass_fp32"]["nodes"] - 200, variant
    assert {o.domain: o.version for o in onnx.load(str(out / rows["gn-onnx_fp32"]["file"])).opset_import}[""] == 21
    unet = onnx.load(str(out / rows["ort-unet_fp32"]["file"]))
    assert sum(n.op_type == "NhwcConv" for n in unet.graph.node) == 50  # every Conv of lite channels-last
    assert rows["ort-unet_fp32"]["ort_groupnorm_fusion"]["fused"] == norms


def test_the_contrib_groupnorm_keeps_float_gamma_and_beta_and_takes_fp16(built) -> None:
    """com.microsoft.GroupNorm's CUDA kernel reads gamma and beta as float32 only, and NHWC input only."""
    out, rows = built
    proto = onnx.load(str(out / rows["gn-contrib_fp16"]["file"]))
    types = {init.name: init.data_type for init in proto.graph.initializer}
    producers = {o: n for n in proto.graph.node for o in n.output}
    norms = [n for n in proto.graph.node if n.op_type == "GroupNorm"]
    assert norms and all(types[n.input[1]] == types[n.input[2]] == onnx.TensorProto.FLOAT for n in norms)
    for norm in norms:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in norm.attribute}
        assert attrs["channels_last"] == 1 and attrs["activation"] == 0 and attrs["groups"] == 4
        before = producers[norm.input[0]]
        assert before.op_type == "Transpose" and list(before.attribute[0].ints) == [0, 2, 3, 1]
    assert rows["gn-contrib_fp16"]["mb_per_frame"] < 0.8 * rows["twopass_fp16"]["mb_per_frame"]


def test_fewer_passes_and_bytes_are_counted_per_node_of_the_file(built) -> None:
    _, rows = built
    for precision in ("fp32", "fp16"):
        assert rows[f"gn-onnx_{precision}"]["full_res_nodes"] < rows[f"twopass_{precision}"]["full_res_nodes"]
        assert rows[f"gn-onnx_{precision}"]["mb_per_frame"] < rows[f"twopass_{precision}"]["mb_per_frame"]
    # fp16 halves what the fp16 nodes move; the shipped fp16 file keeps its GroupNorms (a third of it) fp32.
    assert 0.55 < rows["twopass_fp16"]["mb_per_frame"] / rows["twopass_fp32"]["mb_per_frame"] < 0.75
    assert rows["gn-onnx_fp16"]["mb_per_frame"] / rows["gn-onnx_fp32"]["mb_per_frame"] < 0.55


def test_an_unknown_groupnorm_form_is_one_line() -> None:
    model, meta = load_network(WEIGHTS_DIR / "difffuse_lite.pt", None)
    with pytest.raises(StreamFusionError, match="unknown --groupnorm 'fused': use twopass, onnx, contrib"):
        export_model(model, Path("/tmp/never.onnx"), metadata=meta, groupnorm="fused")


def test_the_gpu_job_times_what_runs_and_reports_what_does_not(built, tmp_path: Path) -> None:
    """On the CPU provider: the files the CPU runs get timings and their frames against the shipped engine's; the
    CUDA-only ones a one-line reason each; prefer_nhwc reaches the CUDA options only; the JSON follows each file."""
    out, _ = built
    saved: list[int] = []
    report = bench_variants.run(out, "cpu", (64, 48), iters=3, budget=0.5, pair_count=2,
                                save=lambda r: saved.append(len(r["results"])))
    results = {(r["variant"], r["precision"]): r for r in report["results"]}
    assert saved == list(range(1, len(results) + 1)) and len(results) == 8 + 4
    assert [r["precision"] for r in report["results"][:4]] == ["fp16"] * 4  # fp16 first
    for key in (("twopass", "fp32"), ("gn-onnx", "fp32"), ("twopass+prefer_nhwc", "fp32")):
        assert results[key]["engine"]["median_ms"] > 0 and results[key]["max_levels_vs_shipped_fp32"] == 0, key
    assert results[("gn-onnx", "fp16")]["max_levels_vs_shipped_fp32"] <= 2
    for key in (("gn-contrib", "fp16"), ("ort-unet", "fp32")):
        assert "NOT_IMPLEMENTED" in results[key]["error"] and "\n" not in results[key]["error"], key
    from stream_fusion.engine import sessions

    with bench_variants.cuda_option("prefer_nhwc", "1"):
        assert sessions.provider_options("cuda", shapes=None, cache_dir=tmp_path, device_id=0)["prefer_nhwc"] == "1"
        assert "prefer_nhwc" not in sessions.provider_options("tensorrt", shapes=None, cache_dir=tmp_path, device_id=0)
    assert "prefer_nhwc" not in sessions.provider_options("cuda", shapes=None, cache_dir=tmp_path, device_id=0)
    with pytest.raises(StreamFusionError, match="python -m export.variants"):
        bench_variants.main(["--dir", str(tmp_path)])


def test_the_cpu_equivalent_of_a_silu_groupnorm_applies_the_silu() -> None:
    """The stand-in for a CUDA-only GroupNorm follows its attributes (the optimizer's false SiLU fusions show as a
    difference, not hidden)."""
    x = np.random.default_rng(0).random((1, 4, 5, 8), np.float32)  # NHWC, 8 channels
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("GroupNorm", ["x", "g", "b"], ["y"], "gn", domain="com.microsoft", groups=2,
                               epsilon=1e-5, activation=1, channels_last=1)], "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, list(x.shape))],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
        [onnx.numpy_helper.from_array(np.full(8, 2, np.float32), "g"),
         onnx.numpy_helper.from_array(np.ones(8, np.float32), "b")])
    proto = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 18),
                                                         onnx.helper.make_opsetid("com.microsoft", 1)])
    proto.ir_version = 10
    import onnxruntime as ort

    y = ort.InferenceSession(variants.cpu_equivalent(proto).SerializeToString(),
                             providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    groups = x.reshape(1, 4, 5, 2, 4)
    normed = ((groups - groups.mean(axis=(1, 2, 4), keepdims=True))
              / np.sqrt(groups.var(axis=(1, 2, 4), keepdims=True) + 1e-5)).reshape(x.shape) * 2 + 1
    np.testing.assert_allclose(y, normed / (1 + np.exp(-normed)), atol=1e-5)


def test_the_export_cli_writes_a_one_node_form_and_says_why_a_cuda_only_one_is_not_checked(tmp_path: Path,
                                                                                           capsys) -> None:
    from export import network

    out = tmp_path / "contrib.onnx"
    assert network.main(["--checkpoint", str(WEIGHTS_DIR / "difffuse_lite.pt"), "--out", str(out),
                         "--groupnorm", "contrib"]) == 0
    printed = capsys.readouterr().out
    assert "GroupNorm 8" in printed and "parity skipped: com.microsoft.GroupNorm runs on CUDA only" in printed
    assert {p.key: p.value for p in onnx.load(str(out)).metadata_props}["groupnorm"] == "contrib"
