"""The candidate exports of a network for issue #16 point 3 (base under 5 ms per 640x512 frame without TensorRT:
fewer full-resolution passes), built here so that a GPU run only has to time them.

    python -m export.variants --preset base --out .gpu/variants

Writes, for fp32 and fp16 each, and a ``manifest.json`` that describes every file:

* ``twopass``: the shipped file, copied (the reference: GroupNorm as plain reductions, fp32 in the fp16 file);
* ``gn-onnx``: each GroupNorm as one ONNX ``GroupNormalization`` node (opset 21; :mod:`export.groupnorm`);
* ``gn-contrib``: each GroupNorm as ONNX Runtime's CUDA ``com.microsoft.GroupNorm``, channels-last between two
  Transposes (no CPU kernel);
* ``ort-unet``: ``gn-contrib`` run through ONNX Runtime's transformer optimizer for UNets
  (``onnxruntime.transformers.optimizer``, ``model_type="unet"``): its NhwcConv conversion (every Conv
  channels-last, the Transposes that then meet merged away), the fp16 copy by its own converter (GroupNorm's gamma
  and beta stay float32, as the kernel needs). Its own GroupNorm fusion, given the exporter's GroupNorm form, fuses
  a SiLU these networks do not have into some norms (:func:`false_silu`; counted in the manifest), so it is given
  our GroupNorm nodes instead.

Channels-last for the whole session (the CUDA provider's ``prefer_nhwc`` option) needs no file: the GPU job times
it on the shipped file (``python -m stream_fusion.bench.variants``).

The manifest gives per file what a CPU can say: node count and op types, how many nodes read or write a
full-resolution tensor, and the bytes its nodes read and write per 640x512 frame if each node is its own kernel
(the file as written, before ONNX Runtime's own fusions; measured by running it on the CPU at 128x96 with every
intermediate kept and scaling by the pixel count, since every tensor of these networks scales with the frame, or
is per-channel and negligible); and whether the CPU provider gives the shipped file's output on a real pair (the
largest difference in grey levels; for the CUDA-only nodes, their documented meaning written out in CPU nodes).
"""
from __future__ import annotations

import argparse
import collections
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from export.network import eval_pairs, export_model, load_network, topological_sort
from stream_fusion import WEIGHTS_DIR
from stream_fusion.engine.frames import pad_to_multiple, split_luma
from stream_fusion.errors import StreamFusionError, run_cli

VARIANTS = ("twopass", "gn-onnx", "gn-contrib", "ort-unet")
VIEWS = frozenset({"Reshape", "Squeeze", "Unsqueeze", "Flatten"})  # copy nothing in ONNX Runtime
PROBE = (128, 96)  # (w, h) the traffic is measured at, then scaled to FRAME
FRAME = (640, 512)


def ort_unet(source: onnx.ModelProto, fp16: bool) -> tuple[onnx.ModelProto, dict[str, int]]:
    """ONNX Runtime's transformer optimizer for UNets on ``source`` (the ``gn-contrib`` export) with its own
    GroupNorm fusion off: every Conv channels-last (NhwcConv) and the Transposes that then meet merged away; the
    fused-operator counts it reports. Its GroupNorm fusion is off because it fuses wrongly here (:func:`false_silu`)."""
    from onnxruntime.transformers import optimizer
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST
    from onnxruntime.transformers.fusion_options import FusionOptions

    options = FusionOptions("unet")
    options.enable_group_norm = False
    model = optimizer.optimize_model(source, model_type="unet", opt_level=0, use_gpu=True,
                                     optimization_options=options)
    fused = {op: n for op, n in model.get_fused_operator_statistics().items() if n}
    if fp16:  # GroupNorm's gamma and beta stay float32 (the kernel's rule), the leftover reductions fp32 as in ours
        model.convert_float_to_float16(keep_io_types=True, op_block_list=[*DEFAULT_OP_BLOCK_LIST,
                                                                          "InstanceNormalization", "ReduceMean"])
    proto = model.model
    topological_sort(proto.graph)  # the converter appends its input Casts after their readers
    drop_noop_casts(proto)
    used = {name for node in proto.graph.node for name in node.input}
    live = [init for init in proto.graph.initializer if init.name in used]  # the NCHW weights it left behind
    del proto.graph.initializer[:]
    proto.graph.initializer.extend(live)
    return proto, fused


def drop_noop_casts(proto: onnx.ModelProto) -> None:
    """Remove the Casts to the type their input already has (the optimizer leaves one after most Transposes and
    NhwcConvs; ONNX Runtime drops them too, but the file's node and traffic counts should not include them)."""
    typed = onnx.shape_inference.infer_shapes(cpu_equivalent(proto))  # the CUDA-only ops have no schema here
    types = {v.name: v.type.tensor_type.elem_type for v in [*typed.graph.value_info, *typed.graph.input]}
    types |= {init.name: init.data_type for init in proto.graph.initializer}
    outputs = {value.name for value in proto.graph.output}
    rename = {}
    for node in proto.graph.node:
        to = next((a.i for a in node.attribute if a.name == "to"), None)
        if node.op_type == "Cast" and types.get(node.input[0]) == to and node.output[0] not in outputs:
            rename[node.output[0]] = node.input[0]
    nodes = [node for node in proto.graph.node if not (node.op_type == "Cast" and node.output[0] in rename)]
    for node in nodes:
        for index, name in enumerate(node.input):
            while name in rename:
                name = rename[name]
            node.input[index] = name
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)


def false_silu(source: onnx.ModelProto) -> tuple[int, int]:
    """ONNX Runtime's own GroupNorm fusion on the exporter's GroupNorm form: (GroupNorms fused, of them with a SiLU
    activation). These networks have no SiLU; the fusion takes any Mul after the norm with a Sigmoid among its inputs
    for one (here the norm's output times an attention map), so each such fusion changes the network."""
    from onnxruntime.transformers import optimizer
    from onnxruntime.transformers.fusion_options import FusionOptions

    options = FusionOptions("unet")
    options.enable_nhwc_conv = False
    model = optimizer.optimize_model(source, model_type="unet", opt_level=0, use_gpu=True,
                                     optimization_options=options).model
    norms = [node for node in model.graph.node if node.op_type == "GroupNorm"]
    silu = [node for node in norms if any(a.name == "activation" and a.i == 1 for a in node.attribute)]
    return len(norms), len(silu)


def build(preset: str, out: Path) -> list[dict[str, Any]]:
    """Every variant of the shipped ``preset`` network in fp32 and fp16 under ``out``; the manifest rows."""
    checkpoint = WEIGHTS_DIR / f"difffuse_{preset}.pt"
    model, metadata = load_network(checkpoint, None)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for variant in VARIANTS:
        for precision in ("fp32", "fp16"):
            path = out / f"{preset}_{variant}_{precision}.onnx"
            fp16 = precision == "fp16"
            extra: dict[str, Any] = {}
            if variant == "twopass":
                shutil.copyfile(WEIGHTS_DIR / f"difffuse_{preset}{'_fp16' if fp16 else ''}.onnx", path)
            elif variant in ("gn-onnx", "gn-contrib"):
                export_model(model, path, fp16=fp16, metadata=metadata, groupnorm=variant.removeprefix("gn-"))
            else:
                contrib = export_model(model, out / "contrib.onnx", metadata=metadata, groupnorm="contrib")
                plain = export_model(model, out / "plain.onnx", metadata=metadata, groupnorm="instancenorm")
                proto, extra["fused_by_optimizer"] = ort_unet(contrib, fp16)
                extra["ort_groupnorm_fusion"] = dict(zip(("fused", "with_silu"), false_silu(plain)))
                onnx.helper.set_model_props(proto, {**{p.key: p.value for p in contrib.metadata_props},
                                                    "precision": precision, "groupnorm": "ort-unet"})
                onnx.save(proto, str(path))
                for scratch in ("contrib.onnx", "plain.onnx"):
                    (out / scratch).unlink()
            proto = onnx.load(str(path))
            rows.append({"file": path.name, "preset": preset, "variant": variant, "precision": precision,
                         "bytes": path.stat().st_size, **describe(proto), **extra})
            print(f"{path.name}: {rows[-1]['nodes']} nodes, {rows[-1]['full_res_nodes']} at full resolution, "
                  f"{rows[-1]['mb_per_frame']:.0f} MB read+written per {FRAME[0]}x{FRAME[1]} frame", flush=True)
    return rows


def describe(proto: onnx.ModelProto) -> dict[str, Any]:
    """Node count, op types, full-resolution nodes and bytes per frame (module docstring)."""
    ops = collections.Counter(node.op_type for node in proto.graph.node)
    return {"nodes": len(proto.graph.node), "ops": dict(sorted(ops.items())), **traffic(proto)}


def cpu_equivalent(proto: onnx.ModelProto) -> onnx.ModelProto:
    """``proto`` with its CUDA-only nodes written as CPU nodes of their documented meaning, every original tensor
    name kept: ``com.microsoft.GroupNorm`` (channels-last) as Transpose, ONNX ``GroupNormalization`` in float32,
    Transpose, back to the input's type; ``NhwcConv`` as Transpose, Conv (its weight back in OIHW), Transpose.
    The CPU can then count a file's traffic and check its wiring (weights, groups, layouts); the CUDA kernels
    themselves are checked by the GPU job, whose frames are compared with the shipped engine's."""
    copy = onnx.ModelProto()
    copy.CopyFrom(proto)
    weights = {init.name: init for init in copy.graph.initializer}
    nodes = []
    for node in copy.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        x, name = node.input[0], node.name
        if node.domain == "com.microsoft" and node.op_type == "GroupNorm":
            if not attrs.get("channels_last", 1):
                raise StreamFusionError(f"{name}: only a channels-last GroupNorm is written out")
            normed = f"{name}/gn"
            nodes += [helper.make_node("Cast", [x], [f"{name}/f32"], f"{name}/cast", to=onnx.TensorProto.FLOAT),
                      helper.make_node("Transpose", [f"{name}/f32"], [f"{name}/nchw"], f"{name}/in", perm=[0, 3, 1, 2]),
                      helper.make_node("GroupNormalization", [f"{name}/nchw", *node.input[1:3]], [normed],
                                       f"{name}/gn", num_groups=attrs["groups"], epsilon=attrs.get("epsilon", 1e-5))]
            if attrs.get("activation", 0) == 1:  # SiLU, x * sigmoid(x), fused in by ONNX Runtime's optimizer
                nodes += [helper.make_node("Sigmoid", [normed], [f"{name}/sigmoid"], f"{name}/sigmoid"),
                          helper.make_node("Mul", [normed, f"{name}/sigmoid"], [f"{name}/silu"], f"{name}/silu")]
                normed = f"{name}/silu"
            nodes += [helper.make_node("Transpose", [normed], [f"{name}/nhwc"], f"{name}/out", perm=[0, 2, 3, 1]),
                      helper.make_node("CastLike", [f"{name}/nhwc", x], node.output, f"{name}/back")]
        elif node.domain == "com.microsoft" and node.op_type == "NhwcConv":
            weight = numpy_helper.to_array(weights[node.input[1]]).transpose(0, 3, 1, 2)
            copy.graph.initializer.append(numpy_helper.from_array(weight, f"{name}/oihw"))
            nodes += [helper.make_node("Transpose", [x], [f"{name}/nchw"], f"{name}/in", perm=[0, 3, 1, 2]),
                      helper.make_node("Conv", [f"{name}/nchw", f"{name}/oihw", *node.input[2:]], [f"{name}/conv"],
                                       f"{name}/conv", **attrs),
                      helper.make_node("Transpose", [f"{name}/conv"], node.output, f"{name}/out", perm=[0, 2, 3, 1])]
        else:
            nodes.append(node)
    del copy.graph.node[:]
    copy.graph.node.extend(nodes)
    imports = {opset.domain: opset for opset in copy.opset_import}
    imports[""].version = max(imports[""].version, 21)  # GroupNormalization with per-channel scale
    return copy


def traffic(proto: onnx.ModelProto) -> dict[str, Any]:
    """Nodes of ``proto`` that touch a full-resolution tensor, and MB read and written per FRAME frame by its nodes
    (one kernel each), from one CPU run of its :func:`cpu_equivalent` at PROBE with every intermediate kept."""
    import onnxruntime as ort

    copy = cpu_equivalent(proto)
    constants = {init.name for init in copy.graph.initializer}
    known = {value.name for value in copy.graph.output}
    copy.graph.output.extend(helper.make_empty_tensor_value_info(name) for node in copy.graph.node
                             for name in node.output if name and name not in known)
    del copy.graph.value_info[:]
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # the file's nodes as written
    session = ort.InferenceSession(copy.SerializeToString(), options, providers=["CPUExecutionProvider"])
    w, h = PROBE
    rng = np.random.default_rng(0)
    feeds = {value.name: rng.random((1, value.type.tensor_type.shape.dim[1].dim_value or 1, h, w), np.float32)
             for value in copy.graph.input}
    names = [output.name for output in session.get_outputs()]
    arrays = dict(zip(names, session.run(names, feeds)))
    arrays.update(feeds)
    scale = FRAME[0] * FRAME[1] / (w * h)
    total, full = 0.0, 0
    for node in proto.graph.node:  # the file's own nodes; every tensor they name exists in the equivalent
        if node.op_type in VIEWS:
            continue
        tensors = [np.asarray(arrays[name]) for name in [*node.input, *node.output] if name and name not in constants]
        if any(t.size >= w * h for t in tensors):
            full += 1
        total += sum(t.nbytes for t in tensors)
    return {"full_res_nodes": full, "mb_per_frame": total * scale / 1e6}


def parity(files: dict[str, Path], reference: Path, pairs: int) -> dict[str, float]:
    """Largest difference of each file from ``reference`` on real pairs, in grey levels of the 0..1 output (x 255),
    on the CPU: the file itself, or where it has CUDA-only nodes its :func:`cpu_equivalent`."""
    import onnxruntime as ort

    def session(path: Path) -> ort.InferenceSession:
        proto = onnx.load(str(path))
        if any(node.domain == "com.microsoft" for node in proto.graph.node):
            proto = cpu_equivalent(proto)
        return ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])

    ref = session(reference)
    colour = ref.get_inputs()[1].shape[1] == 3
    multiple = int(next(p.value for p in onnx.load(str(reference)).metadata_props if p.key == "size_multiple"))
    feeds = []
    for _, ir, vis in eval_pairs(pairs):
        planes = vis.transpose(2, 0, 1) if colour else split_luma(vis)[0][None]
        feeds.append({"ir": pad_to_multiple(ir[None, None], multiple).astype(np.float32) / 255,
                      "vis": pad_to_multiple(planes[None], multiple).astype(np.float32) / 255})
    expected = [ref.run(None, feed)[0] for feed in feeds]
    result = {}
    for name, path in files.items():
        candidate = session(path)
        result[name] = max(float(np.abs(candidate.run(None, feed)[0] - e).max()) * 255
                           for feed, e in zip(feeds, expected))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export.variants", description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="base", choices=["lite", "base", "cdfusion"])
    parser.add_argument("--out", type=Path, default=Path(".gpu/variants"))
    parser.add_argument("--pairs", type=int, default=2, help="real pairs for the CPU parity check (default 2)")
    args = parser.parse_args(argv)
    if not (WEIGHTS_DIR / f"difffuse_{args.preset}.pt").is_file():
        raise StreamFusionError(f"no shipped {args.preset} checkpoint in {WEIGHTS_DIR}")
    rows = build(args.preset, args.out)
    files = {row["file"]: args.out / row["file"] for row in rows}
    levels = parity(files, WEIGHTS_DIR / f"difffuse_{args.preset}.onnx", args.pairs)
    for row in rows:
        row["cpu_levels_vs_shipped_fp32"] = levels[row["file"]]
        cuda_only = row["variant"] in ("gn-contrib", "ort-unet")
        stand_in = " (its CUDA-only nodes written out for the CPU)" if cuda_only else ""
        print(f"{row['file']}: CPU against the shipped fp32 file{stand_in}: max {levels[row['file']]:.3f} grey levels")
    manifest = args.out / "manifest.json"
    manifest.write_text(json.dumps({"preset": args.preset, "frame": f"{FRAME[0]}x{FRAME[1]}",
                                    "command": "python -m export.variants " + " ".join(argv or []),
                                    "files": rows}, indent=1))
    print(f"wrote {len(rows)} files and {manifest}")
    return 0


if __name__ == "__main__":
    run_cli(main)
