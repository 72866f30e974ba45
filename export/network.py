"""Export a fusion checkpoint (DiffFuseNet or the colour Dif-CDFusion) to the ONNX file the runtime engine loads,
and prove the file is right.

    python -m export.network --checkpoint stream_fusion/weights/difffuse_lite.pt --out stream_fusion/weights/difffuse_lite.onnx
    python -m export.network --random-init --preset lite --out /tmp/untrained.onnx    # tests / placeholders only

The file has inputs ``ir``, ``vis`` and output ``fused`` (N x C x H x W float32, 0..1, batch/height/width dynamic;
C = 1, except the colour model's ``vis`` and ``fused``: 3, BGR),
opset 18, constants folded, and metadata the engine needs (preset, size multiple...). The export fails, with one line
saying why, unless: ``onnx.checker`` passes; the graph has no op that runtimes handle badly (ScatterND, loops,
random ops, FFTs, data-dependent slicing) and no constant subgraph left unfolded; and ONNX Runtime matches PyTorch
on real evaluation pairs within 1e-4 (fp32) / 1e-2 (fp16) on every pixel. On a machine where a GPU provider
loads, it also lists every node that the GPU provider leaves to the CPU.
"""
from __future__ import annotations

import argparse
import collections
import copy
import hashlib
import io
import json
import warnings
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
import onnx
import onnx.reference
import torch

import stream_fusion
from export.groupnorm import one_node_groupnorms
from stream_fusion import DATA_DIR
from stream_fusion.engine.frames import pad_to_multiple, split_luma
from stream_fusion.engine.graph import frame_dims, frame_graph, opset_version
from stream_fusion.engine.sessions import open_session
from stream_fusion.errors import StreamFusionError, run_cli
from stream_fusion.training.model import build_model, load_checkpoint
from stream_fusion.training.model.checkpoint import read_checkpoint
from stream_fusion.training.model.pyramid import MultiScaleSkip
from stream_fusion.warp import IrWarp

OPSET = 18
# ONNX Runtime 1.20 (the oldest the project supports) reads IR version 10; onnx 1.23 would write 14 by default.
IR_VERSION = 10
TOLERANCE = {"fp32": 1e-4, "fp16": 1e-2}

DYNAMIC_AXES = {name: {0: "batch", 2: "height", 3: "width"} for name in ("ir", "vis", "fused")}
# Ops that are slow or unsupported on GPU runtimes, non-deterministic, or control flow: none belongs in this graph.
FORBIDDEN_OPS = frozenset({
    "ScatterND", "ScatterElements", "Scatter", "GatherND", "NonZero", "Loop", "If", "Scan",
    "RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial", "Bernoulli",
    "DFT", "STFT", "Dropout",
})


def load_network(checkpoint: Path | None, preset: str | None) -> tuple[torch.nn.Module, dict[str, str]]:
    """The network to export and the metadata that describes its weights (preset, version, training data)."""
    if checkpoint is None:
        model = build_model(preset or "lite").eval()
        return model, {
            "preset": model.preset["name"],
            "model_version": f"{model.preset['name']}-random-init",
            "training": "untrained placeholder (random init): replace with an exported trained checkpoint",
        }
    model, cfg = load_checkpoint(checkpoint)
    if preset is not None and preset != cfg["name"]:
        raise StreamFusionError(f"{checkpoint} holds the {cfg['name']} preset, not {preset}: drop --preset")
    meta = read_checkpoint(checkpoint).get("meta", {})
    digest = hashlib.sha256(checkpoint.read_bytes()).hexdigest()[:12]
    return model, {
        "preset": cfg["name"],
        "model_version": f"{cfg['name']}-{digest}",
        "training": json.dumps(meta, sort_keys=True, default=str),
    }


class TwoPassGroupNorm(torch.nn.Module):
    """``nn.GroupNorm`` written as plain reductions, swapped in for export only.

    The exporter turns GroupNorm into InstanceNormalization over reshaped groups, whose ONNX Runtime CPU kernel
    loses precision on full-resolution groups (~1M values with a large mean): 5e-4 away from PyTorch on a real
    TNO frame, five times the parity budget. Two-pass statistics with short sums stay at float rounding, and
    ReduceMean / Sub / Mul / Sqrt are native in every runtime (TensorRT included, also in fp16).
    """

    def __init__(self, norm: torch.nn.GroupNorm) -> None:
        super().__init__()
        self.groups, self.eps = norm.num_groups, norm.eps
        channels = norm.num_channels
        weight = norm.weight.detach() if norm.affine else torch.ones(channels)
        bias = norm.bias.detach() if norm.affine else torch.zeros(channels)
        self.register_buffer("weight", weight.clone().view(1, self.groups, channels // self.groups))
        self.register_buffer("bias", bias.clone().view(1, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c = x.shape[0], x.shape[1]
        # Rows first, then the row means: ORT sums a reduction in one float32 accumulator, and a ~1M-value sum
        # drifts by 1e-4 relative; two short sums (<= 1280, <= C/G * H values) stay within float rounding.
        grouped = x.reshape(n, self.groups, -1, x.shape[3])
        centred = grouped - grouped.mean(dim=3, keepdim=True).mean(dim=2, keepdim=True)
        variance = (centred * centred).mean(dim=3, keepdim=True).mean(dim=2, keepdim=True)
        # 1/std and the affine weight meet on the small per-(N, C) tensor: one full-resolution multiply-add.
        scale = (torch.rsqrt(variance + self.eps).reshape(n, self.groups, 1) * self.weight).reshape(n, c, 1, 1)
        return centred.reshape(x.shape) * scale + self.bias


class ConvBlurSkip(MultiScaleSkip):
    """``MultiScaleSkip`` with each blur as one replicate Pad and two fixed-weight dilated convolutions (1x5, then
    5x1), swapped in for export only; the same function (replicate-padding both axes first gives what padding each
    before its pass does).

    PyTorch trains the skip as shifted slices because its CPU convolution is slow here; in ONNX Runtime the
    slices are the slow form: every tap is its own Slice node and a copy, and under a GPU provider each node is a
    kernel launch (the measured difference: docs/engine.md, the export's choices).
    """

    KERNEL = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0  # MultiScaleSkip's binomial taps

    @staticmethod
    def blur(x: torch.Tensor, dilation: int) -> torch.Tensor:
        p = 2 * dilation
        padded = torch.nn.functional.pad(x, (p, p, p, p), mode="replicate")
        kernel = ConvBlurSkip.KERNEL.to(x.dtype)
        rows = torch.nn.functional.conv2d(padded, kernel.view(1, 1, 1, 5), dilation=(1, dilation))
        return torch.nn.functional.conv2d(rows, kernel.view(1, 1, 5, 1), dilation=(dilation, 1))


GROUPNORMS = ("twopass", "onnx", "contrib", "instancenorm")


def for_export(model: torch.nn.Module, groupnorm: str = "twopass") -> torch.nn.Module:
    """A copy of ``model`` with export-friendly equivalents of its layers (the original stays untouched);
    ``groupnorm="instancenorm"`` leaves ``nn.GroupNorm`` to the exporter (InstanceNormalization over reshaped groups,
    the pattern ONNX Runtime's transformer optimizer fuses)."""
    model = copy.deepcopy(model).eval()
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, torch.nn.GroupNorm) and groupnorm != "instancenorm":
                setattr(module, child_name, TwoPassGroupNorm(child))
            elif type(child) is MultiScaleSkip:
                setattr(module, child_name, ConvBlurSkip(child.levels))
    return model


def export_model(model: torch.nn.Module, out: Path, *, fp16: bool = False, metadata: dict[str, str],
                 groupnorm: str = "twopass") -> onnx.ModelProto:
    """Trace ``model`` to ONNX, fold its constants, optionally convert to fp16, stamp metadata, check and save.

    ``groupnorm``: how each GroupNorm is written: ``twopass`` (shipped: plain reductions, fp32 in the fp16 file),
    ``onnx`` / ``contrib`` (one node each, :mod:`export.groupnorm`; in the fp16 file it takes fp16 and keeps its
    statistics in fp32 itself), ``instancenorm`` (the exporter's own form, for ONNX Runtime's transformer optimizer).
    """
    if groupnorm not in GROUPNORMS:
        raise StreamFusionError(f"unknown --groupnorm {groupnorm!r}: use {', '.join(GROUPNORMS)}")
    multiple = int(getattr(model, "size_multiple", 1))
    colour = getattr(model, "vis_channels", 1) == 3
    example = torch.rand(1, 1, 8 * multiple, 12 * multiple)
    example_vis = torch.rand(1, 3 if colour else 1, 8 * multiple, 12 * multiple)
    exportable = for_export(model, groupnorm)
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        # The TorchScript exporter: the dynamo one cannot trace the schedule's float() of a tensor (data-dependent).
        warnings.simplefilter("ignore")
        torch.onnx.export(
            exportable, (example, example_vis), buffer, input_names=["ir", "vis"], output_names=["fused"],
            opset_version=OPSET, dynamic_axes=DYNAMIC_AXES, do_constant_folding=True, dynamo=False,
        )
    # Folding only, by our own evaluator: onnxscript's optimizer (which also rewrites patterns) moved the trained
    # lite network's output by 3.9e-4 against PyTorch on a RoadScene pair, the plain export by 3e-7.
    proto = fold_constants(onnx.load_from_string(buffer.getvalue()))
    norms = {scope_prefix(name): m for name, m in exportable.named_modules() if isinstance(m, TwoPassGroupNorm)}
    if groupnorm in ("onnx", "contrib"):
        proto = one_node_groupnorms(proto, {prefix: (m.groups, m.eps, m.weight.flatten().numpy(),
                                                     m.bias.flatten().numpy()) for prefix, m in norms.items()},
                                    groupnorm)
        norms = {}  # one node computes its statistics in fp32 itself, also on fp16 input
    for value in [*proto.graph.input, *proto.graph.output]:  # the tracer leaves the output's channel symbolic
        dims = value.type.tensor_type.shape.dim
        dims[1].Clear()
        dims[1].dim_value = 3 if colour and value.name != "ir" else 1
    if fp16:
        scopes = tuple(norms)
        proto = to_fp16(proto, keep_fp32=[n.name for n in proto.graph.node if scopes and n.name.startswith(scopes)])
    proto.ir_version = IR_VERSION
    proto.producer_name = "stream_fusion export.network"
    name = "Dif-CDFusion" if colour else "DiffFuseNet"
    proto.doc_string = f"{name} infrared-visible fusion (stream_fusion): fused = net(ir, vis)"
    layout = (
        "NCHW float32: ir = infrared, 1 channel; vis = visible colour, 3 channels BGR (a gray camera as 3 equal "
        "channels); output fused = fused colour, 3 channels BGR" if colour else
        "NCHW float32, 1 channel each: ir = infrared, vis = visible luma (Y of YCrCb, BT.601 as OpenCV); output "
        "fused = fused luma, same layout"
    )
    props = {
        "model_name": name,
        "input_layout": layout,
        "vis_channels": "3" if colour else "1",
        "output": "bgr" if colour else "luma",
        "value_range": "0..1 (inputs and output)",
        "size_multiple": str(multiple),
        "precision": "fp16" if fp16 else "fp32",
        "groupnorm": groupnorm,
        "exported_by": f"stream_fusion {stream_fusion.__version__}, torch {torch.__version__}, onnx {onnx.__version__}",
        **metadata,
    }
    onnx.helper.set_model_props(proto, props)
    proto = onnx.shape_inference.infer_shapes(proto)
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as error:
        raise StreamFusionError(f"exported graph fails onnx.checker: {str(error).splitlines()[0]}") from None
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(out))
    return proto


def fold_constants(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Evaluate every node whose inputs are all constants (the TorchScript exporter's own folding leaves some,
    such as the timestep embedding's Sin/Cos and MLP) and store its outputs as initializers: the runtime then never
    computes them, and the graph check can insist that no constant subgraph is left."""
    graph = proto.graph
    constants = {init.name: onnx.numpy_helper.to_array(init) for init in graph.initializer}
    kept = []
    for node in graph.node:
        if node.op_type == "Constant" or (node.input and all(name in constants for name in node.input)):
            single = onnx.helper.make_model(
                onnx.helper.make_graph([node], "fold", [], [onnx.helper.make_tensor_value_info(o, 0, None)
                                                              for o in node.output]),
                opset_imports=proto.opset_import,
            )
            values = onnx.reference.ReferenceEvaluator(single).run(None, {k: constants[k] for k in node.input})
            for name, value in zip(node.output, values):
                constants[name] = np.asarray(value)
                graph.initializer.append(onnx.numpy_helper.from_array(np.asarray(value), name))
        else:
            kept.append(node)
    del graph.node[:]
    graph.node.extend(kept)
    used = {name for node in graph.node for name in node.input} | {value.name for value in graph.output}
    live = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(live)
    return proto


def scope_prefix(module_name: str) -> str:
    """The node-name prefix the TorchScript exporter gives a module's ops: ``denoiser.norm1.0`` ->
    ``/denoiser/norm1/norm1.0/`` (a numeric child extends the previous segment)."""
    segments: list[str] = []
    for part in module_name.split("."):
        segments.append(f"{segments[-1]}.{part}" if part.isdigit() and segments else part)
    return "/" + "/".join(segments) + "/"


def to_fp16(proto: onnx.ModelProto, keep_fp32: list[str]) -> onnx.ModelProto:
    """fp16 weights and activations with fp32 inputs/outputs (the engine feeds the same arrays either way).

    The nodes named in ``keep_fp32`` (the normalisations: a frame-wide mean and variance, and the centring that
    subtracts one from the other) stay fp32: in fp16 they put the fused image 1.5e-2 off. Everything else runs
    fp16, the multi-scale skip included: its soft choose-max (``MultiScaleSkip.share``) weighs each band by the 4th
    power of its activity *relative to the larger one*, so no term underflows where it matters and no 0/0 arises
    (written with absolute 4th powers and a 1e-12 epsilon it did, 25-34% of a frame over 1e-2; keeping those nodes
    fp32 instead would put Casts in every level). Shipped lite and base: within 5e-4 of PyTorch fp32 on real pairs.
    """
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    blocked = list(DEFAULT_OP_BLOCK_LIST) + ["InstanceNormalization", "ReduceMean"]
    converted = convert_float_to_float16(proto, keep_io_types=True, op_block_list=blocked, node_block_list=keep_fp32)
    # A constant shared by several kept nodes gets one identical Cast per consumer, all with the same output name.
    unique = {node.SerializeToString(): node for node in converted.graph.node}
    if len({name for node in unique.values() for name in node.output}) != sum(len(n.output) for n in unique.values()):
        raise StreamFusionError("fp16 conversion produced two different nodes with the same output")
    del converted.graph.node[:]
    converted.graph.node.extend(unique.values())
    kept = {node.name for node in converted.graph.node if node.name in set(keep_fp32) or node.op_type in blocked}
    drop_round_trips(converted.graph, kept)
    topological_sort(converted.graph)  # the converter appends its input casts at the end of the node list
    del converted.graph.value_info[:]  # stale fp32 annotations around the kept nodes; shape inference redoes them
    return fold_constants(converted)  # the converter casts fp16 weights back for the kept nodes: store them fp32


def drop_round_trips(graph: onnx.GraphProto, kept: set[str]) -> None:
    """Remove the fp32 -> fp16 -> fp32 Cast pairs the converter puts between two nodes it keeps fp32.

    It casts every output of a kept node to fp16, and back to fp32 for each kept consumer: the GroupNorm
    statistics, meant to stay fp32, were rounded to fp16 between every step of them, and the base file carried 284
    Casts (44 now), more bytes per frame than its fp32 export under a GPU provider. A kept consumer now reads the
    kept producer's fp32 output directly; the fp16 copy stays only where an fp16 node reads it."""
    producer = {output: node for node in graph.node for output in node.output}
    inputs = {value.name for value in graph.input}
    fp16, fp32 = onnx.TensorProto.FLOAT16, onnx.TensorProto.FLOAT

    def cast_to(node: onnx.NodeProto) -> int | None:
        return next((a.i for a in node.attribute if a.name == "to"), None) if node.op_type == "Cast" else None

    shortcut = {}
    for node in graph.node:
        down = producer.get(node.input[0]) if cast_to(node) == fp32 else None
        if down is not None and cast_to(down) == fp16:
            source = down.input[0]
            if source in inputs or (source in producer and producer[source].name in kept):
                shortcut[node.output[0]] = source
    outputs = {value.name for value in graph.output}
    nodes = [node for node in graph.node if not (node.op_type == "Cast" and node.output[0] in shortcut
                                                 and node.output[0] not in outputs)]
    for node in nodes:
        for index, name in enumerate(node.input):
            if name in shortcut and name not in outputs:
                node.input[index] = shortcut[name]
    read = {name for node in nodes for name in node.input} | outputs
    nodes = [node for node in nodes if not (cast_to(node) == fp16 and node.output[0] not in read)]
    del graph.node[:]
    graph.node.extend(nodes)


def topological_sort(graph: onnx.GraphProto) -> None:
    """Reorder ``graph.node`` so that every node comes after the producers of its inputs (checker requirement)."""
    ready = {value.name for value in graph.input} | {init.name for init in graph.initializer} | {""}
    consumers = collections.defaultdict(list)
    waiting = {}
    for index, node in enumerate(graph.node):
        missing = {name for name in node.input if name not in ready}
        waiting[index] = missing
        for name in missing:
            consumers[name].append(index)
    queue = collections.deque(index for index, missing in waiting.items() if not missing)
    order = []
    while queue:
        index = queue.popleft()
        order.append(graph.node[index])
        for name in graph.node[index].output:
            for consumer in consumers.pop(name, []):
                waiting[consumer].discard(name)
                if not waiting[consumer]:
                    queue.append(consumer)
    if len(order) != len(graph.node):
        raise StreamFusionError("fp16 conversion produced a graph with a cycle or a dangling input")
    nodes = [onnx.NodeProto() for _ in order]
    for fresh, node in zip(nodes, order):
        fresh.CopyFrom(node)
    del graph.node[:]
    graph.node.extend(nodes)


def graph_report(proto: onnx.ModelProto) -> tuple[collections.Counter[str], list[str]]:
    """Op-type counts and the list of problems that make a graph bad for runtimes (empty when it is clean)."""
    graph = proto.graph
    ops = collections.Counter(node.op_type for node in graph.node)
    problems = [f"{op} x{ops[op]}" for op in sorted(FORBIDDEN_OPS & set(ops))]
    constants = {init.name for init in graph.initializer}
    producers = {output: node for node in graph.node for output in node.output}

    def data_dependent(name: str) -> bool:
        """True when a value depends on tensor contents, not only on shapes (Shape outputs) and constants."""
        if name in constants or name == "":
            return False
        node = producers.get(name)
        if node is None:  # a graph input
            return True
        return node.op_type != "Shape" and any(data_dependent(source) for source in node.input)

    for node in graph.node:
        # Slices whose bounds come from shapes (splitting the shared-encoder batch) are resolved once per input
        # size by every runtime; bounds computed from pixel values would be dynamic in the hot path.
        if node.op_type == "Slice" and any(data_dependent(name) for name in node.input[1:]):
            problems.append(f"data-dependent Slice {node.name}")
        if node.input and all(name in constants for name in node.input):
            problems.append(f"unfolded constant {node.op_type} {node.name}")
    if opset_version(proto) < OPSET:
        problems.append(f"opset {opset_version(proto)} < {OPSET}")
    return ops, problems


def eval_pairs(count: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """``count`` real registered pairs from the evaluation splits (alternating TNO and RoadScene), as
    ``(name, ir, visible BGR)`` uint8 arrays (a gray visible image as three equal channels)."""
    folders = [DATA_DIR / "eval" / "tno25", DATA_DIR / "eval" / "roadscene50"]
    names = [sorted(p.name for p in (folder / "ir").glob("*.png")) for folder in folders]
    if not any(names):
        raise StreamFusionError(f"no evaluation pairs under {DATA_DIR.resolve() / 'eval'}: parity needs real data")
    pairs = []
    for k in range(count):
        folder, listing = folders[k % 2], names[k % 2]
        if not listing:
            continue
        name = listing[(k // 2) % len(listing)]
        ir = cv2.imread(str(folder / "ir" / name), cv2.IMREAD_GRAYSCALE)
        vis = cv2.imread(str(folder / "vis" / name), cv2.IMREAD_COLOR)
        if ir is None or vis is None:
            raise StreamFusionError(f"cannot read the pair {folder / '*' / name}")
        pairs.append((f"{folder.name}/{name}", ir, vis))
    return pairs


class Parity(NamedTuple):
    """ONNX Runtime against PyTorch on one pair: the largest difference, how many pixels exceed the tolerance
    (printed, so a failure says whether a few pixels or the whole frame moved), the largest among the others."""

    name: str
    max_diff: float
    over: int
    pixels: int
    max_within: float

    def ok(self, precision: str) -> bool:
        return self.over == 0


def parity(model: torch.nn.Module, path: Path, pairs: list[tuple[str, np.ndarray, np.ndarray]],
           precision: str) -> list[Parity]:
    """ONNX Runtime (CPU provider) against PyTorch per pair, on 0..1 images padded to the size multiple as the
    engine pads them."""
    tolerance = TOLERANCE[precision]
    session, _ = open_session(path.read_bytes(), "cpu", shapes=None, cache_dir=Path("."), threads=None,
                              device_id=0)
    multiple = int(getattr(model, "size_multiple", 1))
    colour = getattr(model, "vis_channels", 1) == 3
    results = []
    for name, ir, vis in pairs:
        planes = vis.transpose(2, 0, 1) if colour else split_luma(vis)[0][None]
        ir_in = pad_to_multiple(ir[None, None], multiple).astype(np.float32) / 255
        vis_in = pad_to_multiple(planes[None], multiple).astype(np.float32) / 255
        with torch.no_grad():
            expected = model(torch.from_numpy(ir_in), torch.from_numpy(vis_in)).numpy()
        got = session.run(None, {"ir": ir_in, "vis": vis_in})[0]
        diff = np.abs(got - expected).ravel()
        within = diff[diff <= tolerance]
        results.append(Parity(name, float(diff.max()), int(diff.size - within.size), int(diff.size),
                              float(within.max()) if within.size else float("inf")))
    return results


def gpu_placement(proto: onnx.ModelProto) -> str:
    """Which nodes a GPU provider leaves to the CPU, from one profiled run (ORT profiling names each node's
    provider) of the graph the engine runs on a GPU: the network inside its uint8 frame wrapper, with the IR warp
    and the colour handling in the session (``engine.frame_graph(proto, in_session=True)``). On a machine with no
    working GPU provider, a line that says it was skipped and why."""
    graph = frame_graph(proto, in_session=True)
    for provider in ("cuda",):
        try:
            session, _ = open_session(graph.SerializeToString(), provider, shapes=None, cache_dir=Path("."),
                                      threads=None, device_id=0, profile=True,
                                      dims=frame_dims((64, 64), (64, 64), 64, in_session=True))
        except StreamFusionError as error:
            return f"GPU placement check skipped: {str(error).split('; use ')[0]}"
        frames = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
        session.run(None, {"ir": frames[None, None, :, :, 0], "vis": frames[None],
                           **IrWarp.resize((64, 64), (64, 64)).session_inputs((64, 64))})
        profile = Path(session.end_profiling())
        events = json.loads(profile.read_text())
        profile.unlink()
        elsewhere = sorted({
            f"{event['args']['op_name']} {event['name'].removesuffix('_kernel_time')} ({event['args']['provider']})"
            for event in events
            if event.get("cat") == "Node" and event["name"].endswith("_kernel_time")
            and event["args"].get("provider") != "CUDAExecutionProvider"
        })
        if not elsewhere:
            return f"GPU placement ({provider}): every node runs on the GPU"
        return f"GPU placement ({provider}): {len(elsewhere)} node(s) elsewhere: " + "; ".join(elsewhere)
    return "GPU placement check skipped"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export.network", description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", type=Path, help="trained checkpoint (stream_fusion/weights/difffuse_*.pt)")
    source.add_argument("--random-init", action="store_true",
                        help="export an untrained network of --preset (tests and placeholders only; marked so)")
    parser.add_argument("--out", type=Path, required=True, help="ONNX file to write")
    parser.add_argument("--preset", choices=["lite", "base", "cdfusion"],
                        help="with --random-init: which network (default lite)")
    parser.add_argument("--fp16", action="store_true", help="fp16 weights and activations, fp32 inputs/outputs")
    parser.add_argument("--pairs", type=int, default=4, help="real evaluation pairs for the parity check (default 4)")
    parser.add_argument("--groupnorm", choices=GROUPNORMS, default="twopass",
                        help="how each GroupNorm is written (default twopass, as shipped; docs/engine.md)")
    args = parser.parse_args(argv)
    if args.out.suffix != ".onnx":
        raise StreamFusionError(f"--out must name an .onnx file, got {args.out}")
    model, metadata = load_network(args.checkpoint, args.preset)
    proto = export_model(model, args.out, fp16=args.fp16, metadata=metadata, groupnorm=args.groupnorm)
    ops, problems = graph_report(proto)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB, opset {opset_version(proto)}, "
          f"{metadata['preset']}, {'fp16' if args.fp16 else 'fp32'}, size multiple {model.size_multiple})")
    print("ops: " + ", ".join(f"{op} {n}" for op, n in sorted(ops.items())), flush=True)
    if problems:
        raise StreamFusionError(f"{args.out} is not runtime-clean: {'; '.join(problems)}")
    if args.groupnorm == "contrib":
        print("parity skipped: com.microsoft.GroupNorm runs on CUDA only (python -m export.variants checks this "
              "form's wiring on the CPU, python -m stream_fusion.bench.variants its frames on a GPU)")
        print(gpu_placement(proto))
        return 0
    precision = "fp16" if args.fp16 else "fp32"
    tolerance = TOLERANCE[precision]
    results = parity(model, args.out, eval_pairs(args.pairs), precision)
    for r in results:
        print(f"parity {r.name}: max |onnxruntime - torch| = {r.max_diff:.2e}; {r.over} of {r.pixels} px over "
              f"{tolerance:g}, the others within {r.max_within:.2e}")
    over, pixels = sum(r.over for r in results), sum(r.pixels for r in results)
    if not all(r.ok(precision) for r in results):
        raise StreamFusionError(f"parity failed ({precision}): {over} of {pixels} px over {tolerance:g}, "
                                f"max {max(r.max_diff for r in results):.2e}")
    print(f"parity ok ({precision}): max |onnxruntime - torch| = {max(r.max_diff for r in results):.2e} <= "
          f"{tolerance:g} over {pixels} px of {len(results)} real pairs")
    print(gpu_placement(proto))
    return 0


if __name__ == "__main__":
    run_cli(main)
