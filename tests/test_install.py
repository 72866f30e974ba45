"""The package as users install it: a wheel (``pip install .``, not ``-e``), run from a folder outside the checkout.

An editable install reads the configs, weights and demo clip from the checkout, so only a real wheel shows whether
everything read at run time ships inside the package.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# What the build reads (pyproject.toml's readme, py-modules and packages): copied, so that the build's own build/
# and egg-info folders never land in the checkout.
BUILD_INPUTS = ("pyproject.toml", "README.md", "run_stream.py", "stream_fusion", "export", "configs")


def test_every_package_folder_is_listed_in_pyproject() -> None:
    """pyproject.toml lists the packages (stream_fusion.configs is mapped onto configs/, which no search would find):
    a new package folder missing from the list would be missing from every wheel."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = {setuptools["package-dir"].get(name, name.replace(".", "/")): name for name in setuptools["packages"]}
    found = {str(init.parent.relative_to(REPO)) for top in ("stream_fusion", "export")
             for init in (REPO / top).rglob("__init__.py")} | {"configs"}
    assert found == set(listed)


def test_the_base_install_carries_no_onnx_runtime_and_the_extras_choose_the_build() -> None:
    """onnxruntime and onnxruntime-gpu install the same module, so neither may be a base dependency: a CPU box took the
    256 MB GPU build. [cpu] is the CPU build, [gpu] the GPU build with its CUDA libraries, [dev] the CPU one."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]

    def names(requirements: list[str]) -> list[str]:
        return [re.split(r"[\s\[<>=;!~]", requirement, maxsplit=1)[0] for requirement in requirements]

    assert not {"onnxruntime", "onnxruntime-gpu"} & set(names(project["dependencies"]))
    extras = project["optional-dependencies"]
    assert names(extras["cpu"]) == ["onnxruntime"]
    assert names(extras["gpu"]) == ["onnxruntime-gpu"] and extras["gpu"][0].startswith("onnxruntime-gpu[cuda,cudnn]")
    assert any(requirement.startswith("stream-fusion[cpu,train") for requirement in extras["dev"])
    assert "onnxruntime-gpu" not in names(extras["dev"] + extras["train"])


def test_a_wheel_install_plays_the_demo_from_another_folder(tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    for name in BUILD_INPUTS:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(REPO / name, source / name)
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
                            "-w", str(tmp_path / "dist"), str(source)], capture_output=True, text=True, timeout=120)
    assert built.returncode == 0, built.stderr
    wheel, = (tmp_path / "dist").glob("stream_fusion-*.whl")

    # A fresh venv, the wheel installed by its own pip with the [cpu] extra, as a CPU deployment box installs it, and
    # no index: the dependencies (numpy, OpenCV, ONNX Runtime...) are this test's environment's, seen through a .pth
    # line after the venv's own site-packages (without running that environment's .pth files, so an editable install
    # of the checkout there cannot be imported). pip resolves the extra against them: what the wheel asks for is
    # what is found there, or the install fails.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    dependencies = dict.fromkeys(sysconfig.get_paths()[key] for key in ("purelib", "platlib"))
    (site / "dependencies.pth").write_text("".join(f"{path}\n" for path in dependencies))
    installed = subprocess.run([str(python), "-m", "pip", "install", "--no-index", f"{wheel}[cpu]"],
                               capture_output=True, text=True, timeout=120)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    assert "Requirement already satisfied: onnxruntime>=" in installed.stdout  # the [cpu] extra is ONNX Runtime

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {key: value for key, value in os.environ.items() if key not in ("DISPLAY", "PYTHONPATH")}
    where = subprocess.run([str(python), "-c", "import run_stream, stream_fusion.config as c; "
                            "print(run_stream.__file__); print(c.__file__); print(c.DEFAULT_CONFIG)"],
                           cwd=elsewhere, env=env, capture_output=True, text=True, timeout=60)
    assert where.returncode == 0, where.stderr
    assert all(Path(line).is_relative_to(site) for line in where.stdout.split()), where.stdout  # not the checkout

    result = subprocess.run([str(venv / "bin" / "stream-fusion"), "--no-display", "--zmq", "none"],
                            cwd=elsewhere, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("summary: 32 frames fused"), result.stdout
    assert "DiffFuseNet-lite" in result.stderr  # the shipped network, from the installed package
