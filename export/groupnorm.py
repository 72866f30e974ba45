"""Each exported GroupNorm as one node instead of ~37 (issue #16 point 3: fewer full-resolution passes on a GPU).

The shipped export writes every GroupNorm as plain reductions (``TwoPassGroupNorm``: Reshape, two-pass ReduceMeans,
Sub, Mul, Sqrt, Div, the affine Mul/Add, and the shape arithmetic around them), which every runtime runs and which
matches PyTorch on the CPU; under a GPU provider each of those nodes is a kernel, and six of them read or write the
full-resolution tensor. Two one-node forms exist, and :func:`one_node_groupnorms` rewrites the export into either:

* ``onnx``: ONNX's own ``GroupNormalization`` (opset 21: per-channel scale and bias; the model's opset is raised to
  21). ONNX Runtime's CPU provider expands it as a function (so the CPU can check it); whether a GPU provider has a
  kernel of its own for it (newer ONNX Runtime sources register a CUDA one) is what the GPU run shows.
* ``contrib``: ONNX Runtime's ``com.microsoft.GroupNorm``, the CUDA kernel its Stable Diffusion pipeline uses
  (from TensorRT's GroupNorm plugin): channels-last only (NHWC input, so a Transpose on each side), gamma and beta
  float32, input float32 or float16, any channel count divisible by the groups. CUDA only: no CPU kernel, so on the
  CPU this file can be checked for form and counted, not run.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

FORMS = ("onnx", "contrib")
ONNX_OPSET = 21


def scope_nodes(graph: onnx.GraphProto, prefix: str) -> tuple[list[onnx.NodeProto], str, str]:
    """The nodes of one exported module (names under ``prefix``), the one tensor they read from outside (besides
    initializers) and the one they hand on."""
    nodes = [node for node in graph.node if node.name.startswith(prefix)]
    produced = {name for node in nodes for name in node.output}
    constants = {init.name for init in graph.initializer}
    inputs = {name for node in nodes for name in node.input if name and name not in produced | constants}
    inside = {id(node) for node in nodes}
    read_outside = {name for node in graph.node if id(node) not in inside for name in node.input}
    read_outside |= {value.name for value in graph.output}
    outputs = produced & read_outside
    if not nodes or len(inputs) != 1 or len(outputs) != 1:
        raise ValueError(f"{prefix}: expected one input and one output, found {sorted(inputs)} -> {sorted(outputs)}")
    return nodes, inputs.pop(), outputs.pop()


def one_node_groupnorms(proto: onnx.ModelProto, norms: dict[str, tuple[int, float, np.ndarray, np.ndarray]],
                        form: str) -> onnx.ModelProto:
    """Replace each GroupNorm scope of ``proto`` by one node of ``form`` (``onnx`` or ``contrib``). ``norms``: per
    node-name prefix, (groups, epsilon, per-channel weight, per-channel bias), from the PyTorch modules."""
    if form not in FORMS:
        raise ValueError(f"unknown GroupNorm form {form!r}")
    graph = proto.graph
    for prefix, (groups, epsilon, weight, bias) in norms.items():
        nodes, source, result = scope_nodes(graph, prefix)
        position = min(index for index, node in enumerate(graph.node) if node.name.startswith(prefix))
        scale, shift = f"{prefix}gn_scale", f"{prefix}gn_bias"
        graph.initializer.extend([numpy_helper.from_array(weight.astype(np.float32), scale),
                                  numpy_helper.from_array(bias.astype(np.float32), shift)])
        if form == "onnx":
            fresh = [helper.make_node("GroupNormalization", [source, scale, shift], [result], f"{prefix}GroupNorm",
                                      num_groups=groups, epsilon=epsilon)]
        else:
            fresh = [
                helper.make_node("Transpose", [source], [f"{prefix}nhwc"], f"{prefix}ToNHWC", perm=[0, 2, 3, 1]),
                helper.make_node("GroupNorm", [f"{prefix}nhwc", scale, shift], [f"{prefix}gn_nhwc"],
                                 f"{prefix}GroupNorm", domain="com.microsoft", groups=groups, epsilon=epsilon,
                                 activation=0, channels_last=1),
                helper.make_node("Transpose", [f"{prefix}gn_nhwc"], [result], f"{prefix}ToNCHW", perm=[0, 3, 1, 2]),
            ]
        kept = [node for node in graph.node if not node.name.startswith(prefix)]
        kept[position:position] = fresh
        del graph.node[:]
        graph.node.extend(kept)
    used = {name for node in graph.node for name in node.input}
    live = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(live)
    del graph.value_info[:]
    imports = {opset.domain: opset for opset in proto.opset_import}
    if form == "onnx":
        imports[""].version = max(imports[""].version, ONNX_OPSET)
    elif "com.microsoft" not in imports:
        proto.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return proto
