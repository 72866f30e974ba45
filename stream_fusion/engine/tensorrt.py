"""TensorRT's libraries from NVIDIA's pip wheels, loaded so that ONNX Runtime's TensorRT provider finds them.

onnxruntime-gpu's ``preload_dlls()`` loads CUDA and cuDNN from the ``nvidia-*`` wheels but not TensorRT: its
TensorRT provider library links ``libnvinfer.so.10`` and ``libnvonnxparser.so.10`` by name, and the dynamic loader
does not look inside site-packages, so a ``pip install tensorrt-cu13-libs`` alone leaves TensorRT "unavailable".
Loading those libraries first, globally, satisfies the provider's links by their soname: no ``LD_LIBRARY_PATH``
for the user to set.
"""
from __future__ import annotations

import ctypes
import importlib.util
from pathlib import Path

# onnxruntime-gpu 1.31's TensorRT provider links TensorRT 10 (libnvinfer.so.10); TensorRT 11's wheels carry .so.11.
TENSORRT_MAJOR = 10
# In load order: the ONNX parser and the plugins link libnvinfer itself.
LIBRARIES = ("libnvinfer.so", "libnvinfer_plugin.so", "libnvonnxparser.so")
PIP_HINT = f"pip install 'tensorrt-cu13-libs>={TENSORRT_MAJOR}.15,<{TENSORRT_MAJOR + 1}'"


def wheel_folder() -> Path | None:
    """The folder of the ``tensorrt_libs`` package (NVIDIA's ``tensorrt-cu*-libs`` wheels), found without importing
    it; None where it is not installed."""
    spec = importlib.util.find_spec("tensorrt_libs")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def preload_tensorrt(folder: Path | None = None) -> str | None:
    """Load TensorRT's libraries from the pip wheel's folder (``folder``, default :func:`wheel_folder`) into the
    process, globally. Returns None when they loaded (or no wheel is installed: a system TensorRT on the loader's
    path may still serve), else the reason in a few words, naming the pip packages that fix it."""
    folder = folder if folder is not None else wheel_folder()
    if folder is None:
        return None
    for name in LIBRARIES:
        path = folder / f"{name}.{TENSORRT_MAJOR}"
        if not path.exists():
            found = sorted(p.name for p in folder.glob(f"{name}.*"))
            held = f"it holds {', '.join(found)}" if found else "it has none"
            return f"{path.name} not in {folder} ({held}): {PIP_HINT}"
        try:
            ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
        except OSError as error:
            return f"{path.name} did not load ({str(error).splitlines()[0]})"
    return None
