"""``--record out.mp4``: the fused stream written to a video file.

The writer opens on the first frame (its size is only known then) and is always released at the end, also after
Ctrl-C or an error, so the file is finalised and playable.
"""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np

from stream_fusion.errors import StreamFusionError

FOURCC = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "mp4v"}


def check_output_path(path: str | Path, suffixes: Iterable[str], failure: str) -> Path:
    """Fail before the stream starts if an output file cannot be written there (``failure``: "cannot record to")."""
    path = Path(path).expanduser()
    if path.is_dir():
        example = next((suffix for suffix in (".mp4", ".png") if suffix in suffixes), min(suffixes))
        raise StreamFusionError(f"{failure} {path}: it is a folder; name a file in it, e.g. {path / 'fused'}{example}")
    if path.suffix.lower() not in suffixes:
        raise StreamFusionError(f"{failure} {path}: use one of {', '.join(sorted(suffixes))}")
    if not path.parent.is_dir():
        raise StreamFusionError(f"{failure} {path}: folder {path.parent} does not exist")
    return path


def check_record_path(path: str | Path) -> Path:
    """Fail before the stream starts if the recording cannot be written there."""
    return check_output_path(path, FOURCC, "cannot record to")


class Recorder:
    """Writes BGR frames (gray frames are expanded) at a fixed rate.

    A replay records every fused frame once. A live stream fuses fewer frames than its cameras deliver when fusion is
    the slower part, so live frames come with their capture time and each is held (repeated) until the next one's
    slot: the recording then plays at the speed of the scene, not faster.
    """

    def __init__(self, path: str | Path, fps: float) -> None:
        self.path = check_record_path(path)
        self.fps = fps
        self.frames = 0  # frames in the file, repeats included
        self._writer: cv2.VideoWriter | None = None
        self._t0: float | None = None
        self._last: np.ndarray | None = None

    @classmethod
    def from_config(cls, path: str | None, fps: float | None) -> Recorder | None:
        """From the ``record:`` key: a path, or null for no recording; ``fps``: the stream's rate (25 when unknown)."""
        return cls(path, fps or 25.0) if path else None

    def write(self, image: np.ndarray, t_capture: float | None = None) -> None:
        """Append ``image``; with ``t_capture`` (monotonic seconds), first hold the previous frame until its slot."""
        if image.ndim == 2:
            image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
        if self._writer is None:
            height, width = image.shape[:2]
            fourcc = cv2.VideoWriter_fourcc(*FOURCC[self.path.suffix.lower()])
            self._writer = cv2.VideoWriter(str(self.path), fourcc, self.fps, (width, height))
            if not self._writer.isOpened():
                raise StreamFusionError(f"cannot write video {self.path} (no encoder for {self.path.suffix}?)")
        if t_capture is not None:
            if self._t0 is None:
                self._t0 = t_capture
            slot = round((t_capture - self._t0) * self.fps)
            while self._last is not None and self.frames < slot:
                self._writer.write(self._last)
                self.frames += 1
            self._last = image
        self._writer.write(image)
        self.frames += 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None
