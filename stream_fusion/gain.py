"""16-bit thermal frames to the 8 bits the engines fuse: an automatic gain that holds still, or a fixed range.

Radiometric thermal cores deliver 14-bit counts in uint16 (Y16 over UVC, 16-bit PNG/TIFF exports), of which a scene
uses a narrow band that moves with the weather. Two mappings, both linear, ``LO`` -> 0 and ``HI`` -> 255:

* automatic (the default): ``LO`` / ``HI`` follow low and high percentiles of each frame (1st / 99th by default,
  robust to a few dead or hot pixels), smoothed over time: an exponential moving average (``smoothing``) evens out
  sensor noise, and each end moves by at most ``max_step`` of the current span per frame. Without that a hot
  object entering the frame would re-stretch the whole image at once and the background would jump in brightness
  ("gain pumping"); with it every grey of the scene changes by at most ``255 * max_step`` levels per frame (5 at the
  default 0.02) while the gain still adapts, within seconds, to a scene that really changed.
* fixed (``--ir-range LO:HI``, ``gain.range``): the same counts always give the same grey, for a rig whose cameras
  and scene are known, or for measurements that must compare frames.

8-bit frames pass through unchanged. The gain is stateful (one per IR stream), built from the ``gain:`` section.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from stream_fusion.config import require
from stream_fusion.errors import StreamFusionError

LEVELS = 1 << 16  # every uint16 value has its entry in the lookup table
SAMPLE_STRIDE = 4  # percentiles over every 4th pixel of every 4th row: the same answer at a 16th of the work


def parse_range(text: Any, key: str = "gain.range") -> tuple[float, float]:
    """``"LO:HI"`` -> (LO, HI): finite numbers with LO < HI, else one line naming ``key``."""
    parts = str(text).split(":")
    try:
        low, high = (float(part) for part in parts) if len(parts) == 2 else (math.nan, math.nan)
    except ValueError:
        low, high = math.nan, math.nan
    if not (math.isfinite(low) and math.isfinite(high)):
        hint = "" if isinstance(text, str) else " (quote it in YAML: \"7500:9000\")"
        raise StreamFusionError(f"config key '{key}' must be LO:HI with two finite numbers (e.g. 7500:9000), "
                                f"got {text!r}{hint}")
    if low >= high:
        raise StreamFusionError(f"config key '{key}' must have LO < HI, got {text!r}")
    return low, high


def lookup_table(low: float, high: float) -> np.ndarray:
    """The uint16 -> uint8 table of the linear map ``low`` -> 0, ``high`` -> 255 (rounded, clipped)."""
    levels = np.arange(LEVELS, dtype=np.float64)
    return np.clip(np.rint((levels - low) * (255.0 / (high - low))), 0, 255).astype(np.uint8)


class IrGain:
    """Maps 16-bit frames to 8 bits: fixed ``range`` when given, else the smoothed percentile gain."""

    def __init__(self, fixed_range: tuple[float, float] | None = None, *, low_percentile: float = 1.0,
                 high_percentile: float = 99.0, smoothing: float = 0.1, max_step: float = 0.02,
                 min_span: float = 64.0) -> None:
        self.fixed_range = fixed_range
        self.percentiles = (low_percentile, high_percentile)
        self.smoothing = smoothing
        self.max_step = max_step
        self.min_span = min_span
        self.low: float | None = fixed_range[0] if fixed_range else None
        self.high: float | None = fixed_range[1] if fixed_range else None
        self._table = lookup_table(*fixed_range) if fixed_range else None

    @classmethod
    def from_config(cls, gain_cfg: dict[str, Any]) -> IrGain:
        """From the ``gain:`` section: ``range`` ("LO:HI" or null for automatic), ``low_percentile``,
        ``high_percentile``, ``smoothing`` (EMA weight of the newest frame, (0, 1]), ``max_step`` (fraction of the
        span an end may move per frame, (0, 1]), ``min_span`` (counts)."""
        low_p, high_p = gain_cfg["low_percentile"], gain_cfg["high_percentile"]
        require(0 <= low_p < high_p <= 100, "gain.low_percentile / gain.high_percentile", (low_p, high_p),
                "0 <= low < high <= 100")
        for key in ("smoothing", "max_step"):
            require(0 < gain_cfg[key] <= 1, f"gain.{key}", gain_cfg[key], "in (0, 1]")
        require(gain_cfg["min_span"] > 0, "gain.min_span", gain_cfg["min_span"], "> 0")
        fixed = parse_range(gain_cfg["range"]) if gain_cfg["range"] is not None else None
        return cls(fixed, low_percentile=low_p, high_percentile=high_p, smoothing=gain_cfg["smoothing"],
                   max_step=gain_cfg["max_step"], min_span=gain_cfg["min_span"])

    @property
    def description(self) -> str:
        if self.fixed_range:
            return f"fixed {self.fixed_range[0]:g}:{self.fixed_range[1]:g}"
        return f"automatic (p{self.percentiles[0]:g}-p{self.percentiles[1]:g})"

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """``image`` as uint8: unchanged when it already is, mapped when uint16; other depths are an error."""
        if image.dtype == np.uint8:
            return image
        if image.dtype != np.uint16:
            raise StreamFusionError(f"IR frames are {image.dtype}: 8- or 16-bit only")
        if self.fixed_range is None:
            self._follow(image)
        return self._table[image]

    def _follow(self, image: np.ndarray) -> None:
        """Move LO / HI toward this frame's percentiles: by ``smoothing`` of the way, at most ``max_step`` of the
        span (the first frame sets them)."""
        sample = image[::SAMPLE_STRIDE, ::SAMPLE_STRIDE]
        low, high = (float(v) for v in np.percentile(sample, self.percentiles))
        if self.low is None or self.high is None:
            self.low, self.high = low, high
        else:
            limit = self.max_step * max(self.high - self.low, self.min_span)
            self.low += float(np.clip(self.smoothing * (low - self.low), -limit, limit))
            self.high += float(np.clip(self.smoothing * (high - self.high), -limit, limit))
        # A flat frame (lens cap, uniform wall) must not stretch sensor noise over the whole grey range.
        centre, span = (self.low + self.high) / 2, max(self.high - self.low, self.min_span)
        self._table = lookup_table(centre - span / 2, centre + span / 2)
