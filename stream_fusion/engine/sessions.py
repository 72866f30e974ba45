"""ONNX Runtime sessions: the provider chain (TensorRT, CUDA, CPU), their options, and a clear word on fallbacks.

onnxruntime-gpu lists TensorRT and CUDA as available even where their libraries are missing, then quietly runs on the
CPU after pages of log: :func:`open_session` captures that log, reads back the provider that really runs, and says
in one short line that it fell back; why each GPU provider failed (a missing libcublas...) is said when asked for
with ``STREAM_FUSION_VERBOSE=1``. A CPU-only build of ONNX Runtime says nothing: the CPU is all it has.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from stream_fusion.engine import PROVIDERS, import_onnxruntime
from stream_fusion.engine.tensorrt import preload_tensorrt
from stream_fusion.errors import StreamFusionError, first_line

ort = import_onnxruntime()

log = logging.getLogger(__name__)

VERBOSE_ENV = "STREAM_FUSION_VERBOSE"  # set (to anything but 0 or empty): say why each GPU provider did not load


def verbose() -> bool:
    """Whether the user asked for the details of a provider fallback (``STREAM_FUSION_VERBOSE=1``)."""
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0")


NOT_IN_BUILD = "not in this onnxruntime build"
PROVIDER_LABELS = {"tensorrt": "TensorRT", "cuda": "CUDA", "cpu": "CPU"}


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
            failures.append(f"{name}: {NOT_IN_BUILD}")
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
            _say_fallback(name, failures)
            return session, name
        failures.append(f"{name}: {reason}")
    if provider == "auto":
        raise StreamFusionError(f"no onnxruntime provider could load the model ({'; '.join(failures)})")
    raise StreamFusionError(
        f"provider {provider} is unavailable here ({failures[-1].split(': ', 1)[1]}); use --provider auto or cpu"
    )


def _say_fallback(name: str, failures: list[str]) -> None:
    """One line when ``auto`` runs on a later provider than the first it tried: short by default (every CPU run on a
    box with the GPU build but no GPU would otherwise repeat a library's file-not-found), the reasons with
    ``STREAM_FUSION_VERBOSE=1``. Providers this build does not have are no news and are said only then."""
    tried = [failure.split(":", 1)[0] for failure in failures if not failure.endswith(NOT_IN_BUILD)]
    if verbose() and failures:
        log.warning("onnxruntime: running on %s; unavailable: %s", name.upper(), "; ".join(failures))
    elif tried:
        log.warning("onnxruntime: running on %s: %s did not load (%s=1 says why)", name.upper(),
                    " and ".join(PROVIDER_LABELS[provider] for provider in tried), VERBOSE_ENV)


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
    # this narrow network (docs/engine.md, "Why EXTENDED on the CPU").
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


def _try_session(
    model: bytes, options: ort.SessionOptions, chain: list[tuple[str, dict[str, Any]]], *, gpu: bool
) -> tuple[ort.InferenceSession | None, str]:
    """Open one session without onnxruntime's own silent fallback; on failure, the reason in a few words."""
    if not gpu:
        try:
            return ort.InferenceSession(model, options, providers=chain, enable_fallback=0), ""
        except Exception as error:  # ORT raises its own Fail / InvalidGraph types
            return None, first_line(error)
    captured: list[str] = []
    problem = None
    with _capture_output(captured):
        try:
            if hasattr(ort, "preload_dlls"):
                ort.preload_dlls()  # CUDA / cuDNN from the nvidia-* pip packages, where installed
            if chain[0][0] == PROVIDERS["tensorrt"]:
                problem = preload_tensorrt()  # TensorRT's pip wheel, which preload_dlls leaves out
            session = None if problem else ort.InferenceSession(model, options, providers=chain, enable_fallback=0)
        except Exception as error:
            session = None
            captured.append(str(error))
    if problem:
        return None, problem
    text = "\n".join(captured)
    if session is not None and session.get_providers()[0] == chain[0][0]:
        return session, ""
    match = re.search(r"with error: ([^\n]+)", text) or re.search(r"(Failed to create \w+)", text)
    return None, match.group(1).strip() if match else first_line(text or "its libraries did not load")


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
