"""Alignment check between pairing and fusion (placeholder interface; the full check lands with its own issue).

``AlignmentMonitor.process`` takes a registered pair and returns the IR to fuse and an ``Alignment`` record for the
frame's metadata. This placeholder measures nothing and reports status ``unknown``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class Alignment:
    """Residual misalignment of one pair: IR shift (px) that would register it to the visible frame."""

    dx: float
    dy: float
    confidence: float
    status: str  # "ok" | "misaligned" | "unknown"
    measured: bool  # False when this pair was not measured (the check runs on every Nth pair)

    def as_dict(self) -> dict[str, float | str | bool]:
        return asdict(self)


class AlignmentMonitor:
    """Per-stream alignment check with a policy: ``warn`` reports, ``correct`` shifts the IR, ``drop`` skips the pair."""

    def __init__(self, policy: str = "warn") -> None:
        self.policy = policy

    def process(self, ir: np.ndarray, vis: np.ndarray) -> tuple[np.ndarray | None, Alignment]:
        """The IR to fuse (None: drop this pair) and the alignment record."""
        return ir, Alignment(0.0, 0.0, 0.0, "unknown", False)
