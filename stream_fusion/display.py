"""The on-screen view: a mosaic IR | visible | fused with a heads-up line (fps, latency, alignment state).

``make_mosaic`` is pure (also used for ``--snapshot``); ``Display`` owns the window. A machine without a display
(a server, a container, ssh without X) gets one clear warning and no window, never a crash: Qt aborts the whole
process when it cannot reach a display, so the check happens before any window is created.
"""
from __future__ import annotations

import logging
import os
import socket
import sys
from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:
    from stream_fusion.engine import FusionEngine
    from stream_fusion.sync import PairedFrame

log = logging.getLogger(__name__)

QUIT_KEYS = {ord("q"), ord("Q"), 27}  # q or Esc
HUD_HEIGHT = 26
WHITE = (255, 255, 255)
FONT = cv2.FONT_HERSHEY_SIMPLEX


def to_bgr(image: np.ndarray) -> np.ndarray:
    """3-channel view of a gray or colour frame, so the three tiles can sit side by side."""
    if image.ndim == 2 or image.shape[2] == 1:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    return image


def _label(tile: np.ndarray, text: str) -> None:
    cv2.putText(tile, text, (8, 20), FONT, 0.55, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(tile, text, (8, 20), FONT, 0.55, WHITE, 1, cv2.LINE_AA)


def make_mosaic(ir: np.ndarray, vis: np.ndarray, fused: np.ndarray, hud: str = "") -> np.ndarray:
    """IR | visible | fused on the visible grid, each labelled, with ``hud`` on a strip underneath."""
    height, width = vis.shape[:2]
    tiles = []
    for name, image in (("IR", ir), ("visible", vis), ("fused", fused)):
        tile = to_bgr(image)
        if tile.shape[:2] != (height, width):
            tile = cv2.resize(tile, (width, height), interpolation=cv2.INTER_AREA)
        tile = tile.copy()
        _label(tile, name)
        tiles.append(tile)
    mosaic = np.hstack(tiles)
    if not hud:
        return mosaic
    strip = np.zeros((HUD_HEIGHT, mosaic.shape[1], 3), np.uint8)
    cv2.putText(strip, hud, (8, 18), FONT, 0.5, WHITE, 1, cv2.LINE_AA)
    return np.vstack([mosaic, strip])


def hud_text(item: PairedFrame, fps: float, engine: FusionEngine) -> str:
    """The heads-up line under the mosaic: frame, fps, capture-to-delivery latency, alignment state, engine."""
    a = item.alignment
    return (
        f"#{item.index}  {fps:.1f} fps  latency {item.latency_ms.get('total', 0.0):.0f} ms  "
        f"align {a.label()}  {engine.name}/{engine.provider}"
    )


def x_server_reachable(display: str) -> bool:
    """Whether the X server named by a ``$DISPLAY`` value (``:0``, ``localhost:10.0``) accepts a connection.

    Checked before any window exists because OpenCV's Qt (xcb only) aborts the process when it cannot connect.
    """
    host, _, rest = display.rpartition(":")
    number = rest.split(".")[0]
    if not number.isdigit():
        return False
    if host in ("", "unix"):
        path = f"/tmp/.X11-unix/X{number}"
        for address in (path, "\0" + path):  # the file socket, then Linux's abstract one
            try:
                with socket.socket(socket.AF_UNIX) as probe:
                    probe.settimeout(0.5)
                    probe.connect(address)
                    return True
            except OSError:
                continue
        return False
    try:
        socket.create_connection((host, 6000 + int(number)), timeout=0.5).close()
        return True
    except OSError:
        return False


def display_missing() -> str | None:
    """Why no window can be shown here, or None when one can."""
    if not sys.platform.startswith("linux"):
        return None
    display = os.environ.get("DISPLAY")
    if not display:
        return "no display found ($DISPLAY is unset)"
    if not x_server_reachable(display):
        return f"cannot connect to the X display {display!r}"
    return None


class Display:
    """One OpenCV window; ``show`` returns False once the user pressed q or Esc (or closed the window)."""

    def __init__(self, title: str = "stream_fusion: IR | visible | fused") -> None:
        self.title = title
        self._opened = False

    @classmethod
    def from_config(cls, display_cfg: dict[str, bool]) -> Display | None:
        """From the ``display:`` section: a window when ``enabled`` and there is a display to show it on."""
        return cls.open() if display_cfg["enabled"] else None

    @classmethod
    def open(cls, title: str = "stream_fusion: IR | visible | fused") -> Display | None:
        """A display, or None with one warning saying why it is switched off."""
        reason = display_missing()
        if reason is None:
            display = cls(title)
            try:
                cv2.namedWindow(title, cv2.WINDOW_NORMAL)
                display._opened = True
                return display
            except cv2.error as error:  # opencv-python-headless has no GUI at all
                reason = f"OpenCV has no GUI support ({' '.join(str(error).split())[:80]})"
        log.warning("%s: display switched off (use --no-display to skip it)", reason)
        return None

    def show(self, mosaic: np.ndarray) -> bool:
        cv2.imshow(self.title, mosaic)
        return self.poll()

    def poll(self) -> bool:
        """Service the window's events (also between frames, so it never looks hung); False once the user quit."""
        key = cv2.waitKey(1) & 0xFF
        if key in QUIT_KEYS:
            return False
        return cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) >= 1

    def close(self) -> None:
        if self._opened:
            cv2.destroyWindow(self.title)
            cv2.waitKey(1)
            self._opened = False
