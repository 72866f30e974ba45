"""Presets and checkpoint files.

A checkpoint is ``torch.save`` of a plain dict: a format tag, the preset dict (so the file rebuilds its own
network), the fp32 state_dict and training metadata (epochs, data, git commit, date). It loads with
``weights_only=True``: a checkpoint is data, never code.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from stream_fusion.config import CONFIG_DIR, load_yaml
from stream_fusion.errors import StreamFusionError
from stream_fusion.training.model.cdfusion import PRESET_KEYS as CDFUSION_KEYS
from stream_fusion.training.model.cdfusion import CDFusionNet
from stream_fusion.training.model.net import PRESET_DEFAULTS, PRESET_KEYS, DiffFuseNet

# A preset's ``model`` key picks the network; presets without one (lite, base, older checkpoints) are DiffFuseNet.
NETWORKS: dict[str, tuple[type[nn.Module], dict[str, type]]] = {
    "difffuse": (DiffFuseNet, PRESET_KEYS),
    "cdfusion": (CDFusionNet, CDFUSION_KEYS),
}

FORMAT = "stream_fusion.difffusenet/1"
PRESET_DIR = CONFIG_DIR / "presets"


def load_preset(name: str) -> dict[str, Any]:
    """The plain data of ``configs/presets/<name>.yaml``, or of a YAML file path (for custom or test presets)."""
    if name.endswith((".yaml", ".yml")):
        return load_yaml(name)
    path = PRESET_DIR / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))) or "none"
        raise StreamFusionError(f"unknown model preset '{name}' (known: {known})")
    return load_yaml(path)


def check_preset(preset: dict[str, Any]) -> dict[str, Any]:
    """Every key present with the right type, no unknown keys: errors name the key. Keys added after
    checkpoints shipped (``PRESET_DEFAULTS``) may be absent and mean the old behaviour; they stay absent in the
    result, so an old checkpoint's preset still compares equal to its rebuilt network's (warm starts, resumes)."""
    network = preset.get("model", "difffuse")
    if network not in NETWORKS:
        raise StreamFusionError(f"unknown model '{network}' in preset (known: {', '.join(NETWORKS)})")
    keys = NETWORKS[network][1]
    unknown = sorted(set(preset) - set(keys) - {"model"})
    if unknown:
        raise StreamFusionError(f"unknown model preset key '{unknown[0]}' (known: {', '.join(keys)})")
    checked = {}
    for key, kind in keys.items():
        if key not in preset and network == "difffuse" and key in PRESET_DEFAULTS:
            continue
        if key not in preset:
            raise StreamFusionError(f"model preset is missing key '{key}'")
        value = preset[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise StreamFusionError(f"model preset key '{key}' must be {kind.__name__}, got {value!r}")
        checked[key] = value
    return checked


def build_model(preset: str | dict[str, Any]) -> nn.Module:
    """A freshly initialised network from a preset name (``lite``, ``base``, ``cdfusion``) or a preset dict."""
    cfg = check_preset(load_preset(preset) if isinstance(preset, str) else preset)
    try:
        return NETWORKS[cfg.get("model", "difffuse")][0](cfg)
    except ValueError as error:
        raise StreamFusionError(f"invalid model preset '{cfg['name']}': {error}") from None


def save_checkpoint(path: str | Path, model: nn.Module, preset_cfg: dict[str, Any], extra: dict[str, Any]) -> None:
    """Write a self-describing checkpoint (atomically: a crash mid-write never leaves a truncated file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu", torch.float32).clone() for k, v in model.state_dict().items()}
    payload = {"format": FORMAT, "preset": dict(preset_cfg), "state_dict": state, "meta": dict(extra)}
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The raw checkpoint dict (preset, state_dict, meta), with one-line errors for missing or foreign files."""
    path = Path(path)
    if not path.is_file():
        raise StreamFusionError(f"model checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - torch.load raises many unrelated types on garbage input
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise StreamFusionError(f"{path} is not a readable checkpoint ({reason[:120]})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise StreamFusionError(f"{path} is not a stream_fusion DiffFuseNet checkpoint (expected format {FORMAT})")
    return payload


def load_checkpoint(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """The network in eval mode and its preset dict."""
    payload = read_checkpoint(path)
    model = build_model(payload["preset"])
    try:
        model.load_state_dict(payload["state_dict"])
    except (RuntimeError, TypeError, AttributeError) as error:
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise StreamFusionError(f"{path} does not match its preset '{payload['preset'].get('name')}': {first}") from None
    return model.eval(), dict(payload["preset"])
