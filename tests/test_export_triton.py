"""python -m export.triton: the model repository a tritonserver loads, read back the way Triton and ONNX Runtime read it.

The configs are parsed into Triton's own ModelConfig protobuf (shipped with tritonclient), and each model.onnx is
loaded in ONNX Runtime: the names, types and shapes the config declares must be the model's, and the served graph must
fuse a batch as the local engine fuses each frame of it.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from stream_fusion.engine import create_engine
from stream_fusion.engine.frames import merge_luma, split_luma

ROOT = Path(__file__).resolve().parents[1]
ORT_TYPES = {model_config_pb2.TYPE_UINT8: "tensor(uint8)", model_config_pb2.TYPE_FP32: "tensor(float)"}


def export(out: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "export.triton", "--out", str(out), *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=120)


def parse(path: Path) -> model_config_pb2.ModelConfig:
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("repo")
    result = export(out, "--models", "lite,cdfusion", "--fp16")
    assert result.returncode == 0, result.stderr
    return out


@pytest.mark.parametrize("name", ["lite", "cdfusion"])
def test_config_parses_and_declares_what_the_model_takes(repository: Path, name: str) -> None:
    session = ort.InferenceSession(str(repository / name / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    gpu, cpu = parse(repository / name / "config.pbtxt"), parse(repository / name / "configs" / "cpu.pbtxt")
    for config in (gpu, cpu):
        assert config.name == name and config.backend == "onnxruntime"
        assert config.max_batch_size >= 8
        declared = [*config.input, *config.output]
        actual = [*session.get_inputs(), *session.get_outputs()]
        assert [tensor.name for tensor in declared] == [value.name for value in actual] == ["ir", "vis", "fused"]
        for tensor, value in zip(declared, actual):
            assert ORT_TYPES[tensor.data_type] == value.type == "tensor(uint8)"
            assert value.shape[0] == "batch"  # the batch axis Triton adds, not declared
            assert list(tensor.dims) == [dim if isinstance(dim, int) else -1 for dim in value.shape[1:]]
        batching = config.dynamic_batching
        assert batching.preferred_batch_size and max(batching.preferred_batch_size) <= config.max_batch_size
        assert 500 <= batching.max_queue_delay_microseconds <= 10_000  # a few ms
        assert config.parameters["stream_fusion_preset"].string_value == name
    assert [group.kind for group in gpu.instance_group] == [model_config_pb2.ModelInstanceGroup.KIND_GPU]
    assert [group.kind for group in cpu.instance_group] == [model_config_pb2.ModelInstanceGroup.KIND_CPU]
    (tensorrt,) = gpu.optimization.execution_accelerators.gpu_execution_accelerator
    assert tensorrt.name == "tensorrt" and tensorrt.parameters["precision_mode"] == "FP16"
    assert not cpu.optimization.execution_accelerators.gpu_execution_accelerator
    colour = name == "cdfusion"
    assert list(gpu.input[1].dims) == ([-1, -1, 3] if colour else [1, -1, -1])


@pytest.mark.parametrize("name", ["lite", "cdfusion"])
def test_served_model_fuses_a_batch_as_the_local_engine_fuses_each_frame(repository: Path, name: str) -> None:
    """An odd size (the graph pads to its multiple and crops back itself), two frames in one batch."""
    session = ort.InferenceSession(str(repository / name / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    engine = create_engine(name, "cpu")
    rng = np.random.default_rng(3)
    ir = rng.integers(0, 256, (2, 1, 61, 83), np.uint8)
    vis = rng.integers(0, 256, (2, 61, 83, 3), np.uint8)
    expected = np.stack([engine.fuse(ir[k, 0], vis[k]) for k in range(2)])
    if name == "cdfusion":
        fused = session.run(None, {"ir": ir, "vis": vis})[0]
    else:
        lumas, chromas = zip(*(split_luma(frame) for frame in vis))
        out = session.run(None, {"ir": ir, "vis": np.stack(lumas)[:, None]})[0]
        fused = np.stack([merge_luma(out[k, 0], chromas[k]) for k in range(2)])
    assert fused.shape == expected.shape == (2, 61, 83, 3)
    difference = np.abs(fused.astype(int) - expected)
    # Within 2 grey levels (the bound): a batch of 2 takes other convolution kernels than one frame (a level
    # off in a few pixels on ONNX Runtime's CPU provider).
    assert difference.max() <= 2 and difference.mean() < 0.05
    assert fused.std() > 10  # a fused picture, not a constant


def test_gpu_config_is_fp32_tensorrt_without_fp16(tmp_path: Path) -> None:
    assert export(tmp_path, "--models", "lite").returncode == 0
    (tensorrt,) = parse(tmp_path / "lite" / "config.pbtxt").optimization.execution_accelerators \
        .gpu_execution_accelerator
    assert tensorrt.parameters["precision_mode"] == "FP32"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["lite"]


def test_unknown_network_is_one_line(tmp_path: Path) -> None:
    result = export(tmp_path, "--models", "lite,huge")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["error: --models 'lite,huge': choose among lite, base, cdfusion"]
