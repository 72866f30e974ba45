"""The fusion stage's one interface.

Every fuser the pipeline can run (the trained network through ONNX Runtime, or the classical fallback) is a
``FusionEngine``: it takes one registered IR / visible pair as 8-bit arrays and returns one fused 8-bit frame.
The pipeline never knows which one it holds, so swapping the network in changes no pipeline code.

Colour is handled here, once, for every engine: a luminance network fuses luminance with IR, and the visible chroma
(YCrCb) is put back afterwards (:func:`fuse_luma`, "the YCbCr route"); a colour network (``cdfusion``, metadata
``output: bgr``) takes the visible frame as BGR and returns BGR itself. Either way a colour visible input gives a
colour output and a gray one gives gray. (Under a GPU provider the YCbCr route of a luminance network runs inside the
ONNX Runtime session instead, with the IR warp: :func:`frame_graph`.)

The network runs through ONNX Runtime (:class:`OnnxEngine`, made by :func:`create_engine`). This module must not
import torch: deployment boxes run ONNX only.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import logging
import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import cv2
import numpy as np
import onnx
import onnxruntime as ort

from stream_fusion import WEIGHTS_DIR
from stream_fusion.errors import StreamFusionError
from stream_fusion.warp import IrWarp, fuse_registered


@runtime_checkable
class FusionEngine(Protocol):
    """Fuses one registered pair. ``ir``: HxW (or HxWx3) uint8; ``vis``: HxW or HxWx3 BGR uint8, same HxW. With
    ``warp``, ``ir`` is the frame as its camera delivers it (any size) and the engine resamples it onto the visible
    grid first, where it runs best (host or GPU).

    Returns uint8, HxW when ``vis`` is gray, HxWx3 BGR when it is colour.
    """

    name: str
    provider: str

    def fuse(self, ir: np.ndarray, vis: np.ndarray, warp: IrWarp | None = None) -> np.ndarray: ...


def to_gray(image: np.ndarray) -> np.ndarray:
    """Single-channel view of a frame: thermal cameras often deliver 3 identical BGR channels."""
    if image.ndim == 2:
        return image
    if image.ndim == 3 and image.shape[2] == 1:
        return image[:, :, 0]
    return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)


def split_luma(vis: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Luminance to fuse (a view), and the whole frame in YCrCb, whose chroma :func:`merge_luma` puts back (None for
    a gray visible frame)."""
    if vis.ndim == 2 or (vis.ndim == 3 and vis.shape[2] == 1):
        return to_gray(vis), None
    ycrcb = cv2.cvtColor(vis, cv2.COLOR_BGR2YCrCb)
    return ycrcb[:, :, 0], ycrcb


def merge_luma(y: np.ndarray, ycrcb: np.ndarray | None) -> np.ndarray:
    """Inverse of :func:`split_luma`: the fused luminance written over the Y of ``ycrcb`` (in place: it is
    :func:`split_luma`'s own array, and its luma view now holds the fused luma), back to BGR. In place, not a new
    Y, Cr, Cb stack: the strided chroma copy cost 4.6 ms at 1280x1024 (the merge 7.5 ms, now 0.8; 2-core CPU)."""
    if ycrcb is None:
        return y
    ycrcb[:, :, 0] = y
    return cv2.cvtColor(ycrcb, cv2.COLOR_YCrCb2BGR)


def check_pair(ir: np.ndarray, vis: np.ndarray, warp: IrWarp | None = None) -> None:
    """Engines fuse registered pairs only (or IR frames with the warp that registers them): resizing is the
    pipeline's job, so a size mismatch here is a bug upstream."""
    ir_size, vis_size = (ir.shape[1], ir.shape[0]), (vis.shape[1], vis.shape[0])
    if warp is None and ir_size != vis_size:
        raise ValueError(f"IR {ir.shape[1]}x{ir.shape[0]} and visible {vis.shape[1]}x{vis.shape[0]} differ in size")
    if warp is not None and (warp.ir_size, warp.size) != (ir_size, vis_size):
        raise ValueError(f"the warp maps {warp.ir_size[0]}x{warp.ir_size[1]} IR onto {warp.size[0]}x{warp.size[1]}, "
                         f"got IR {ir_size[0]}x{ir_size[1]} and visible {vis_size[0]}x{vis_size[1]}")
    if ir.dtype != np.uint8 or vis.dtype != np.uint8:
        raise ValueError(f"engines take uint8 frames, got IR {ir.dtype} and visible {vis.dtype}")


def fuse_luma(ir: np.ndarray, vis: np.ndarray, fuse_y: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> np.ndarray:
    """What every engine does around its fusion: check the pair, fuse the IR with the visible luma (two HxW uint8
    arrays in, HxW uint8 out, by ``fuse_y``), put the visible chroma back."""
    check_pair(ir, vis)
    vis_y, chroma = split_luma(vis)
    return merge_luma(fuse_y(to_gray(ir), vis_y), chroma)


def fuse_colour(
    ir: np.ndarray, vis: np.ndarray, fuse_bgr: Callable[[np.ndarray, np.ndarray], np.ndarray],
    warp: IrWarp | None = None,
) -> np.ndarray:
    """What every engine of a colour network does around it: check the pair, fuse the IR (HxW uint8) with the visible
    frame as BGR (HxWx3 uint8, a gray camera as three equal channels) by ``fuse_bgr``, return BGR, or gray for a
    gray camera. ``warp``: the one ``fuse_bgr`` applies to the IR (checked here against both frames)."""
    check_pair(ir, vis, warp)
    gray = vis.ndim == 2 or vis.shape[2] == 1
    fused = fuse_bgr(to_gray(ir), cv2.cvtColor(to_gray(vis), cv2.COLOR_GRAY2BGR) if gray else vis)
    return to_gray(fused) if gray else fused


class ClassicalEngine:
    """Two-scale fusion (mean of the base layers, larger-magnitude detail): no model file, runs anywhere.

    It is the fallback when no network is wanted (``--model classical``) and a reference point for the network.
    """

    name = "classical"
    provider = "numpy"

    def __init__(self, base_kernel: int = 31) -> None:
        self.base_kernel = base_kernel

    def fuse(self, ir: np.ndarray, vis: np.ndarray, warp: IrWarp | None = None) -> np.ndarray:
        return fuse_registered(ir, vis, warp, functools.partial(fuse_luma, fuse_y=self._fuse_y))

    def _fuse_y(self, ir: np.ndarray, vis_y: np.ndarray) -> np.ndarray:
        a, b = ir.astype(np.float32), vis_y.astype(np.float32)
        k = (self.base_kernel, self.base_kernel)
        base_a, base_b = cv2.blur(a, k), cv2.blur(b, k)
        det_a, det_b = a - base_a, b - base_b
        detail = np.where(np.abs(det_a) > np.abs(det_b), det_a, det_b)
        # Max of the bases keeps hot targets bright instead of halving their contrast against a dark visible scene.
        fused = np.maximum(base_a, base_b) * 0.5 + (base_a + base_b) * 0.25 + detail
        return np.clip(fused + 0.5, 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------------------------------
# The trained network through ONNX Runtime.

PROVIDERS = {"tensorrt": "TensorrtExecutionProvider", "cuda": "CUDAExecutionProvider", "cpu": "CPUExecutionProvider"}
SHIPPED_MODELS = {name: WEIGHTS_DIR / f"difffuse_{name}.onnx" for name in ("lite", "base", "cdfusion")}
DEFAULT_MODEL = "lite"
# Frame size used for warm-up (and the TensorRT shape profile) when the caller does not say: the common thermal
# core resolution. Pass ``resolution=`` (or call :meth:`OnnxEngine.warmup`) with the real camera size.
DEFAULT_RESOLUTION = (640, 512)
REQUIRED_METADATA = ("model_name", "preset", "size_multiple")

log = logging.getLogger(__name__)


def create_engine(model: str | Path = "default", provider: str = "auto", **options: Any) -> FusionEngine:
    """The engine for a ``--model`` / ``--provider`` pair, as the config and CLIs spell them.

    ``model``: ``default`` (the shipped lite network), ``lite``, ``base``, ``cdfusion`` (the colour network),
    ``classical`` or a path to an ``.onnx`` file. ``options`` go to :class:`OnnxEngine` (``resolution=(w, h)``,
    ``cache_dir``, ``threads``, ``device_id``, ``cuda_graph``, ``warmup``); the classical engine takes none of them.
    """
    if provider not in ("auto", *PROVIDERS):
        raise StreamFusionError(f"unknown provider {provider!r}: use auto, tensorrt, cuda or cpu")
    name = str(model)
    if name == "classical":
        return ClassicalEngine()
    if name == "default":
        name = DEFAULT_MODEL
    if name in SHIPPED_MODELS:
        path = SHIPPED_MODELS[name]
        if not path.is_file():
            raise StreamFusionError(
                f"the shipped {name} model {path} is missing: export it with python -m export.network "
                f"--checkpoint stream_fusion/weights/difffuse_{name}.pt --out {path}, or use --model classical"
            )
        return OnnxEngine(path, provider, **options)
    return OnnxEngine(Path(name), provider, **options)


def pad_to_multiple(frames: np.ndarray, multiple: int, channels_last: bool = False) -> np.ndarray:
    """Reflect-pad the height and width axes (the last two, or the two before a channels-last axis) up to a
    multiple of ``multiple`` (the network halves the size in its Haar and U-Net stages). Reflection, not zeros: a
    black border would be a fake edge the network fuses as detail. Returns the input itself when no padding is
    needed, so 640x512 and 1280x1024 frames are not copied."""
    h, w = frames.shape[-3:-1] if channels_last else frames.shape[-2:]
    ph, pw = -h % multiple, -w % multiple
    if ph == 0 and pw == 0:
        return frames
    pads = [(0, ph), (0, pw)] + [(0, 0)] * channels_last
    return np.pad(frames, [(0, 0)] * (frames.ndim - len(pads)) + pads, mode="reflect")


def read_model(path: Path) -> onnx.ModelProto:
    """Load and validate a fusion model file: one clear error for a missing, foreign, corrupt or wrong model."""
    if not path.is_file():
        if not path.suffix and len(path.parts) == 1:
            raise StreamFusionError(
                f"unknown model {str(path)!r}: use default, lite, base, cdfusion, classical or the path of an "
                ".onnx file"
            )
        raise StreamFusionError(f"model file {path} does not exist")
    if path.suffix == ".pt":
        raise StreamFusionError(f"{path} is a PyTorch checkpoint: export it first with python -m export.network")
    try:
        proto = onnx.load(str(path))
        onnx.checker.check_model(proto)
    except Exception as error:  # protobuf DecodeError, onnx ValidationError, OSError: all mean "not a model"
        raise StreamFusionError(f"{path} is not a valid ONNX model ({_first_line(error)})") from None
    inputs = [value.name for value in proto.graph.input]
    outputs = [value.name for value in proto.graph.output]
    if sorted(inputs) != ["ir", "vis"] or outputs != ["fused"]:
        raise StreamFusionError(
            f"{path} is not a fusion model: it maps {', '.join(inputs)} -> {', '.join(outputs)}, expected ir, vis -> fused"
        )
    meta = model_metadata(proto)
    missing = [key for key in REQUIRED_METADATA if key not in meta]
    if missing:
        raise StreamFusionError(
            f"{path} lacks stream_fusion metadata ({', '.join(missing)}): export it with python -m export.network"
        )
    return proto


def model_metadata(proto: onnx.ModelProto) -> dict[str, str]:
    """The metadata_props written by ``export.network`` (model name and version, preset, layout, size multiple...)."""
    return {prop.key: prop.value for prop in proto.metadata_props}


def is_colour_model(metadata: dict[str, str]) -> bool:
    """Whether a model file takes the visible frame as BGR and returns BGR (``cdfusion``), not luma."""
    return metadata.get("output", "luma") == "bgr"


def frame_graph(proto: onnx.ModelProto, in_session: bool = False) -> onnx.ModelProto:
    """The network wrapped so that it takes and returns 8-bit frames: ``uint8 -> /255 -> net -> clip -> *255 ->
    round -> uint8``. Normalisation runs inside the session, on the GPU under a GPU provider, and only bytes
    cross the bus (a quarter of float32). Padding to the size multiple is the host's (one small copy; none at
    multiples) except ``in_session``; the crop back always is (a view of the output the host copies back).

    A colour model's visible input and its output are channels-last (``N x H x W x 3``, OpenCV's own layout) and
    transposed to and from the network's NCHW inside the session, so the host hands over the frame as it is.

    With ``in_session`` (what the engine builds under a GPU provider) the host's remaining per-pixel work moves into
    the session too, one frame per run (batch 1):

    - the IR input is the frame as its camera delivers it (any size), resampled onto the visible grid by a warp
      (:func:`_ir_warp_nodes`: a calibration, a live shift), edges replicated, and the fused frame gives way to the
      visible frame where the IR camera does not see (``IrWarp.coverage``'s weights, built from the same warp);
    - a luminance model takes and returns BGR frames like the colour model: the visible luma is taken inside
      (BT.601 weights, OpenCV's YCrCb Y) and the chroma merge is the fused luma's change added to every channel,
      which is what replacing Y of YCrCb and converting back does, without the rounding of Cr and Cb to bytes;
    - the visible frame comes as it is, any size: it is reflect-padded to the size multiple by gathering the rows and
      columns the warp's ``grid_y`` / ``grid_x`` inputs name (the host crops the fused frame it copies back: a view,
      where a crop in the graph would put shape arithmetic on the CPU)."""
    colour = is_colour_model(model_metadata(proto))
    bgr = colour or in_session  # the session takes and returns BGR frames
    model = onnx.ModelProto()
    model.CopyFrom(proto)
    graph = model.graph
    make = onnx.helper.make_node
    constants = {"frame_scale_in": np.array(1 / 255, np.float32), "frame_scale_out": np.array(255, np.float32),
                 "frame_low": np.array(0, np.float32), "frame_high": np.array(1, np.float32)}
    if bgr and not colour:
        constants["frame_luma"] = np.array([0.114, 0.587, 0.299], np.float32)  # B, G, R
        constants["frame_channels"] = np.array([-1], np.int64)
    graph.initializer.extend(onnx.numpy_helper.from_array(value, name) for name, value in constants.items())
    pre = []
    for value in list(graph.input):  # a snapshot: the warp adds inputs of its own
        value.type.tensor_type.elem_type = onnx.TensorProto.UINT8
        source = value.name
        for node in graph.node:
            node.input[:] = [f"{source}_float" if name == source else name for name in node.input]
        channels_last = bgr and source == "vis"
        warped = in_session and source == "ir"
        scaled = "vis_bgr" if channels_last else "ir_raw" if warped else f"{source}_float"
        pre += [
            make("Cast", [source], [f"{source}_cast"], to=onnx.TensorProto.FLOAT),
            make("Mul", [f"{source}_cast", "frame_scale_in"], [scaled]),
        ]
        if channels_last and in_session:  # pad here: the reflected rows and columns, by the warp's coordinates
            pre[-1].output[0] = "vis_frame"
            pre += [make("Cast", ["grid_y"], ["pad_rows"], to=onnx.TensorProto.INT64),
                    make("Cast", ["grid_x"], ["pad_columns"], to=onnx.TensorProto.INT64),
                    make("Gather", ["vis_frame", "pad_rows"], ["vis_rows"], axis=1),
                    make("Gather", ["vis_rows", "pad_columns"], ["vis_bgr"], axis=2)]
        if channels_last and colour:
            pre.append(make("Transpose", ["vis_bgr"], ["vis_float"], perm=[0, 3, 1, 2]))
        elif channels_last:
            # A weighted sum, not a MatMul by the weights: the CUDA provider's MatMul is TF32 by default.
            pre += [make("Mul", ["vis_bgr", "frame_luma"], ["vis_weighted"]),
                    make("ReduceSum", ["vis_weighted", "frame_channels"], ["vis_luma"], keepdims=1),  # N x H x W x 1
                    make("Transpose", ["vis_luma"], ["vis_float"], perm=[0, 3, 1, 2])]
        if channels_last:
            _channels_last(value)
        if warped:
            pre += _ir_warp_nodes(model, "ir_raw", "ir_float")
            for axis, name in ((2, "ir_height"), (3, "ir_width")):
                value.type.tensor_type.shape.dim[axis].dim_param = name
    for node in graph.node:
        node.output[:] = ["fused_float" if name == "fused" else name for name in node.output]
        node.input[:] = ["fused_float" if name == "fused" else name for name in node.input]
    post = []
    if colour:
        post.append(make("Transpose", ["fused_float"], ["fused_nhwc"], perm=[0, 2, 3, 1]))
    elif bgr:
        post += [
            make("Clip", ["fused_float", "frame_low", "frame_high"], ["fused_luma"]),
            make("Transpose", ["fused_luma"], ["fused_luma_nhwc"], perm=[0, 2, 3, 1]),
            make("Sub", ["fused_luma_nhwc", "vis_luma"], ["fused_luma_change"]),
            make("Add", ["vis_bgr", "fused_luma_change"], ["fused_nhwc"]),
        ]
    post.append(make("Clip", ["fused_nhwc" if bgr else "fused_float", "frame_low", "frame_high"], ["fused_clipped"]))
    if in_session:  # the visible frame where the IR camera does not see (IrWarp.coverage's weights), blended with
        # the fused frame as it will be shown, clipped, as the host blends: never a value the fused frame cannot take
        post += [
            make("Sub", ["fused_clipped", "vis_bgr"], ["fused_change"]),
            make("Mul", ["fused_change", "ir_weight"], ["fused_change_seen"]),
            make("Add", ["vis_bgr", "fused_change_seen"], ["fused_seen"]),
        ]
    if bgr:
        _channels_last(graph.output[0])
    post += [
        make("Mul", ["fused_seen" if in_session else "fused_clipped", "frame_scale_out"], ["fused_scaled"]),
        make("Round", ["fused_scaled"], ["fused_rounded"]),
        make("Cast", ["fused_rounded"], ["fused"], to=onnx.TensorProto.UINT8),
    ]
    graph.output[0].type.tensor_type.elem_type = onnx.TensorProto.UINT8
    nodes = pre + list(graph.node) + post
    del graph.node[:]
    graph.node.extend(nodes)
    return model


def _ir_warp_nodes(model: onnx.ModelProto, source: str, target: str) -> list[onnx.NodeProto]:
    """``target`` = the IR image ``source`` (1 x 1 x h x w float) resampled onto the padded visible grid by the inputs
    of :meth:`stream_fusion.warp.IrWarp.session_inputs`, which this adds to the graph. The sampling grid is built
    here from a 3x3 matrix and two coordinate rows (a homography per pixel: multiply-adds and a division), so the host
    computes and uploads nothing per pixel; ``GridSample`` then samples bilinearly at positions clamped to the IR
    frame (its edges replicated). Also ``ir_weight``, where the IR camera sees (``IrWarp.coverage``)."""
    make = onnx.helper.make_node
    floats = onnx.TensorProto.FLOAT
    model.graph.input.extend([
        onnx.helper.make_tensor_value_info("ir_warp", floats, [3, 3]),
        onnx.helper.make_tensor_value_info("grid_x", floats, ["padded_width"]),
        onnx.helper.make_tensor_value_info("grid_y", floats, ["padded_height"]),
        onnx.helper.make_tensor_value_info("ir_low", floats, [2]),
        onnx.helper.make_tensor_value_info("ir_high", floats, [2]),
        onnx.helper.make_tensor_value_info("ir_feather", floats, [2]),
    ])
    constants = {"warp_axis0": [0], "warp_axis1": [1], "warp_last": [-1], "warp_xy_end": [2], "warp_z_end": [3]}
    model.graph.initializer.extend(
        onnx.numpy_helper.from_array(np.array(value, np.int64), name) for name, value in constants.items()
    )
    model.graph.initializer.extend(onnx.numpy_helper.from_array(np.array(k, np.int64), name)
                                   for k, name in enumerate(("warp_zero_index", "warp_one_index", "warp_two_index")))
    model.graph.initializer.append(onnx.numpy_helper.from_array(np.array(0, np.float32), "warp_zero"))
    model.graph.initializer.append(onnx.numpy_helper.from_array(np.array(1, np.float32), "warp_one"))
    opset = max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    return [
        make("Unsqueeze", ["grid_x", "warp_axis0"], ["warp_row"]),  # 1 x W
        make("Unsqueeze", ["grid_y", "warp_axis1"], ["warp_column"]),  # H x 1
        make("Mul", ["warp_column", "warp_zero"], ["warp_column_zero"]),
        make("Mul", ["warp_row", "warp_zero"], ["warp_row_zero"]),
        make("Add", ["warp_row", "warp_column_zero"], ["warp_x"]),  # H x W
        make("Add", ["warp_column", "warp_row_zero"], ["warp_y"]),
        make("Unsqueeze", ["warp_x", "warp_last"], ["warp_x1"]),  # H x W x 1
        make("Unsqueeze", ["warp_y", "warp_last"], ["warp_y1"]),
        # The homogeneous IR position of each pixel, x * m0 + y * m1 + m2 (m_k: the matrix's columns), elementwise
        # rather than a MatMul: the CUDA provider runs MatMul in TF32 by default, whose 10-bit mantissa moved the
        # sampling positions by up to ~0.5 px at x = 500 (fused frames 12 levels off the CPU's, on an H200).
        make("Gather", ["ir_warp", "warp_zero_index"], ["warp_m0"], axis=1),
        make("Gather", ["ir_warp", "warp_one_index"], ["warp_m1"], axis=1),
        make("Gather", ["ir_warp", "warp_two_index"], ["warp_m2"], axis=1),
        make("Mul", ["warp_x1", "warp_m0"], ["warp_from_x"]),  # H x W x 3
        make("Mul", ["warp_y1", "warp_m1"], ["warp_from_y"]),
        make("Add", ["warp_from_x", "warp_from_y"], ["warp_from_xy"]),
        make("Add", ["warp_from_xy", "warp_m2"], ["warp_mapped"]),
        make("Slice", ["warp_mapped", "warp_axis0", "warp_xy_end", "warp_last"], ["warp_xy"]),
        make("Slice", ["warp_mapped", "warp_xy_end", "warp_z_end", "warp_last"], ["warp_z"]),
        make("Div", ["warp_xy", "warp_z"], ["warp_positions"]),
        make("Max", ["warp_positions", "ir_low"], ["warp_above"]),
        make("Min", ["warp_above", "ir_high"], ["warp_clamped"]),
        make("Unsqueeze", ["warp_clamped", "warp_axis0"], ["warp_grid"]),  # 1 x H x W x 2
        make("GridSample", [source, "warp_grid"], [target], align_corners=0, padding_mode="zeros",
             mode="linear" if opset >= 20 else "bilinear"),
        # ir_weight (1 x H x W x 1): 1 where the IR camera sees, falling to 0 over FEATHER_PX IR px beyond its edge
        # (+-1 in these units), per axis and multiplied, as IrWarp.coverage computes it on the host.
        make("Abs", ["warp_positions"], ["warp_distance"]),
        make("Sub", ["warp_distance", "warp_one"], ["warp_beyond"]),
        make("Relu", ["warp_beyond"], ["warp_excess"]),
        make("Mul", ["warp_excess", "ir_feather"], ["warp_fade"]),
        make("Sub", ["warp_one", "warp_fade"], ["warp_keep"]),
        make("Clip", ["warp_keep", "warp_zero", "warp_one"], ["warp_keep_clipped"]),
        make("Slice", ["warp_keep_clipped", "warp_axis0", "warp_axis1", "warp_last"], ["warp_keep_x"]),
        make("Slice", ["warp_keep_clipped", "warp_axis1", "warp_xy_end", "warp_last"], ["warp_keep_y"]),
        make("Mul", ["warp_keep_x", "warp_keep_y"], ["warp_weight"]),
        make("Unsqueeze", ["warp_weight", "warp_axis0"], ["ir_weight"]),
    ]


def _channels_last(value: onnx.ValueInfoProto) -> None:
    """Re-declare an NCHW graph input / output as an NHWC BGR frame (same N, H, W; 3 channels, last)."""
    dims = [onnx.TensorShapeProto.Dimension() for _ in range(4)]
    for dim, source in zip(dims, [value.type.tensor_type.shape.dim[i] for i in (0, 2, 3, 1)]):
        dim.CopyFrom(source)
    dims[3].dim_value = 3
    del value.type.tensor_type.shape.dim[:]
    value.type.tensor_type.shape.dim.extend(dims)


class OnnxEngine:
    """The trained network on ONNX Runtime: TensorRT, then CUDA, then CPU, whichever actually loads.

    Where each step runs. Always inside the ONNX Runtime session (on the GPU under TensorRT or CUDA, whose input and
    output buffers live on the device and are reused from frame to frame): uint8 -> float normalisation, a colour
    model's HWC <-> CHW transposes, the network, clipping and rounding back to uint8.

    With ``in_session`` on (default: whenever a GPU provider runs) the rest runs in the session too: the IR warp
    (:class:`stream_fusion.warp.IrWarp`: a calibration, a live shift), a luminance model's luma split and chroma
    merge, and the reflect padding to the size multiple (:func:`frame_graph`; the crop back is a view of the output
    the host copies back anyway). Off (the CPU provider), OpenCV and numpy do them on the host, faster there than
    ONNX Runtime's CPU kernels for the same work (the padding is a no-op at multiples such as 640x512).

    ``cuda_graph`` (TensorRT and CUDA only; needs ``resolution``): capture the session's kernels once as a CUDA
    graph and replay it for every frame, so the host launches one graph instead of a kernel per node (base at
    640x512: 428). It relies on what the engine already guarantees under a GPU provider: fixed sizes, inputs and
    output bound at fixed device addresses, every node on the GPU. On an H200 it took base at 640x512 from 7.7 to
    6.7 ms (``python -m stream_fusion.bench``, ``engine+graph``); off by default until a GPU run shows new frames
    reach the replayed graph (``scripts/check_routes.py --cuda-graph``).
    """

    def __init__(
        self,
        path: str | Path,
        provider: str = "auto",
        *,
        resolution: tuple[int, int] | None = None,
        ir_resolution: tuple[int, int] | None = None,
        in_session: bool | None = None,
        fixed_size: bool | None = None,
        cache_dir: str | Path | None = None,
        threads: int | None = None,
        device_id: int = 0,
        cuda_graph: bool = False,
        warmup: bool = True,
    ) -> None:
        if provider not in ("auto", *PROVIDERS):
            raise StreamFusionError(f"unknown provider {provider!r}: use auto, tensorrt, cuda or cpu")
        if cuda_graph and resolution is None:
            raise StreamFusionError("cuda_graph needs resolution=(width, height): a CUDA graph is captured for one "
                                    "frame size")
        self.path = Path(path)
        proto = read_model(self.path)
        self.metadata = model_metadata(proto)
        self.size_multiple = int(self.metadata["size_multiple"])
        self.preset = self.metadata["preset"]
        self.precision = self.metadata.get("precision", "fp32")
        self.name = f"{self.metadata['model_name']}-{self.preset}"
        self.colour = is_colour_model(self.metadata)
        self.device_id = device_id
        self.cuda_graph = cuda_graph
        self._requested = (in_session, fixed_size)
        self._graph = lambda name: frame_graph(proto, self._on(name)[0]).SerializeToString()
        self._options = {
            # ONNX Runtime names a cached TensorRT engine after the model path, or (for an in-memory model, as here)
            # its graph, never its weights (ORT maintainers in triton-inference-server/onnxruntime_backend#126): one
            # folder per file content, so re-exported weights never run a stale engine.
            "cache_dir": Path(cache_dir or default_cache_dir()) / f"{self.path.stem}-{file_digest(self.path)}",
            "threads": threads,
            "device_id": device_id,
            "cuda_graph": cuda_graph,
        }
        self._open(provider, resolution, ir_resolution or resolution)
        if warmup:
            self.warmup(*(resolution or DEFAULT_RESOLUTION), ir_size=self.ir_resolution)

    def _on(self, provider: str) -> tuple[bool, bool]:
        """``in_session`` and ``fixed_size`` on ``provider``: as asked, else on for a GPU provider, off on the CPU
        (where OpenCV does the per-pixel work faster, and a CPU engine fuses any frame size)."""
        return tuple(provider != "cpu" if asked is None else asked for asked in self._requested)  # type: ignore

    def _open(self, provider: str, resolution: tuple[int, int] | None, ir_resolution: tuple[int, int] | None) -> None:
        """(Re)build the session on ``provider`` for visible frames of ``resolution`` and IR frames of
        ``ir_resolution`` (w, h; None: any size, no TensorRT profile, no fixed sizes)."""
        self.resolution, self.ir_resolution = resolution, ir_resolution
        first = "tensorrt" if provider == "auto" else provider  # the profile and sizes are for a GPU attempt
        self.in_session = self._on(first)[0]
        self._profile = self._shapes(resolution, ir_resolution)
        dims = frame_dims(resolution, ir_resolution, self.size_multiple, self.in_session) if resolution else None
        self.session, self.provider = open_session(
            self._graph, provider, shapes=self._profile, dims=lambda name: dims if self._on(name)[1] else None,
            **self._options,
        )
        self.in_session, fixed = self._on(self.provider)
        self.fixed_size = fixed and dims is not None
        self._profile = self._shapes(resolution, ir_resolution)
        self._buffers = _BoundBuffers(self.session, "cpu" if self.provider == "cpu" else "cuda", self.device_id)

    def warmup(self, width: int, height: int, ir_size: tuple[int, int] | None = None) -> None:
        """One run at the frame size to come: allocates buffers, picks kernels, builds a TensorRT engine, so the
        first real frame is not the slow one."""
        frame = np.zeros((height, width, 3), np.uint8)
        ir_width, ir_height = ir_size if ir_size is not None and self.in_session else (width, height)
        self.fuse(np.zeros((ir_height, ir_width), np.uint8), frame)

    @property
    def takes_bgr(self) -> bool:
        """Whether the session takes and returns BGR frames (a colour model, or any model ``in_session``)."""
        return self.colour or self.in_session

    def fuse(self, ir: np.ndarray, vis: np.ndarray, warp: IrWarp | None = None) -> np.ndarray:
        if not self.in_session:
            return fuse_registered(ir, vis, warp, self._fuse_registered)
        warp = warp or IrWarp.resize((ir.shape[1], ir.shape[0]), (vis.shape[1], vis.shape[0]))
        return fuse_colour(ir, vis, functools.partial(self._fuse_bgr, warp=warp), warp)

    def _fuse_registered(self, ir: np.ndarray, vis: np.ndarray) -> np.ndarray:
        """The host route, for a pair on one grid: colour in the session or the YCrCb route around it."""
        if self.takes_bgr:
            return fuse_colour(ir, vis, functools.partial(self._fuse_bgr, warp=None))
        return fuse_luma(ir, vis, self._fuse_y)

    def _fuse_bgr(self, ir: np.ndarray, bgr: np.ndarray, warp: IrWarp | None) -> np.ndarray:
        h, w = bgr.shape[:2]
        if warp is not None:  # in_session: the session pads and warps; the frames go as they are
            m = self.size_multiple
            fused = self.run(ir[None, None], bgr[None], warp.session_inputs((w + -w % m, h + -h % m)))
        else:
            vis = pad_to_multiple(bgr[None], self.size_multiple, channels_last=True)
            fused = self.run(pad_to_multiple(ir[None, None], self.size_multiple), vis)
        return np.ascontiguousarray(fused[0, :h, :w])

    def _fuse_y(self, ir: np.ndarray, vis_y: np.ndarray) -> np.ndarray:
        h, w = vis_y.shape
        frames = pad_to_multiple(np.stack([ir, vis_y])[:, None], self.size_multiple)
        fused = self.run(frames[0:1], frames[1:2])
        return np.ascontiguousarray(fused[0, 0, :h, :w])

    def run(self, ir: np.ndarray, vis: np.ndarray, warp_inputs: dict[str, np.ndarray] | None = None) -> np.ndarray:
        """The session alone, uint8 in and out, H and W multiples of ``size_multiple``: ``N x 1 x H x W`` each ->
        the same (luminance model); ``ir`` ``N x 1 x H x W`` and ``vis`` ``N x H x W x 3`` -> ``N x H x W x 3``
        (colour model). ``in_session``: ``ir`` is ``1 x 1 x h x w`` of its own size, ``vis`` ``1 x H x W x 3`` of any
        H and W for every model, ``warp_inputs`` are :meth:`IrWarp.session_inputs`, and the output is the padded
        frame, ``1 x len(grid_y) x len(grid_x) x 3``."""
        feeds = {"ir": ir, "vis": vis, **(warp_inputs or {})}
        if self.in_session != bool(warp_inputs):
            raise ValueError("this session warps the IR: pass warp_inputs" if self.in_session
                             else "this session does not warp the IR: warp_inputs must be empty")
        fixed = self._profile is not None and (self.fixed_size or self.provider == "tensorrt")
        if fixed and any(feeds[name].shape != self._profile[name] for name in ("ir", "vis")):
            # A camera that changed mode, or reported another size than it delivers: rebuild for the new size
            # rather than fail mid-stream (TensorRT builds a new engine: minutes, once; then it is cached).
            size, ir_size = _size(vis.shape, self.takes_bgr), _size(ir.shape)
            log.warning("%s: frames are now IR %dx%d and visible %dx%d, not the sizes its %s session was built for: "
                        "rebuilding it", self.name, *ir_size, *size, self.provider)
            self._open(self.provider, size, ir_size)
        out_shape = (1, len(warp_inputs["grid_y"]), len(warp_inputs["grid_x"]), 3) if warp_inputs else vis.shape
        return self._buffers.run(feeds, out_shape)

    def _shapes(
        self, resolution: tuple[int, int] | None, ir_resolution: tuple[int, int] | None
    ) -> dict[str, tuple[int, ...]] | None:
        """The session's input shapes for one frame of ``resolution`` (visible) and ``ir_resolution`` (the IR as
        its camera delivers it, for the in-session warp): the TensorRT profile. None when the size is not known."""
        if resolution is None:
            return None
        m = self.size_multiple
        width, height = resolution
        h, w = height + -height % m, width + -width % m
        if self.in_session:  # the frames as they come; the session pads to (w, h); the warp's own small inputs
            iw, ih = ir_resolution or resolution
            warp_inputs = IrWarp.resize((iw, ih), (width, height)).session_inputs((w, h))
            return {"ir": (1, 1, ih, iw), "vis": (1, height, width, 3),
                    **{name: value.shape for name, value in warp_inputs.items()}}
        return {"ir": (1, 1, h, w), "vis": (1, h, w, 3) if self.colour else (1, 1, h, w)}


def _size(shape: tuple[int, ...], channels_last: bool = False) -> tuple[int, int]:
    """``(W, H)`` of an ``N x C x H x W`` (or ``N x H x W x C``) shape."""
    h, w = shape[1:3] if channels_last else shape[2:4]
    return int(w), int(h)


class _BoundBuffers:
    """Input and output buffers on the provider's device, bound to the session once per frame size and reused from
    frame to frame: a frame is one copy into each input buffer and one copy out of the output buffer (host to GPU
    and back under CUDA / TensorRT, a uint8 memcpy on the CPU). The warp's few numbers are copied only when they
    change. One code path for every provider, so the CPU tests exercise the binding logic the GPU providers use."""

    FRAMES = ("ir", "vis")  # new content every run; everything else is copied only when it changed

    def __init__(self, session: ort.InferenceSession, device: str, device_id: int) -> None:
        self.session = session
        self.device = device
        self.device_id = device_id
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.buffers: dict[str, ort.OrtValue] = {}
        self.last: dict[str, np.ndarray] = {}

    def _bind(self, feeds: dict[str, np.ndarray], out_shape: tuple[int, ...]) -> None:
        def device_buffer(shape: tuple[int, ...], dtype: type) -> ort.OrtValue:
            return ort.OrtValue.ortvalue_from_shape_and_type(shape, dtype, self.device, self.device_id)

        self.buffers = {name: device_buffer(array.shape, array.dtype.type) for name, array in feeds.items()}
        self.out = device_buffer(out_shape, np.uint8)
        self.binding = self.session.io_binding()
        for name, buffer in self.buffers.items():
            self.binding.bind_ortvalue_input(name, buffer)
        self.binding.bind_ortvalue_output("fused", self.out)
        self.shapes = {name: array.shape for name, array in feeds.items()}
        self.last = {}

    def run(self, feeds: dict[str, np.ndarray], out_shape: tuple[int, ...]) -> np.ndarray:
        if {name: array.shape for name, array in feeds.items()} != self.shapes:
            self._bind(feeds, out_shape)
        for name, array in feeds.items():
            if name in self.FRAMES or name not in self.last or not np.array_equal(self.last[name], array):
                self.buffers[name].update_inplace(np.ascontiguousarray(array))
                if name not in self.FRAMES:
                    self.last[name] = array.copy()
        self.session.run_with_iobinding(self.binding)
        return self.binding.copy_outputs_to_cpu()[0]


def file_digest(path: Path) -> str:
    """Short content hash of a model file (a few MB: milliseconds)."""
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def default_cache_dir() -> Path:
    """Where TensorRT keeps built engines and timing caches (minutes to build, so they must survive restarts)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "stream_fusion" / "tensorrt"


def provider_options(
    name: str, *, shapes: dict[str, tuple[int, ...]] | None, cache_dir: Path, device_id: int, cuda_graph: bool = False
) -> dict[str, str]:
    """ONNX Runtime options per provider (names from the TensorRT / CUDA execution provider docs). Values are
    strings, booleans spelled "True"/"False": the TensorRT provider rejects "1"/"0" for its flags. ``cuda_graph``:
    see :class:`OnnxEngine`."""
    if name == "tensorrt":
        options = {
            "device_id": str(device_id),
            "trt_fp16_enable": "True",
            "trt_engine_cache_enable": "True",
            "trt_engine_cache_path": str(cache_dir),
            "trt_timing_cache_enable": "True",
            "trt_timing_cache_path": str(cache_dir),
        }
        if shapes is not None:
            # One profile for the configured frame size: without it TensorRT rebuilds an engine per new size.
            profile = ",".join(f"{key}:{'x'.join(map(str, shape))}" for key, shape in shapes.items())
            options |= {"trt_profile_min_shapes": profile, "trt_profile_opt_shapes": profile,
                        "trt_profile_max_shapes": profile}
        if cuda_graph:
            options["trt_cuda_graph_enable"] = "True"
        return options
    if name == "cuda":
        # Exhaustive cuDNN search pays once, at warm-up, for the fastest convolution algorithm at the frame size.
        options = {"device_id": str(device_id), "cudnn_conv_algo_search": "EXHAUSTIVE",
                   "do_copy_in_default_stream": "True"}
        if cuda_graph:
            options["enable_cuda_graph"] = "True"
        return options
    return {}


def open_session(
    model: bytes | Callable[[str], bytes],
    provider: str,
    *,
    shapes: dict[str, tuple[int, ...]] | None,
    cache_dir: Path,
    threads: int | None,
    device_id: int,
    profile: bool = False,
    dims: dict[str, int] | Callable[[str], dict[str, int] | None] | None = None,
    cuda_graph: bool = False,
) -> tuple[ort.InferenceSession, str]:
    """An ONNX Runtime session on the first provider that really loads, and that provider's short name. ``model``:
    the serialised model, or a function giving it for a provider's short name (the engine's graph differs by provider).
    ``dims``: sizes for the graph's named dimensions (see :func:`session_options`), or a function giving them (or
    None) for a provider's short name.

    onnxruntime-gpu lists TensorRT and CUDA as available even where their libraries are missing and then quietly
    runs on the CPU after pages of log; here every GPU attempt's log is captured, the provider that actually runs is
    read back from the session, and the outcome is one warning naming what failed and why. A forced provider that
    does not load is a StreamFusionError.
    """
    available = ort.get_available_providers()
    wanted = ["tensorrt", "cuda", "cpu"] if provider == "auto" else [provider]
    failures: list[str] = []
    for name in wanted:
        options = session_options(threads, profile=profile, dims=dims(name) if callable(dims) else dims)
        if PROVIDERS[name] not in available:
            failures.append(f"{name}: not in this onnxruntime build")
            continue
        chain = [(PROVIDERS[name], provider_options(name, shapes=shapes, cache_dir=cache_dir,
                                                    device_id=device_id, cuda_graph=cuda_graph))]
        if name == "tensorrt":
            # Nodes TensorRT cannot take go to CUDA, not the CPU; CPU stays last for shape-only nodes.
            chain.append((PROVIDERS["cuda"], provider_options("cuda", shapes=None, cache_dir=cache_dir,
                                                              device_id=device_id)))
        if name != "cpu":
            chain.append((PROVIDERS["cpu"], {}))
        if name == "tensorrt":
            cache_dir.mkdir(parents=True, exist_ok=True)
        graph = model(name) if callable(model) else model
        session, reason = _try_session(graph, options, chain, gpu=name != "cpu")
        if session is not None and session.get_providers()[0] == PROVIDERS[name]:
            if failures:
                log.warning("onnxruntime: running on %s; unavailable: %s", name.upper(), "; ".join(failures))
            return session, name
        failures.append(f"{name}: {reason}")
    if provider == "auto":
        raise StreamFusionError(f"no onnxruntime provider could load the model ({'; '.join(failures)})")
    raise StreamFusionError(
        f"provider {provider} is unavailable here ({failures[-1].split(': ', 1)[1]}); use --provider auto or cpu"
    )


def session_options(
    threads: int | None, *, profile: bool = False, dims: dict[str, int] | None = None
) -> ort.SessionOptions:
    """The engine's ONNX Runtime session options. ``dims`` fixes the graph's named dimensions (free dimension
    overrides): with every size known, ONNX Runtime folds the network's shape arithmetic into constants (base:
    12 Shape and 43 Gather nodes of sizes gone, 563 nodes down to 428), nodes that a GPU provider would otherwise
    run on the CPU between GPU kernels. A session so built refuses frames of another size (``OnnxEngine`` rebuilds
    it for them)."""
    options = ort.SessionOptions()
    # EXTENDED, not ALL: ALL adds the CPU's NCHWc layout transform, whose reorders cost more than they save on
    # this narrow network (lite at 640x512 on a 2-core CPU: 270 ms with ALL, 72 ms with EXTENDED).
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    if profile:  # export's GPU placement check: which provider ran each node
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tempfile.gettempdir()) / "stream_fusion_ort_profile")
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # Whole-frame convolutions parallelise well: use every core this process may run on.
    options.intra_op_num_threads = threads or usable_cores()
    options.inter_op_num_threads = 1
    for name, size in (dims or {}).items():
        options.add_free_dimension_override_by_name(name, size)
    return options


def frame_dims(
    size: tuple[int, int], ir_size: tuple[int, int], multiple: int, in_session: bool
) -> dict[str, int]:
    """The frame graph's named dimensions for one visible frame of ``size`` (w, h) and an IR frame of ``ir_size``:
    the padded frame, or with ``in_session`` the frames as they come and the padded grid (:func:`frame_graph`)."""
    (w, h), (iw, ih) = size, ir_size
    pw, ph = w + -w % multiple, h + -h % multiple
    if in_session:
        return {"batch": 1, "height": h, "width": w, "ir_height": ih, "ir_width": iw, "padded_height": ph,
                "padded_width": pw}
    return {"batch": 1, "height": ph, "width": pw}


def _try_session(
    model: bytes, options: ort.SessionOptions, chain: list[tuple[str, dict[str, Any]]], *, gpu: bool
) -> tuple[ort.InferenceSession | None, str]:
    """Open one session without onnxruntime's own silent fallback; on failure, the reason in a few words."""
    if not gpu:
        try:
            return ort.InferenceSession(model, options, providers=chain, enable_fallback=0), ""
        except Exception as error:  # ORT raises its own Fail / InvalidGraph types
            return None, _first_line(error)
    captured: list[str] = []
    with _capture_output(captured):
        try:
            if hasattr(ort, "preload_dlls"):
                ort.preload_dlls()  # CUDA / cuDNN from the nvidia-* pip packages, where installed
            session = ort.InferenceSession(model, options, providers=chain, enable_fallback=0)
        except Exception as error:
            session = None
            captured.append(str(error))
    text = "\n".join(captured)
    if session is not None and session.get_providers()[0] == chain[0][0]:
        return session, ""
    match = re.search(r"with error: ([^\n]+)", text) or re.search(r"(Failed to create \w+)", text)
    return None, match.group(1).strip() if match else _first_line(text or "its libraries did not load")


@contextlib.contextmanager
def _capture_output(sink: list[str]) -> Iterator[None]:
    """Collect what native code writes to stdout/stderr (file descriptors 1 and 2), to summarise it instead."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    python_out = io.StringIO()
    with tempfile.TemporaryFile() as buffer:
        try:
            for fd in saved:
                os.dup2(buffer.fileno(), fd)
            with contextlib.redirect_stdout(python_out):
                yield
        finally:
            for fd, copy in saved.items():
                os.dup2(copy, fd)
                os.close(copy)
            buffer.seek(0)
            sink.append(buffer.read().decode(errors="replace") + python_out.getvalue())


def usable_cores() -> int:
    """Cores this process may run on (a container's CPU set, not the host's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _first_line(error: object) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return (lines[0] if lines else type(error).__name__)[:300]
