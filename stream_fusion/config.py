"""Plain-data configuration: YAML files of nested dicts, checked against the defaults they override.

The defaults file is the schema: a key that is not in it is unknown, and a value must have the type of the default
(``null`` defaults accept a string or a number). Errors name the dotted key, so ``engine.provder`` or
``publish.format=3`` fail with a message that says exactly what to fix.
"""
from __future__ import annotations

import argparse
import copy
import math
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from stream_fusion import PACKAGE_DIR
from stream_fusion.errors import StreamFusionError


def _config_dir() -> Path:
    """The configs: the ``stream_fusion.configs`` package of an install (a wheel's own copy; an editable install's maps
    onto the repository's configs/ folder), or that folder itself in a checkout run without installing (the GPU job,
    the scripts run with the checkout on sys.path)."""
    try:
        return Path(str(resources.files("stream_fusion.configs")))
    except ModuleNotFoundError:
        return PACKAGE_DIR.parent / "configs"


CONFIG_DIR = _config_dir()
DEFAULT_CONFIG = CONFIG_DIR / "default.yaml"


def load_yaml(path: str | Path, kind: str = "config") -> dict[str, Any]:
    """Read a YAML mapping, with one-line errors for a missing, unreadable or malformed file (named a ``kind``
    file in them: a config, a calibration)."""
    path = Path(path)
    if not path.is_file():
        raise StreamFusionError(f"{kind} file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        problem = " ".join(str(getattr(error, "problem", error)).split())  # PyYAML's may span lines
        raise StreamFusionError(f"malformed {kind} {path}{where}: {problem}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise StreamFusionError(f"cannot read {kind} {path}: {error}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise StreamFusionError(f"malformed {kind} {path}: expected a mapping of keys, got {type(data).__name__}")
    return data


def _check_type(key: str, default: Any, value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        # inf and nan pass every "> 0" rule, then hang or poison what uses them (a writer at infinite fps never
        # returns): no key of any config means them.
        raise StreamFusionError(f"config key {key!r} must be a finite number, got {value}")
    if value is None and default is not None:  # a key with a typed default needs a value of that type
        raise StreamFusionError(f"config key {key!r} must be {type(default).__name__}, got null")
    if default is None:
        if isinstance(value, (dict, list)):
            raise StreamFusionError(f"config key {key!r} must be a single value, got {type(value).__name__}")
        return value
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(default, dict):
        ok = isinstance(value, dict)
    elif isinstance(default, list):
        ok = isinstance(value, list)
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise StreamFusionError(
            f"config key {key!r} must be {type(default).__name__}, got {type(value).__name__} ({value!r})"
        )
    return value


def merge(defaults: dict[str, Any], override: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A copy of ``defaults`` with ``override`` applied; unknown keys and wrong types are errors naming the key."""
    result = copy.deepcopy(defaults)
    for name, value in override.items():
        key = f"{prefix}{name}"
        if name not in defaults:
            known = ", ".join(sorted(f"{prefix}{k}" for k in defaults))
            raise StreamFusionError(f"unknown config key {key!r} (known: {known})")
        default = defaults[name]
        if isinstance(default, dict) and value is None:  # a section left empty (every key commented out)
            continue
        if isinstance(default, dict) and isinstance(value, dict):
            result[name] = merge(default, value, prefix=f"{key}.")
        else:
            result[name] = _check_type(key, default, value)
    return result


def require(ok: bool, key: str, value: Any, rule: str) -> None:
    """A value of the right type can still be meaningless (a queue of 0 frames): one line naming the key. Each stage
    checks its own section with it, in its ``from_config``."""
    if not ok:
        raise StreamFusionError(f"config key {key!r} must be {rule}, got {value!r}")


def positive_number(text: str) -> float:
    """An argparse type for seconds, rates and budgets: a finite number above 0. ``float`` alone takes inf and nan,
    which pass every "> 0" rule and then run a benchmark forever or drop every frame."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number above 0, got {text!r}")
    return value


def parse_override(text: str) -> dict[str, Any]:
    """``"engine.provider=cpu"`` -> ``{"engine": {"provider": "cpu"}}``; the value is read as YAML (1, true, null)."""
    if "=" not in text:
        raise StreamFusionError(f"override {text!r} must look like key=value, e.g. engine.provider=cpu")
    key, raw = text.split("=", 1)
    if not key or any(not part for part in key.split(".")):
        raise StreamFusionError(f"override {text!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw else None
    except yaml.YAMLError:
        value = raw
    return nested(key, value)


def nested(key: str, value: Any) -> dict[str, Any]:
    """``("engine.provider", "cpu")`` -> ``{"engine": {"provider": "cpu"}}``."""
    root: dict[str, Any] = {}
    node = root
    *parents, last = key.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value
    return root


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    defaults_path: str | Path = DEFAULT_CONFIG,
) -> dict[str, Any]:
    """Defaults, then the user's YAML file (if any), then ``key=value`` overrides, each checked against the defaults."""
    config = load_yaml(defaults_path)
    if path is not None:
        config = merge(config, load_yaml(path))
    for text in overrides or []:
        config = merge(config, parse_override(text))
    return config


# An option of a command that sets one config key: (flag, dotted key, argparse keywords with a "help").
Option = tuple[str, str, dict[str, Any]]


def add_config_options(
    parser: argparse.ArgumentParser, options: list[Option], config_help: str, set_example: str,
    defaults_path: str | Path = DEFAULT_CONFIG,
) -> None:
    """The override path every command shares: each option as a flag naming its key and its default (read from
    ``defaults_path``, the file that sets it: --help and the run cannot disagree), then ``--config YAML`` and
    ``--set KEY=VALUE`` (repeatable). Read back with :func:`config_from_args`."""
    defaults = load_yaml(defaults_path)
    for flag, key, kwargs in options:
        value: Any = defaults
        for part in key.split("."):
            value = value[part]
        shown = "none" if value is None else yaml.safe_dump(value, default_flow_style=True).strip().removesuffix(
            "...").strip()
        help_text = f"{kwargs['help']} [{key}, default {shown}]".replace("%", "%%")
        parser.add_argument(flag, dest=key, default=None, **{**kwargs, "help": help_text})
    parser.add_argument("--config", metavar="YAML", help=config_help)
    parser.add_argument("--set", metavar="KEY=VALUE", action="append", default=[], dest="overrides",
                        help=f"override any config key, e.g. --set {set_example} (repeatable)")


def config_from_args(
    args: argparse.Namespace, options: list[Option], defaults_path: str | Path = DEFAULT_CONFIG
) -> dict[str, Any]:
    """Defaults, then ``--config``, then the named options, then ``--set``: later wins, every step type-checked."""
    config = load_config(args.config, defaults_path=defaults_path)
    for _, key, _ in options:
        value = getattr(args, key)
        if value is not None:
            config = merge(config, nested(key, value))
    for text in args.overrides:
        config = merge(config, parse_override(text))
    return config
