"""What the evaluation tests share: ``scripts/eval_all.py`` loaded as a module."""
from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[1]


def load_eval_all() -> ModuleType:
    """scripts/eval_all.py is a script, not a package module: a fresh module from its file on every call, so one
    test's monkeypatching never reaches another's."""
    spec = importlib.util.spec_from_file_location("eval_all", REPO / "scripts" / "eval_all.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
