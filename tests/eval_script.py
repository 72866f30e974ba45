"""Scripts of ``scripts/`` loaded as modules, for the tests that run them (the evaluation's, the route check's)."""
from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[1]


def load_script(name: str, folder: str = "scripts") -> ModuleType:
    """FOLDER/NAME.py is a script, not a package module: a fresh module from its file on every call, so one
    test's monkeypatching never reaches another's."""
    spec = importlib.util.spec_from_file_location(name, REPO / folder / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_eval_all() -> ModuleType:
    return load_script("eval_all")
