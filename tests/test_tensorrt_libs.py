"""TensorRT from NVIDIA's pip wheel: the engine loads its libraries itself, or says which pip package fixes it."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import onnxruntime

from stream_fusion.engine.tensorrt import LIBRARIES, PIP_HINT, preload_tensorrt, wheel_folder


def real_shared_library() -> Path:
    """A real ELF shared library that exists wherever the tests run (onnxruntime's own provider bridge)."""
    return Path(onnxruntime.__file__).parent / "capi" / "libonnxruntime_providers_shared.so"


def loaded_paths() -> str:
    return Path("/proc/self/maps").read_text()


def test_loads_every_library_from_the_wheel_folder(tmp_path: Path) -> None:
    for name in LIBRARIES:
        shutil.copy(real_shared_library(), tmp_path / f"{name}.10")
    assert preload_tensorrt(tmp_path) is None
    maps = loaded_paths()
    assert all(str(tmp_path / f"{name}.10") in maps for name in LIBRARIES)


def test_tensorrt_11_wheel_names_the_right_package(tmp_path: Path) -> None:
    for name in LIBRARIES:
        shutil.copy(real_shared_library(), tmp_path / f"{name}.11")
    problem = preload_tensorrt(tmp_path)
    assert problem is not None
    assert "libnvinfer.so.10 not in" in problem and "libnvinfer.so.11" in problem and PIP_HINT in problem
    assert str(tmp_path / "libnvinfer.so.11") not in loaded_paths()


def test_a_broken_library_is_named_not_raised(tmp_path: Path) -> None:
    for name in LIBRARIES:
        (tmp_path / f"{name}.10").write_bytes(b"not an ELF file")
    problem = preload_tensorrt(tmp_path)
    assert problem is not None and problem.startswith("libnvinfer.so.10 did not load (")


def test_wheel_folder_is_found_without_importing_it(tmp_path: Path, monkeypatch) -> None:
    package = tmp_path / "tensorrt_libs"
    package.mkdir()
    (package / "__init__.py").write_text("raise RuntimeError('imported')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert wheel_folder() == package
    assert "tensorrt_libs" not in sys.modules
