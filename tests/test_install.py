"""The package as users install it: a wheel (``pip install .``, not ``-e``), run from a folder outside the checkout.

An editable install reads the configs, weights and demo clip from the checkout, so only a real wheel shows whether
everything read at run time ships inside the package.
"""
from __future__ import annotations

import os
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

    # A fresh venv, the wheel installed by its own pip; the dependencies (numpy, OpenCV, ONNX Runtime...) come from
    # this test's environment through a .pth line, after the venv's own site-packages and without running that
    # environment's .pth files, so an editable install of the checkout there cannot be imported.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    installed = subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)],
                               capture_output=True, text=True, timeout=120)
    assert installed.returncode == 0, installed.stderr
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    dependencies = dict.fromkeys(sysconfig.get_paths()[key] for key in ("purelib", "platlib"))
    (site / "dependencies.pth").write_text("".join(f"{path}\n" for path in dependencies))

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
