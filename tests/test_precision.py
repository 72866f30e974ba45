"""engine.precision (issue #16 point 2): the shipped fp16 files, which file each provider runs, and the rule that
fp16 becomes the CUDA provider's default only through a GPU run's verification record of these very files."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest

from stream_fusion import DATA_DIR
from stream_fusion.engine import create_engine, engine_from_config
from stream_fusion.engine.onnx_engine import OnnxEngine
from stream_fusion.engine.precision import fp16_verified, provider_files, sha256, shipped_files
from stream_fusion.errors import StreamFusionError

REPO = Path(__file__).resolve().parents[1]
NETWORKS = ("lite", "base", "cdfusion")


def record(path: Path, name: str, **changes: object) -> Path:
    """A verification record for ``name``'s shipped files as they are now, as scripts/check_fp16.py writes it."""
    files = shipped_files(name)
    entry = {"provider": "cuda", "pairs": 75, "frames": 150, "max_levels": 1, "within_2": 150,
             "fp32_sha256": sha256(files["fp32"]), "fp16_sha256": sha256(files["fp16"]), **changes}
    path.write_text(json.dumps({"networks": {name: entry}}))
    return path


@pytest.mark.parametrize("name", NETWORKS)
def test_each_shipped_network_ships_an_fp16_export_of_its_checkpoint(name: str) -> None:
    """A new checkpoint re-exported in fp32 only would leave a stale fp16 file for the GPU: both files name the
    checkpoint they came from, and the fp16 one is an fp16 export (fp32 inputs and outputs, fp16 inside)."""
    files = shipped_files(name)
    digest = hashlib.sha256(files["fp32"].with_suffix(".pt").read_bytes()).hexdigest()[:12]
    proto = onnx.load(str(files["fp16"]))
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["model_version"] == f"{name}-{digest}" and meta["precision"] == "fp16"
    assert all(v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT for v in [*proto.graph.input, *proto.graph.output])
    halves = [init for init in proto.graph.initializer if init.data_type == onnx.TensorProto.FLOAT16]
    assert len(halves) > 20  # the convolution weights


def test_auto_runs_fp32_everywhere_until_a_gpu_run_verified_the_fp16_file(tmp_path: Path) -> None:
    files = shipped_files("lite")
    missing = tmp_path / "none.json"
    assert provider_files("lite", "auto", missing) == dict.fromkeys(("tensorrt", "cuda", "cpu"), files["fp32"])
    verified = record(tmp_path / "ok.json", "lite")
    assert fp16_verified("lite", verified) and not fp16_verified("base", verified)
    assert provider_files("lite", "auto", verified) == {"tensorrt": files["fp32"], "cuda": files["fp16"],
                                                        "cpu": files["fp32"]}
    # Evidence that does not hold, or is about other files, or came from the CPU: fp32.
    for changes in ({"max_levels": 3}, {"frames": 0}, {"fp16_sha256": "0" * 64}, {"fp32_sha256": "0" * 64},
                    {"provider": "cpu"}):
        stale = record(tmp_path / "stale.json", "lite", **changes)
        assert not fp16_verified("lite", stale), changes
        assert provider_files("lite", "auto", stale)["cuda"] == files["fp32"], changes
    (tmp_path / "bad.json").write_text("{not json")
    assert not fp16_verified("lite", tmp_path / "bad.json")
    assert provider_files("lite", "fp16", missing) == dict.fromkeys(("tensorrt", "cuda", "cpu"), files["fp16"])
    assert provider_files("lite", "fp32", verified) == dict.fromkeys(("tensorrt", "cuda", "cpu"), files["fp32"])


def test_the_engine_runs_the_file_of_its_provider_and_says_which(tmp_path: Path) -> None:
    files = shipped_files("lite")
    engine = OnnxEngine({"tensorrt": files["fp32"], "cuda": files["fp16"], "cpu": files["fp32"]}, "cpu",
                        warmup=False)
    assert engine.provider == "cpu" and engine.precision == "fp32" and engine.path == files["fp32"]
    assert engine.files["cuda"] == files["fp16"]
    half = create_engine("lite", "cpu", precision="fp16", warmup=False)
    assert half.precision == "fp16" and half.path == files["fp16"] and half.metadata["precision"] == "fp16"
    assert create_engine("lite", "cpu", warmup=False).precision == "fp32"  # the CPU keeps fp32
    with pytest.raises(StreamFusionError, match="not exports of one network"):
        OnnxEngine({"tensorrt": files["fp32"], "cuda": shipped_files("base")["fp16"], "cpu": files["fp32"]}, "cpu")


def test_fp16_frames_on_the_cpu_stay_within_two_levels_of_fp32_on_a_real_pair() -> None:
    """The CPU provider's run of the fp16 file is only a proxy for the GPU's (most fp16 nodes run in fp32 behind
    Casts there), but a conversion that broke the network shows here too."""
    ir = cv2.imread(str(DATA_DIR / "eval" / "roadscene50" / "ir" / "FLIR_00211.png"), cv2.IMREAD_GRAYSCALE)
    vis = cv2.imread(str(DATA_DIR / "eval" / "roadscene50" / "vis" / "FLIR_00211.png"), cv2.IMREAD_COLOR)
    for name in ("lite", "cdfusion"):
        fused = [create_engine(name, "cpu", precision=p, warmup=False).fuse(ir, vis).astype(int) for p in ("fp32", "fp16")]
        difference = np.abs(fused[1] - fused[0])
        assert difference.max() <= 2 and 0 < (difference > 0).mean() < 0.2, name  # fp16 changes some, not many


def test_bad_precisions_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(StreamFusionError, match="unknown precision 'half': use auto, fp32 or fp16"):
        create_engine("lite", "cpu", precision="half")
    with pytest.raises(StreamFusionError, match="is an fp32 export, not fp16"):
        create_engine(str(shipped_files("lite")["fp32"]), "cpu", precision="fp16", warmup=False)
    assert create_engine(str(shipped_files("lite")["fp16"]), "cpu", precision="fp16", warmup=False).precision == "fp16"
    cfg = {"model": "lite", "provider": "cpu", "cuda_graph": None}
    assert engine_from_config({**cfg, "precision": "fp16"}, (64, 48)).precision == "fp16"
    with pytest.raises(StreamFusionError, match="config key 'engine.precision' must be auto, fp32 or fp16"):
        engine_from_config({**cfg, "precision": "half"}, (64, 48))


def test_run_stream_refuses_a_bad_precision_in_one_line() -> None:
    done = subprocess.run([sys.executable, str(REPO / "run_stream.py"), "--set", "engine.precision=fp8",
                           "--set", "display.enabled=false"], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("error: config key 'engine.precision' must be auto")


def test_check_fp16_refuses_to_record_a_cpu_run(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "check_fp16.py"), "--provider", "cpu",
                           "--record", str(tmp_path / "r.json")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "--record needs a GPU provider" in done.stderr and not (tmp_path / "r.json").exists()


def test_check_fp16_compares_every_frame_and_writes_its_summary(tmp_path: Path) -> None:
    out = tmp_path / "fp16.json"
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "check_fp16.py"), "--provider", "cpu", "--models",
                           "lite", "--pairs", "1", "--size", "160x128", "--json", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    summary = report["networks"]["lite"]
    assert summary["frames"] == 4 and summary["pairs"] == 2 and summary["size"] == "160x128"
    assert len(report["frames"]) == 4 and {row["visible"] for row in report["frames"]} == {"colour", "gray"}
    assert summary["max_levels"] == max(row["max_levels"] for row in report["frames"]) <= 2
    assert summary["fp16_sha256"] == sha256(shipped_files("lite")["fp16"])
    assert "ok   lite on cpu at 160x128: fp16 vs fp32, 4 of 4 frames within 2 levels" in done.stdout


def test_the_record_check_fp16_writes_is_the_one_auto_reads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole loop on the CPU: scripts/check_fp16.py's record (its CPU refusal lifted for the test) names the
    shipped files as auto checks them; a CPU provider's entry still does not count, the same entry from CUDA does."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("check_fp16", REPO / "scripts" / "check_fp16.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    monkeypatch.setattr(script, "GPU_PROVIDERS", ("cpu",))
    out = tmp_path / "fp16_verified.json"
    assert script.main(["--provider", "cpu", "--models", "lite", "--pairs", "1", "--size", "96x64",
                        "--record", str(out)]) == 0
    entry = json.loads(out.read_text())["networks"]["lite"]
    assert entry["provider"] == "cpu" and entry["frames"] == 4 and entry["max_levels"] <= 2
    assert not fp16_verified("lite", out)
    out.write_text(out.read_text().replace('"provider": "cpu"', '"provider": "cuda"'))
    assert fp16_verified("lite", out)
    assert provider_files("lite", "auto", out)["cuda"] == shipped_files("lite")["fp16"]


def test_run_stream_says_which_export_runs() -> None:
    done = subprocess.run([sys.executable, str(REPO / "run_stream.py"), "--no-display", "--zmq", "none",
                           "--set", "engine.precision=fp16", "--set", "source.realtime=false"],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert "-> DiffFuseNet-lite (cpu, fp16), steady video, replay" in done.stderr.splitlines()[0]
