"""Generated hostile input (issue #13 point 10): the subscriber's decoder, the config, calibration and model loaders
either accept what they are given or refuse it with the project's one-line error; no other exception, ever.

hypothesis generates the input (random bytes, JSON and YAML shaped like the real thing, mutations of real JPEGs and
of the shipped ONNX model) and shrinks any failure to a minimal example. Each test is bounded by ``max_examples``,
a few seconds on the 2-core CI machine; ``deadline=None`` because that machine is shared and timing is noise there.
A failing example is printed with the seed to reproduce it (``--hypothesis-seed``).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream_fusion.align import AlignmentMonitor, load_calibration
from stream_fusion.config import DEFAULT_CONFIG, load_config, load_yaml, merge, parse_override
from stream_fusion.decode import MAX_PIXELS, BadMessage, decode
from stream_fusion.engine import SHIPPED_MODELS, create_engine
from stream_fusion.errors import StreamFusionError
from stream_fusion.publish import encode
from stream_fusion.sync import LivePairing

BOUNDED = settings(deadline=None, max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
SLOW = settings(BOUNDED, max_examples=25)  # each example builds an ONNX Runtime session

JPEG = cv2.imencode(".jpg", np.random.default_rng(0).integers(0, 255, (24, 32, 3), dtype=np.uint8))[1].tobytes()
FRAME = encode(np.zeros((24, 32, 3), np.uint8), {"index": 0})

# JSON values: numbers at and past every limit, NaN and infinities, strings, nesting.
scalars = st.one_of(st.none(), st.booleans(), st.sampled_from([math.inf, -math.inf, math.nan, 2**63, -2**63 - 1]),
                    st.integers(min_value=-2**80, max_value=2**80),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12))
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=6), inner, max_size=4), max_leaves=12)
dtypes = st.one_of(st.sampled_from(["uint8", "uint16", ">u2", "int64", "float32", "float16", "bool", "object", "O",
                                    "V0", "V8", "S3", "U2", "c8", "M8", "m8[s]", "i4,i4", "(2,)u1", "float999", ""]),
                   json_values)
sizes = st.one_of(st.integers(min_value=-3, max_value=70), st.integers(), st.floats(), st.booleans(), st.text(max_size=3))
shapes = st.one_of(st.lists(sizes, max_size=4), json_values)


@st.composite
def raw_messages(draw: st.DrawFn) -> list[bytes]:
    """A raw-format message whose header fields are drawn from the edge cases, with a buffer that sometimes fits."""
    header: dict[str, Any] = {"msg": draw(json_values), "dtype": draw(dtypes), "shape": draw(shapes)}
    if draw(st.booleans()):
        header["meta"] = draw(json_values)
    fits = -1
    if isinstance(header["shape"], list) and all(type(n) is int for n in header["shape"]):
        try:
            fits = math.prod(header["shape"]) * np.dtype(header["dtype"]).itemsize
        except Exception:  # noqa: BLE001 - a dtype numpy does not know: any buffer will do
            pass
    length = fits if 0 <= fits <= 20000 and draw(st.booleans()) else draw(st.integers(0, 64))
    return [json.dumps(header, allow_nan=True).encode(), bytes(length)]


@st.composite
def jpeg_messages(draw: st.DrawFn) -> list[bytes]:
    """A real JPEG with bytes overwritten, cut short, or a frame header claiming another size."""
    data = bytearray(JPEG)
    for _ in range(draw(st.integers(0, 6))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        sof = JPEG.index(b"\xff\xc0")
        data[sof + 5:sof + 9] = draw(st.binary(min_size=4, max_size=4))
    cut = draw(st.integers(0, len(data)))
    return [json.dumps({"msg": "x", "jpg": True}).encode(), bytes(data[:cut] if draw(st.booleans()) else data)]


messages = st.one_of(
    st.lists(st.binary(max_size=64), max_size=4),  # anything at all
    st.lists(st.sampled_from([FRAME[0], FRAME[1], b"{}", b"[]", b"null", b'{"msg": 1}']), max_size=3),
    raw_messages(),
    jpeg_messages(),
    st.builds(lambda header, body: [json.dumps(header, allow_nan=True).encode(), body], json_values, st.binary(max_size=32)),
)


@BOUNDED
@given(messages)
def test_decoder_returns_a_frame_or_raises_bad_message(parts: list[bytes]) -> None:
    try:
        image, header = decode(parts)
    except BadMessage as error:
        assert str(error) and "\n" not in str(error)
        return
    assert isinstance(header, dict) and "msg" in header
    assert image.dtype.kind in "uif" and image.ndim in (2, 3) and image.shape[0] * image.shape[1] <= MAX_PIXELS


# --- config --------------------------------------------------------------------------------------------------
DEFAULTS = load_yaml(DEFAULT_CONFIG)


@st.composite
def config_overrides(draw: st.DrawFn) -> dict[str, Any]:
    """A config file's content: mostly real section and key names, with values of every type, and some stray keys."""
    config: dict[str, Any] = {}
    for section in draw(st.lists(st.sampled_from([*DEFAULTS, "stray"]), max_size=4, unique=True)):
        default = DEFAULTS.get(section)
        if isinstance(default, dict):
            keys = st.sampled_from([*default, "stray"])
            config[section] = draw(st.dictionaries(keys, json_values, max_size=4))
        else:
            config[section] = draw(json_values)
    return config


def accepted_or_one_line(call: Any, *args: Any) -> Any:
    """``call(*args)``; a StreamFusionError must be one line (then None is returned), anything else fails."""
    try:
        return call(*args)
    except StreamFusionError as error:
        assert str(error) and "\n" not in str(error)
        return None


@BOUNDED
@given(config_overrides())
def test_config_is_merged_or_refused_in_one_line_and_stages_check_their_sections(override: dict[str, Any]) -> None:
    config = accepted_or_one_line(merge, DEFAULTS, override)
    if config is not None:
        accepted_or_one_line(AlignmentMonitor.from_config, config["align"])
        accepted_or_one_line(LivePairing.from_config, config["sync"], (25.0, 30.0))


@BOUNDED
@given(st.one_of(st.text(max_size=200), st.builds(yaml.safe_dump, config_overrides()),
                 st.binary(max_size=200).map(lambda b: b.decode("latin-1"))), st.lists(st.text(max_size=30), max_size=3))
def test_config_files_and_overrides_load_or_fail_in_one_line(tmp_path: Path, text: str, overrides: list[str]) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogateescape")
    accepted_or_one_line(load_config, path)
    for override in overrides:
        accepted_or_one_line(parse_override, override)
    accepted_or_one_line(load_config, None, overrides)


# --- calibration ---------------------------------------------------------------------------------------------
EDGES = st.sampled_from([math.inf, -math.inf, math.nan, 1e308, -1e-308, -0.0, 0, -1, 2**63, 10**400])
numbers = st.one_of(EDGES, st.floats(allow_nan=True, allow_infinity=True), st.integers(-2**70, 2**70),
                    st.text(max_size=4), st.none(), st.booleans())


VALID_CALIBRATION = {"model": "affine", "matrix": [[1.02, 0.01, -3.5], [-0.01, 0.98, 2.0]], "ir_size": [640, 512],
                     "vis_size": [640, 480], "residual_px": 0.4, "correlation": 0.7}


@st.composite
def calibrations(draw: st.DrawFn) -> Any:
    """A calibration file's content: a valid one with one to three fields replaced, dropped or made ill-shaped (or,
    now and then, any JSON-like value at all)."""
    if draw(st.integers(0, 9)) == 0:
        return draw(json_values)
    data: dict[str, Any] = json.loads(json.dumps(VALID_CALIBRATION))
    for _ in range(draw(st.integers(1, 3))):
        key = draw(st.sampled_from(list(VALID_CALIBRATION)))
        how = draw(st.integers(0, 3))
        if how == 0:
            data.pop(key, None)
        elif how == 1:
            data[key] = draw(json_values)
        elif key == "matrix":
            rows = draw(st.integers(1, 4))
            data[key] = [[draw(numbers) for _ in range(3)] for _ in range(rows)] if how == 2 else draw(
                st.lists(st.lists(numbers, max_size=4), max_size=4))
        elif key in ("ir_size", "vis_size"):
            data[key] = [draw(numbers), draw(numbers)]
        else:
            data[key] = draw(numbers) if key != "model" else draw(st.sampled_from(["homography", "similarity", ""]))
    return data


@BOUNDED
@given(st.one_of(st.builds(yaml.safe_dump, calibrations()), st.text(max_size=200)))
def test_calibration_loads_or_fails_in_one_line(tmp_path: Path, text: str) -> None:
    path = tmp_path / "calibration.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogateescape")
    calibration = accepted_or_one_line(load_calibration, path)
    if calibration is not None:
        assert calibration.matrix.shape == (3, 3) and np.isfinite(calibration.matrix).all()


# --- models --------------------------------------------------------------------------------------------------
MODEL = SHIPPED_MODELS["lite"].read_bytes()


@st.composite
def model_files(draw: st.DrawFn) -> bytes:
    """The shipped lite model with bytes overwritten (protobuf tags, lengths, weights...) and maybe cut short; or
    bytes that are no model at all."""
    if draw(st.integers(0, 4)) == 0:
        return draw(st.binary(max_size=256))
    data = bytearray(MODEL)
    for _ in range(draw(st.integers(1, 8))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data[:draw(st.integers(1, len(data)))] if draw(st.integers(0, 3)) == 0 else data)


@SLOW
@given(model_files())
def test_a_damaged_model_file_loads_or_fails_in_one_line(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(data)
    engine = accepted_or_one_line(lambda: create_engine(path, "cpu", resolution=(32, 24)))
    if engine is not None:
        fused = engine.fuse(np.zeros((24, 32), np.uint8), np.zeros((24, 32, 3), np.uint8))
        assert fused.shape[:2] == (24, 32) and fused.dtype == np.uint8


# --- the subscriber on a real socket ---------------------------------------------------------------------------
def mutated_messages(count: int, seed: int) -> list[list[bytes]]:
    """Seeded random messages: real raw and JPEG frames with bytes flipped, cut or parts added and removed."""
    rng = np.random.default_rng(seed)
    originals = [encode(np.zeros((24, 32, 3), np.uint8), {"index": 1}), encode(np.zeros((24, 32), np.uint8), {}, "jpg")]
    messages = []
    for _ in range(count):
        parts = [bytearray(part) for part in originals[rng.integers(2)]]
        for _ in range(rng.integers(1, 4)):
            part = parts[rng.integers(len(parts))]
            if part and rng.random() < 0.7:
                part[rng.integers(len(part))] = rng.integers(256)
            else:
                del part[rng.integers(len(part) + 1):]
        if rng.random() < 0.1:
            parts = parts[:1] if rng.random() < 0.5 else [*parts, bytearray(b"x")]  # ZeroMQ sends no 0-part message
        messages.append([bytes(part) for part in parts])
    return messages


def test_subscriber_cli_survives_a_burst_of_mutated_messages_and_counts_each_bad_one() -> None:
    from test_decode import GOOD, Subscriber, send_good_until_received

    messages = mutated_messages(200, seed=13)
    bad = 0
    for parts in messages:
        try:
            decode(parts)
        except BadMessage:
            bad += 1
    assert 20 < bad < 200  # the mix holds both
    context = zmq.Context()
    pub = context.socket(zmq.PUB)
    pub.bind("tcp://127.0.0.1:*")
    sub = Subscriber(pub.getsockopt_string(zmq.LAST_ENDPOINT), "--all")
    try:
        send_good_until_received(pub, sub, 0)
        for parts in messages:
            pub.send_multipart(parts)
        pub.send_multipart(encode(GOOD, {"index": 10**6}))
        sub.wait_for("out", f"frame {10**6} ")
    finally:
        status, out, err = sub.stop()
        context.destroy(linger=0)
    assert status == 0 and "Traceback" not in err
    assert f", {bad} bad messages skipped" in out
    assert f"summary: {len(messages) - bad + 2} frames received" in out
