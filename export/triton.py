"""Write a Triton Inference Server model repository for the shipped networks: the deployable artifact of a fusion server.

    python -m export.triton --out model_repository                          # lite, base and cdfusion
    python -m export.triton --out model_repository --models lite --fp16     # TensorRT builds in FP16

Per network ``NAME``: ``NAME/1/model.onnx``, the frame graph a server runs (uint8 frames in and out, the padding to
the size multiple inside, batch / height / width dynamic: :func:`stream_fusion.engine.graph.served_graph`), and
``NAME/config.pbtxt`` for Triton's ``onnxruntime`` backend: dynamic batching, GPU instances with the TensorRT
accelerator. ``NAME/configs/cpu.pbtxt`` is the same model on CPU instances, which ``tritonserver
--model-config-name=cpu`` selects. The folder runs unmodified in NVIDIA's tritonserver container (docs/serving.md).
Needs onnx only (no torch, no ONNX Runtime).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import onnx

from stream_fusion.engine import SHIPPED_MODELS, shipped_models
from stream_fusion.engine.graph import model_metadata, read_model, served_graph
from stream_fusion.errors import StreamFusionError, run_cli

# A batch of 16 is where one H200 stops gaining frames/s for lite (docs/serving.md); the preferred sizes let the
# scheduler send a full batch at once instead of waiting out the queue delay.
MAX_BATCH = 16
PREFERRED_BATCHES = (4, 8, 16)
# How long a request may wait for others to fill a batch: a tenth of a 30 fps frame period.
QUEUE_DELAY_US = 3000
ONNX_TO_TRITON = {onnx.TensorProto.UINT8: "TYPE_UINT8", onnx.TensorProto.FLOAT: "TYPE_FP32"}


def tensor_entries(values: list[onnx.ValueInfoProto]) -> list[str]:
    """Triton ``input`` / ``output`` entries for graph values: their names, types, and shapes less the batch axis
    (``max_batch_size`` > 0 makes it implicit); a named (dynamic) dimension is -1."""
    entries = []
    for value in values:
        tensor = value.type.tensor_type
        dims = ", ".join(str(dim.dim_value) if dim.HasField("dim_value") else "-1" for dim in tensor.shape.dim[1:])
        entries.append(f'  {{ name: "{value.name}" data_type: {ONNX_TO_TRITON[tensor.elem_type]} dims: [ {dims} ] }}')
    return entries


def model_config(name: str, model: onnx.ModelProto, kind: str, fp16: bool) -> str:
    """``config.pbtxt`` text for ``model`` served as ``name`` on ``kind`` (``gpu`` or ``cpu``) instances. The
    metadata (preset, version, size multiple) goes along as ``parameters`` so a client can see what it talks to."""
    meta = model_metadata(model)
    lines = [
        f'name: "{name}"',
        'backend: "onnxruntime"',
        f"max_batch_size: {MAX_BATCH}",
        "input [", ",\n".join(tensor_entries(list(model.graph.input))), "]",
        "output [", ",\n".join(tensor_entries(list(model.graph.output))), "]",
        "dynamic_batching {",
        f"  preferred_batch_size: [ {', '.join(map(str, PREFERRED_BATCHES))} ]",
        f"  max_queue_delay_microseconds: {QUEUE_DELAY_US}",
        "}",
        f"instance_group [ {{ count: 1 kind: KIND_{kind.upper()} }} ]",
    ]
    if kind == "gpu":
        # TensorRT where it builds, the CUDA provider for the rest; engines cached across restarts (minutes to build).
        precision = "FP16" if fp16 else "FP32"
        lines += [
            "optimization { execution_accelerators {",
            "  gpu_execution_accelerator: [ {",
            '    name: "tensorrt"',
            f'    parameters {{ key: "precision_mode" value: "{precision}" }}',
            '    parameters { key: "max_workspace_size_bytes" value: "2147483648" }',
            '    parameters { key: "trt_engine_cache_enable" value: "1" }',
            f'    parameters {{ key: "trt_engine_cache_path" value: "/tmp/stream_fusion_trt/{name}" }}',
            "  } ]",
            "} }",
        ]
    for key in ("model_name", "preset", "version", "size_multiple", "output"):
        if key in meta:
            lines.append(f'parameters {{ key: "stream_fusion_{key}" value: {{ string_value: "{meta[key]}" }} }}')
    return "\n".join(lines) + "\n"


def write_model(out: Path, name: str, source: Path, fp16: bool) -> Path:
    """``out/name``: version 1's model.onnx, the GPU config and the CPU one (``configs/cpu.pbtxt``)."""
    model = served_graph(read_model(source))
    onnx.checker.check_model(model)
    folder = out / name
    (folder / "1").mkdir(parents=True, exist_ok=True)
    (folder / "configs").mkdir(exist_ok=True)
    onnx.save(model, str(folder / "1" / "model.onnx"))
    (folder / "config.pbtxt").write_text(model_config(name, model, "gpu", fp16))
    (folder / "configs" / "cpu.pbtxt").write_text(model_config(name, model, "cpu", fp16))
    return folder



def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export.triton", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="model repository folder to write (created)")
    parser.add_argument("--models", default=",".join(SHIPPED_MODELS), help="comma-separated networks (default: all)")
    parser.add_argument("--fp16", action="store_true",
                        help="TensorRT builds in FP16 (as the local engine's TensorRT provider does); default FP32")
    args = parser.parse_args(argv)
    names = shipped_models(args.models)
    if args.out.exists() and not args.out.is_dir():
        raise StreamFusionError(f"--out {args.out} exists and is not a folder")
    for name in names:
        folder = write_model(args.out, name, SHIPPED_MODELS[name], args.fp16)
        print(f"{folder}: model.onnx, config.pbtxt (GPU), configs/cpu.pbtxt (CPU)")
    print(f"serve it: tritonserver --model-repository={args.out.resolve()} (docs/serving.md)")
    return 0


if __name__ == "__main__":
    run_cli(main)
