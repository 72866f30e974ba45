"""Decode one wire-format message (docs/wire-format.md) that came from the network, trusting nothing in it.

A subscriber reads whatever any peer sends. Every way a message can be wrong (part count, header that is not a JSON
object or nests too deep, a dtype that is not a plain number, a shape that is negative, huge, fractional or does not
match the buffer, a JPEG that is corrupt or claims more pixels than allowed) raises :class:`BadMessage` with one line,
so the caller can skip it, count it and go on. Memory is bounded before anything is allocated: ZeroMQ refuses
messages over ``MAX_MESSAGE_BYTES`` (``zmq.MAXMSGSIZE``, set by the subscriber), the header is parsed only when small,
a raw buffer is viewed in place until its shape has been checked, and a JPEG's size is read from its frame header
(SOF marker) before OpenCV allocates anything for it.
"""
from __future__ import annotations

import json
import math
from typing import Any

import cv2
import numpy as np
import zmq

from stream_fusion.errors import StreamFusionError

# 8K UHD (7680 x 4320 = 33,177,600 pixels) fits; a 20000 x 20000 "JPEG" of a few MB would need 400 MB to 1.2 GB.
MAX_PIXELS = 2**25
# An 8K colour frame sent raw (99.5 MB) fits; ZeroMQ drops the connection on a larger message before allocating it.
MAX_MESSAGE_BYTES = 128 * 2**20
MAX_HEADER_BYTES = 64 * 2**10  # ours is under 1 KB; JSON parsing cost and depth grow with it
NUMERIC_KINDS = "uif"  # unsigned, signed, float: never object, void, string, bool, complex or structured dtypes
CHANNELS = (1, 3, 4)  # gray, BGR, BGRA
# JPEG start-of-frame markers (baseline, progressive, lossless, arithmetic...); C4, C8 and CC are other segments.
SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}

cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)  # a corrupt JPEG is reported by us, in one line


class BadMessage(StreamFusionError):
    """A message that is not a valid frame: the receiver skips it (and counts it); the stream goes on."""


def parse_header(data: bytes | memoryview) -> dict[str, Any]:
    """The JSON header: a small object with a ``msg`` key (imagezmq's sender name)."""
    if len(data) > MAX_HEADER_BYTES:
        raise BadMessage(f"header of {len(data)} bytes (at most {MAX_HEADER_BYTES})")
    try:
        header = json.loads(bytes(data))
    except (UnicodeDecodeError, ValueError) as error:  # JSONDecodeError, and ints past Python's digit limit
        raise BadMessage(f"header is not JSON: {error}") from None
    except RecursionError:
        raise BadMessage("header is JSON nested too deep") from None
    if not isinstance(header, dict) or "msg" not in header:
        raise BadMessage("header is not an imagezmq header (a JSON object with a 'msg' key)")
    return header


def raw_layout(header: dict[str, Any], max_pixels: int = MAX_PIXELS) -> tuple[np.dtype, tuple[int, ...]]:
    """The numeric dtype and image shape (h, w) or (h, w, channels) a raw message's header announces."""
    name, shape = header.get("dtype"), header.get("shape")
    if not isinstance(name, str) or len(name) > 16:
        raise BadMessage(f"raw header needs a 'dtype' name such as \"uint8\", got {str(name)[:40]!r}")
    try:
        dtype = np.dtype(name)
    except (TypeError, ValueError, SyntaxError) as error:
        raise BadMessage(f"unknown dtype {name!r}: {error}") from None
    if dtype.kind not in NUMERIC_KINDS or dtype.fields is not None or dtype.subdtype is not None:
        raise BadMessage(f"dtype {name!r} is not a plain number type (uint8, uint16, float32...)")
    if not isinstance(shape, list) or len(shape) not in (2, 3):
        raise BadMessage(f"raw header needs a 'shape' [h, w] or [h, w, channels], got {str(shape)[:40]}")
    if not all(type(n) is int and n >= 1 for n in shape):  # noqa: E721 - bool and float are not sizes
        raise BadMessage(f"shape {str(shape)[:60]} is not made of whole numbers >= 1")
    if len(shape) == 3 and shape[2] not in CHANNELS:
        raise BadMessage(f"shape {shape} has {shape[2]} channels (1, 3 or 4 expected)")
    if shape[0] * shape[1] > max_pixels:
        raise BadMessage(f"shape {shape} has {shape[0] * shape[1]} pixels (at most {max_pixels})")
    return dtype, tuple(shape)


def jpeg_size(data: bytes | memoryview) -> tuple[int, int, int]:
    """(width, height, components) from a JPEG's frame header, without decoding it."""
    view = memoryview(data)
    if len(view) < 4 or view[0] != 0xFF or view[1] != 0xD8:
        raise BadMessage("buffer is not a JPEG (no start-of-image marker)")
    pos = 2
    while pos + 4 <= len(view):
        if view[pos] != 0xFF:
            raise BadMessage(f"corrupt JPEG: no marker at byte {pos}")
        marker = view[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
            pos += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image, start of scan: no frame header came first
            break
        length = view[pos + 2] << 8 | view[pos + 3]
        if marker in SOF_MARKERS:
            if length < 8 or pos + 10 > len(view):
                break
            height, width = view[pos + 5] << 8 | view[pos + 6], view[pos + 7] << 8 | view[pos + 8]
            if not (height and width):
                raise BadMessage(f"JPEG frame header says {width}x{height} pixels")
            return width, height, view[pos + 9]
        if length < 2:
            raise BadMessage(f"corrupt JPEG: segment length {length} at byte {pos}")
        pos += 2 + length
    raise BadMessage("corrupt or truncated JPEG: no frame header")


def decode_jpeg(data: bytes | memoryview, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """A JPEG buffer as a gray or BGR image, refused before decoding when it claims more than ``max_pixels``."""
    width, height, _ = jpeg_size(data)
    if width * height > max_pixels:
        raise BadMessage(f"JPEG of {width}x{height} = {width * height} pixels (at most {max_pixels})")
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as error:
        raise BadMessage(f"JPEG does not decode: {str(error).strip().splitlines()[-1][:200]}") from None
    if image is None:
        raise BadMessage(f"JPEG of {len(data)} bytes does not decode")
    return image


def decode(parts: list[bytes] | list[zmq.Frame], max_pixels: int = MAX_PIXELS) -> tuple[np.ndarray, dict[str, Any]]:
    """The image and JSON header of one message: raw (``dtype`` + ``shape``) or JPEG (``"jpg": true``).

    Raises :class:`BadMessage` (one line) for anything else.
    """
    if len(parts) != 2:
        raise BadMessage(f"expected a two-part message (JSON header, image), got {len(parts)} part(s)")
    header, buffer = parse_header(memoryview(parts[0])), memoryview(parts[1])
    if header.get("jpg") is True:
        return decode_jpeg(buffer, max_pixels), header
    dtype, shape = raw_layout(header, max_pixels)
    if math.prod(shape) * dtype.itemsize != len(buffer):
        raise BadMessage(f"raw message of shape {list(shape)} {dtype} cannot come in {len(buffer)} bytes")
    # A writable copy: callers draw on frames (HUDs), and the message buffer is read-only.
    return np.frombuffer(buffer, dtype).reshape(shape).copy(), header
