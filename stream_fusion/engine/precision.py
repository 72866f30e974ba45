"""Which file of a shipped network each provider runs: fp32 or fp16 (``engine.precision``: auto, fp32, fp16).

Every shipped network comes as two exports of the same checkpoint: ``difffuse_<name>.onnx`` (fp32) and
``difffuse_<name>_fp16.onnx`` (fp16 weights and activations, fp32 inputs and outputs, the GroupNorm statistics in
fp32; ``python -m export.network --fp16``). ``auto`` gives the CPU the fp32 file (ONNX Runtime's CPU provider has
few fp16 kernels and runs the rest in fp32 behind Casts: slower, no gain) and TensorRT the fp32 file too (it builds
its own fp16 engine from it, ``trt_fp16_enable``). The CUDA provider gets the fp16 file only where a GPU run has
shown, for these very two files, that the fp16 engine's frames stay within 2 grey levels of the fp32 engine's on
real pairs: the record ``stream_fusion/weights/fp16_verified.json`` (written by ``scripts/check_fp16.py`` on a GPU)
names each network's two files by their SHA-256. A re-exported file without a new GPU run falls back to fp32 on
CUDA; so does a network the record does not pass. No record, no fp16 by default: the claim is tied to its evidence.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from stream_fusion import WEIGHTS_DIR
from stream_fusion.errors import StreamFusionError

PRECISIONS = ("auto", "fp32", "fp16")
VERIFIED = WEIGHTS_DIR / "fp16_verified.json"
MAX_LEVELS = 2  # issue #16: the fp16 engine's frames within 2 grey levels of the fp32 engine's
GPU_PROVIDERS = ("tensorrt", "cuda")


def check_precision(precision: str) -> None:
    """The one rule for a precision name, whichever way an engine is built."""
    if precision not in PRECISIONS:
        raise StreamFusionError(f"unknown precision {precision!r}: use auto, fp32 or fp16")


def shipped_files(name: str) -> dict[str, Path]:
    """The fp32 and fp16 exports of the shipped network ``name``."""
    return {"fp32": WEIGHTS_DIR / f"difffuse_{name}.onnx", "fp16": WEIGHTS_DIR / f"difffuse_{name}_fp16.onnx"}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fp16_verified(name: str, record: Path = VERIFIED) -> bool:
    """Whether a GPU provider's run verified ``name``'s shipped fp16 file against its fp32 file (both as they are
    now): every frame within ``MAX_LEVELS`` grey levels, on at least one real pair."""
    if not record.is_file():
        return False
    try:
        entry = json.loads(record.read_text())["networks"][name]
        files = shipped_files(name)
        return (entry["provider"] in GPU_PROVIDERS and entry["frames"] > 0 and entry["max_levels"] <= MAX_LEVELS
                and entry["fp32_sha256"] == sha256(files["fp32"]) and entry["fp16_sha256"] == sha256(files["fp16"]))
    except (KeyError, TypeError, ValueError, OSError):
        return False


def provider_files(name: str, precision: str, record: Path = VERIFIED) -> dict[str, Path]:
    """The file each provider (``tensorrt``, ``cuda``, ``cpu``) runs for the shipped network ``name``. An fp16 file
    that is asked for (explicitly, or by ``auto`` on a verified network) must exist; ``auto`` without one is fp32."""
    check_precision(precision)
    files = shipped_files(name)
    if precision != "auto":
        if not files[precision].is_file():
            raise StreamFusionError(
                f"the shipped {name} model has no {precision} file {files[precision]}: export it with python -m "
                f"export.network --checkpoint {WEIGHTS_DIR / f'difffuse_{name}.pt'} --out {files[precision]}"
                + (" --fp16" if precision == "fp16" else ""))
        return dict.fromkeys(("tensorrt", "cuda", "cpu"), files[precision])
    cuda = "fp16" if files["fp16"].is_file() and fp16_verified(name, record) else "fp32"
    return {"tensorrt": files["fp32"], "cuda": files[cuda], "cpu": files["fp32"]}
