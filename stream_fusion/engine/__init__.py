"""The fusion stage's one interface, and the factory that builds an engine from a ``--model`` / ``--provider`` pair.

Every fuser the pipeline can run (the trained network through ONNX Runtime, or a classical fuser) is a
``FusionEngine``: it takes one registered IR / visible pair as 8-bit arrays and returns one fused 8-bit frame.
The pipeline never knows which one it holds, so swapping the network in changes no pipeline code.

The package, one job per module:

* ``frames``: luma / chroma split and merge, pair checks, padding (numpy and OpenCV only);
* ``classical``: the fusers without a network (the ``classical`` fallback and the two evaluation baselines);
* ``graph``: the model file as ONNX: reading and checking it, and the frame graph the session runs (shared with
  ``export/``);
* ``sessions``: ONNX Runtime sessions: the provider chain, their options, fallbacks said in one line;
* ``precision``: which file of a shipped network each provider runs (fp32, or fp16 where a GPU run verified it);
* ``onnx_engine``: :class:`~stream_fusion.engine.onnx_engine.OnnxEngine`, the network with its device buffers;
* ``remote``: :class:`~stream_fusion.engine.remote.RemoteEngine`, the network on a Triton server
  (``triton://HOST:PORT/NAME``).

Importing this package loads neither onnx nor ONNX Runtime (the network's engine is imported when one is built), so
the alignment check, the calibration and the training data use the frame helpers without a runtime. Nothing here
imports torch: deployment boxes run ONNX only.
"""
from __future__ import annotations

import logging
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol, runtime_checkable

import numpy as np

from stream_fusion import WEIGHTS_DIR
from stream_fusion.engine.classical import ClassicalEngine
from stream_fusion.engine.precision import PRECISIONS, check_precision, provider_files
from stream_fusion.config import require
from stream_fusion.errors import StreamFusionError
from stream_fusion.warp import IrWarp

__all__ = ["DEFAULT_MODEL", "NO_RUNTIME", "PROVIDERS", "SHIPPED_MODELS", "FusionEngine", "check_provider",
           "create_engine", "engine_from_config", "import_onnxruntime", "shipped_models"]

PROVIDERS = {"tensorrt": "TensorrtExecutionProvider", "cuda": "CUDAExecutionProvider", "cpu": "CPUExecutionProvider"}
SHIPPED_MODELS = {name: WEIGHTS_DIR / f"difffuse_{name}.onnx" for name in ("lite", "base", "cdfusion")}
DEFAULT_MODEL = "lite"
# The base install carries no ONNX Runtime: the CPU build and the GPU build are two wheels that install the same
# ``onnxruntime`` module, so they cannot both be dependencies; each is an extra.
NO_RUNTIME = "ONNX Runtime is not installed: install stream-fusion[cpu] or stream-fusion[gpu]"

log = logging.getLogger(__name__)


def shipped_models(text: str) -> list[str]:
    """``lite,base`` (a --models option) -> the names, each a shipped network whose file is there, else one line."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in SHIPPED_MODELS]
    if not names or unknown:
        raise StreamFusionError(f"--models {text!r}: choose among {', '.join(SHIPPED_MODELS)}")
    missing = [str(SHIPPED_MODELS[name]) for name in names if not SHIPPED_MODELS[name].is_file()]
    if missing:
        raise StreamFusionError(f"missing network file(s) {', '.join(missing)}: export them with python -m export.network")
    return names


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


def import_onnxruntime() -> ModuleType:
    """The ``onnxruntime`` module, or a one-line error naming the extras that bring it (the base install has none)."""
    try:
        import onnxruntime
    except ModuleNotFoundError as error:
        if error.name != "onnxruntime":
            raise
        raise StreamFusionError(NO_RUNTIME) from None
    return onnxruntime


def check_provider(provider: str) -> None:
    """The one rule for a provider name, whichever way an engine is built."""
    if provider not in ("auto", *PROVIDERS):
        raise StreamFusionError(f"unknown provider {provider!r}: use auto, tensorrt, cuda or cpu")


def create_engine(
    model: str | Path = "default", provider: str = "auto", *, precision: str = "auto", reconnect_s: float = 10.0,
    **options: Any
) -> FusionEngine:
    """The engine for a ``--model`` / ``--provider`` pair, as the config and CLIs spell them.

    ``model``: ``default`` (the shipped lite network), ``lite``, ``base``, ``cdfusion`` (the colour network),
    ``classical``, a path to an ``.onnx`` file, or ``triton://HOST:PORT/NAME``, a network on a fusion server (which
    picks its own provider; ``reconnect_s``: how long a lost server is retried). ``options`` go to
    :class:`~stream_fusion.engine.onnx_engine.OnnxEngine` (``resolution=(w, h)``, ``cache_dir``, ``threads``,
    ``device_id``, ``cuda_graph``, ``warmup``); the remote engine takes ``resolution``, the classical engine none.

    ``precision`` (``auto``, ``fp32``, ``fp16``): which export of a shipped network runs (``engine.precision``).
    ``auto``: fp32 on the CPU and under TensorRT (which builds its own fp16 engine from it), fp16 under CUDA where a
    GPU run verified the fp16 file's frames (:mod:`stream_fusion.engine.precision`). A path runs as it was exported;
    ``fp32`` / ``fp16`` with a path only checks that it is that export.
    """
    check_provider(provider)
    check_precision(precision)
    name = str(model)
    if name == "classical":
        return ClassicalEngine()
    if name.startswith("triton://"):
        from stream_fusion.engine.remote import RemoteEngine  # here: tritonclient loads only when a server is named

        if provider != "auto":
            log.warning("--provider %s is ignored with %s: the server chooses its own", provider, name)
        return RemoteEngine(name, reconnect_s=reconnect_s, resolution=options.get("resolution"))
    from stream_fusion.engine.onnx_engine import OnnxEngine  # here: ONNX Runtime loads only when a network is wanted

    if name == "default":
        name = DEFAULT_MODEL
    if name in SHIPPED_MODELS:
        path = SHIPPED_MODELS[name]
        if not path.is_file():
            raise StreamFusionError(
                f"the shipped {name} model {path} is missing: export it with python -m export.network "
                f"--checkpoint stream_fusion/weights/difffuse_{name}.pt --out {path}, or use --model classical"
            )
        return OnnxEngine(provider_files(name, precision), provider, **options)
    if precision != "auto":  # checked before a session is built: the file's own metadata says what it is
        from stream_fusion.engine.graph import model_metadata, read_model

        exported = model_metadata(read_model(Path(name))).get("precision", "fp32")
        if exported != precision:
            raise StreamFusionError(f"{name} is an {exported} export, not {precision}: drop the precision, or "
                                    f"export the network with{'' if precision == 'fp16' else 'out'} --fp16")
    return OnnxEngine(Path(name), provider, **options)


def engine_from_config(
    engine_cfg: dict[str, Any], size: tuple[int, int] | None, ir_size: tuple[int, int] | None = None,
    reconnect_s: float = 10.0,
) -> FusionEngine:
    """The engine of the ``engine:`` section (``model``, ``provider``, ``precision``, ``cuda_graph``), warmed up at the
    stream's frame sizes when they are known (``ir_size``: the IR camera's, which the in-session calibration warp takes
    as it comes). ``reconnect_s``: how long a remote engine retries a lost server (the stream's ``source.reconnect_s``).
    ``cuda_graph``: null (on under TensorRT / CUDA whenever the frame size is known), true or false. A CUDA graph is
    captured for one frame size, so without ``size`` there is none, said once by the engine (or here, when asked for
    explicitly)."""
    graph = engine_cfg["cuda_graph"]
    precision = engine_cfg.get("precision", "auto")
    require(precision in PRECISIONS, "engine.precision", precision, "auto, fp32 or fp16 (auto: fp16 under CUDA "
            "where a GPU run verified the fp16 file, else fp32)")
    require(graph in (None, True, False), "engine.cuda_graph", graph, "true, false or null (null: on under TensorRT "
            "and CUDA whenever the frame size is known)")
    options: dict[str, Any] = {"resolution": size} if size else {}
    if size and ir_size:
        options["ir_resolution"] = ir_size
    remote = str(engine_cfg["model"]).startswith("triton://")
    if remote:
        options = {"resolution": size} if size else {}
    elif engine_cfg["model"] != "classical":
        if graph is False:
            options["cuda_graph"] = False
        elif graph and not size:
            log.warning("engine.cuda_graph: the visible source does not report its frame size, so no CUDA graph")
            options["cuda_graph"] = False
    if not remote and engine_cfg["model"] != "classical":
        options["precision"] = precision
    return create_engine(engine_cfg["model"], engine_cfg["provider"], reconnect_s=reconnect_s, **options)
