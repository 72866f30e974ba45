"""A scene-disjoint validation split carved from the training pairs, for model selection (issue 15, 4a).

The training pairs are frames of a few dozen scenes: RoadScene's ``FLIR_<n>`` are frames of drives (nearby numbers
are the same street seconds apart) and TNO's stills come several per scene (``Marne_03``, ``Marne_04``, ...). A
random split would put near-copies of a validation frame in training and select the model that memorised them. So
pairs are grouped by scene (:func:`scene_of`) and whole scenes go to validation, the same ones on every machine
(picked by a hash of the scene's name, not by a random generator), per source family, so that validation has day
and night streets and TNO scenes in about the training set's proportions. The eval sets (tno25, roadscene50) are
never touched: they stay for reporting.
"""
from __future__ import annotations

import re
import zlib
from collections.abc import Sequence

FRAME = re.compile(r"^(?P<family>.*?)_?(?P<number>\d+)$")
SCENE_GAP = 50  # frame numbers further apart than this start a new scene (a drive's frames are tens apart)


def _strip(name: str) -> str:
    return name.rsplit(".", 1)[0] if name.lower().endswith((".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")) else name


def family_of(name: str) -> str:
    """The source family: ``FLIR`` (RoadScene frames), ``FLIR_video`` (RoadScene video frames) or ``TNO``."""
    stem = _strip(name)
    if stem.startswith("FLIR_video_"):
        return "FLIR_video"
    if stem.startswith("FLIR_"):
        return "FLIR"
    return "TNO"


def scene_of(name: str, names: Sequence[str]) -> str:
    """The scene a pair belongs to. RoadScene frames: runs of frame numbers less than :data:`SCENE_GAP` apart
    (among ``names``); TNO stills: the collection and scene name without view or frame numbers
    (``Triclobs_images__Marne_03`` -> ``Triclobs_images__Marne``, ``Athena_images__APC_1__view_2`` ->
    ``Athena_images__APC``)."""
    stem, family = _strip(name), family_of(name)
    if family == "TNO":
        parts = stem.split("__")[:2]
        return "__".join(re.sub(r"(_\d+)+$", "", part) for part in parts)
    number = int(FRAME.match(stem).group("number"))
    numbers = sorted(int(FRAME.match(_strip(n)).group("number")) for n in names if family_of(n) == family)
    start = numbers[0]
    for previous, current in zip(numbers, numbers[1:]):
        if current > number:
            break
        if current - previous > SCENE_GAP:
            start = current
    return f"{family}@{start}"


def scenes(names: Sequence[str]) -> dict[str, list[str]]:
    """Scene -> its pair names, for every name."""
    groups: dict[str, list[str]] = {}
    for name in names:
        groups.setdefault(scene_of(name, names), []).append(name)
    return groups


def split_scenes(names: Sequence[str], fraction: float) -> tuple[list[str], list[str]]:
    """``(train, val)`` name lists: whole scenes to validation, in hash order within each family, until each family
    has at least ``fraction`` of its pairs there (``fraction`` 0: everything trains, no validation)."""
    if not 0 <= fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {fraction}")
    if fraction == 0:
        return sorted(names), []
    val: list[str] = []
    groups = scenes(names)
    for family in sorted({family_of(n) for n in names}):
        members = [s for s in groups if family_of(groups[s][0]) == family]
        total = sum(len(groups[s]) for s in members)
        taken = 0
        for scene in sorted(members, key=lambda s: zlib.crc32(s.encode())):
            if taken >= fraction * total:
                break
            val += groups[scene]
            taken += len(groups[scene])
    held = set(val)
    return sorted(n for n in names if n not in held), sorted(val)
