"""The fusion model file as ONNX: reading and checking it, and the frame graph the engine runs.

:func:`read_model` turns a missing, foreign, corrupt or wrong file into one clear error. :func:`frame_graph` wraps the
network so that the session takes and returns 8-bit frames (and, on a GPU provider, does the IR warp, the luma split
and the chroma merge itself). ``export/`` uses the same graph to check the placement of every node on a GPU.
Imports onnx, not ONNX Runtime.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from stream_fusion.errors import StreamFusionError, first_line

REQUIRED_METADATA = ("model_name", "preset", "size_multiple")


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
        raise StreamFusionError(f"{path} is not a valid ONNX model ({first_line(error)})") from None
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
    broken = non_finite_weights(proto)
    if broken:
        raise StreamFusionError(
            f"{path} has NaN or infinite weights ({broken}): it would fuse black frames; the training diverged or "
            "the file was damaged, export it again from a good checkpoint"
        )
    return proto


def non_finite_weights(proto: onnx.ModelProto) -> str:
    """Which floating-point weights (initializers and Constant nodes) hold NaN or infinity, in a few words; "" when
    none does. A diverged training exports such a file without complaint, and the engine's uint8 output turns
    NaN into black frames that no later check would notice. A scan of every weight: milliseconds for the shipped
    networks."""
    tensors = [*proto.graph.initializer,
               *(attribute.t for node in proto.graph.node if node.op_type == "Constant"
                 for attribute in node.attribute if attribute.type == onnx.AttributeProto.TENSOR)]
    bad = []
    for tensor in tensors:
        values = onnx.numpy_helper.to_array(tensor)
        if np.issubdtype(values.dtype, np.floating) and not np.isfinite(values).all():
            bad.append(tensor.name or "a constant")
    if not bad:
        return ""
    return ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")


def model_metadata(proto: onnx.ModelProto) -> dict[str, str]:
    """The metadata_props written by ``export.network`` (model name and version, preset, layout, size multiple...)."""
    return {prop.key: prop.value for prop in proto.metadata_props}


def is_colour_model(metadata: dict[str, str]) -> bool:
    """Whether a model file takes the visible frame as BGR and returns BGR (``cdfusion``), not luma."""
    return metadata.get("output", "luma") == "bgr"


def opset_version(proto: onnx.ModelProto) -> int:
    """The default-domain opset a model is written in."""
    return max(entry.version for entry in proto.opset_import if entry.domain in ("", "ai.onnx"))


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
    opset = opset_version(model)
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


def served_graph(proto: onnx.ModelProto) -> onnx.ModelProto:
    """The frame graph a fusion server runs (Triton's model.onnx, ``stream_fusion.serve``): :func:`frame_graph` on the
    host route (``ir`` and ``vis`` on one grid, a luminance model's ``vis`` its luma) with the reflect padding to the
    size multiple and the crop back inside, so it fuses frames of any size and a client needs nothing but the frames
    (no size multiple to learn, pads of 0 at multiples such as 640x512). Batch, height and width stay dynamic: a
    server batches the frames of many streams of one size. Padding and crop are those of the local engine's host
    route (numpy's ``reflect`` is ONNX's), so the fused frames are the same."""
    multiple = int(model_metadata(proto)["size_multiple"])
    model = frame_graph(proto)
    graph = model.graph
    make = onnx.helper.make_node
    channels_last = {value.name: value.type.tensor_type.shape.dim[3].dim_value == 3 for value in graph.input}
    for node in graph.node:
        node.input[:] = [f"{name}_padded" if name in channels_last else name for name in node.input]
        node.output[:] = ["fused_padded" if name == "fused" else name for name in node.output]
    constants = {"serve_multiple": [multiple], "serve_hw": [2, 3], "serve_begin": [0, 0]}
    if any(channels_last.values()):
        constants["serve_hw_last"] = [1, 2]
    graph.initializer.extend(onnx.numpy_helper.from_array(np.array(value, np.int64), name)
                             for name, value in constants.items())
    axes = {True: "serve_hw_last", False: "serve_hw"}
    pre = [
        make("Shape", ["ir"], ["serve_ir_shape"]),
        make("Gather", ["serve_ir_shape", "serve_hw"], ["serve_size"]),  # [H, W] (ir is N x 1 x H x W)
        make("Mod", ["serve_size", "serve_multiple"], ["serve_excess"]),
        make("Sub", ["serve_multiple", "serve_excess"], ["serve_short"]),
        make("Mod", ["serve_short", "serve_multiple"], ["serve_pad_end"]),  # [-H % m, -W % m]
        make("Concat", ["serve_begin", "serve_pad_end"], ["serve_pads"], axis=0),  # pads of H and W, begin then end
    ]
    for name, last in channels_last.items():
        pre.append(make("Pad", [name, "serve_pads", "", axes[last]], [f"{name}_padded"], mode="reflect"))
    last = channels_last["vis"]
    post = [make("Slice", ["fused_padded", "serve_begin", "serve_size", axes[last]], ["fused"])]
    nodes = pre + list(graph.node) + post
    del graph.node[:]
    graph.node.extend(nodes)
    return model
