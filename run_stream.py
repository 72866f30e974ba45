#!/usr/bin/env python3
"""Fuse an infrared and a visible stream in real time and publish the result over ZeroMQ.

With no --ir and --vis it replays the bundled demo clip (TNO Nato_camp) and publishes on tcp://127.0.0.1:5555:

    python run_stream.py                                   # demo clip
    python run_stream.py --ir 0 --vis 1                    # two cameras (live)
    python run_stream.py --ir ir.mp4 --vis vis.mp4 --realtime --record fused.mkv
    python -m stream_fusion.subscribe tcp://127.0.0.1:5555 # elsewhere: receive the fused frames

Every key of configs/default.yaml can be set: with its own option below, with --config FILE, or with --set key=value.
Ctrl-C or SIGTERM stops cleanly (recording finished, summary printed, exit 0; a second one hurries, a third quits at
once); bad input exits 2 with one line.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import logging
import os
import sys
import threading
import time
from typing import Any, NoReturn

import cv2

from stream_fusion import DEMO_CALIBRATION
from stream_fusion.align import AlignmentMonitor, load_calibration
from stream_fusion.capture import SourcePair
from stream_fusion.config import DEFAULT_CONFIG, Option, add_config_options, config_from_args
from stream_fusion.display import Display
from stream_fusion.engine import PROVIDERS, engine_from_config
from stream_fusion.errors import StreamFusionError, run_cli
from stream_fusion.gain import IrGain
from stream_fusion.pipeline import Pipeline
from stream_fusion.publish import Publisher
from stream_fusion.record import Recorder, check_output_path, check_record_path
from stream_fusion.sinks import Sinks
from stream_fusion.stats import Summary
from stream_fusion.steady import SteadyFilter
from stream_fusion.stopping import StopSignals, interrupted_by
from stream_fusion.sync import LivePairing
from stream_fusion.warp import IrRegistration

SNAPSHOT_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp"}

# (option, config key, argparse keywords): the common keys get their own option; --set reaches every key.
OPTIONS: list[Option] = [
    ("--ir", "source.ir", {"metavar": "SRC", "help": "IR source: camera index, video file, image folder or URL; "
                                                     "neither --ir nor --vis: the bundled demo clip"}),
    ("--vis", "source.vis", {"metavar": "SRC", "help": "visible source (same kinds as --ir)"}),
    ("--mode", "source.mode", {"choices": ["auto", "live", "replay"], "help": "auto: cameras/URLs live, files replay"}),
    ("--realtime", "source.realtime", {"action": "store_const", "const": True,
                                       "help": "pace a replay at its fps (none: only the demo clip is paced)"}),
    ("--fps", "source.fps", {"type": float, "metavar": "N",
                                "help": "pace of --realtime (none: the source's; needed for image folders)"}),
    ("--loop", "source.loop", {"action": "store_const", "const": True, "help": "replay: start again at the end"}),
    ("--reconnect", "source.reconnect_s", {"type": float, "metavar": "S",
                                           "help": "live: reopen a lost camera/stream for up to S s; any mode: retry a "
                                                   "lost fusion server (triton://) as long (0 = fail at once)"}),
    ("--tolerance-ms", "sync.tolerance_ms", {"type": float, "metavar": "MS",
                                             "help": "live pairing tolerance (default: half the slower source's "
                                                     "measured frame period)"}),
    ("--ir-range", "gain.range", {"metavar": "LO:HI",
                                  "help": "16-bit IR: map counts LO..HI to 0..255 (default: automatic gain)"}),
    ("--model", "engine.model", {"metavar": "M", "help": "default | lite | base | cdfusion | classical | "
                                           "path/to/model.onnx | triton://HOST:PORT/NAME (a fusion server)"}),
    ("--provider", "engine.provider", {"choices": ["auto", *PROVIDERS], "help": "ONNX Runtime provider"}),
    ("--no-steady", "steady.enabled", {"action": "store_const", "const": False,
                                       "help": "no steady-video filter: every fused frame as the engine made it"}),
    ("--align-policy", "align.policy", {"choices": ["warn", "correct", "drop"], "help": "on misalignment"}),
    ("--calibration", "align.calibration", {"metavar": "YAML", "help": "IR -> visible warp from stream_fusion.calibrate"}),
    ("--zmq", "publish.zmq", {"metavar": "ADDR", "help": "bind address, e.g. tcp://0.0.0.0:5555; none = off"}),
    ("--zmq-keys", "publish.keys", {"metavar": "DIR", "help": "CURVE: encrypt, serve only DIR/clients/*.key "
                                                              "(python -m stream_fusion.keys DIR --client NAME)"}),
    ("--zmq-format", "publish.format", {"choices": ["raw", "jpg"], "help": "raw array or JPEG"}),
    ("--jpeg-quality", "publish.jpeg_quality", {"type": int, "metavar": "Q", "help": "1-100, for --zmq-format jpg"}),
    ("--wait-subscriber", "publish.wait_subscriber", {"type": float, "metavar": "S",
                                                      "help": "wait up to S s for a subscriber before starting"}),
    ("--no-display", "display.enabled", {"action": "store_const", "const": False, "help": "no window"}),
    ("--record", "record", {"metavar": "OUT.mkv",
                            "help": "write the fused stream to a video file (.mkv survives a kill; .mp4 does not)"}),
    ("--snapshot", "snapshot", {"metavar": "OUT.png", "help": "write the last IR | visible | fused mosaic"}),
]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit 2, like every other bad input
        raise StreamFusionError(f"{message} (see run_stream.py --help)")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = _Parser(description=__doc__.split("\n\n")[0] + " Without --ir and --vis it plays the bundled demo clip.",
                     epilog=f"Each option's default is in brackets with the config key it sets; all defaults: "
                            f"{DEFAULT_CONFIG}.")
    add_config_options(parser, OPTIONS, "YAML file overriding any subset of the defaults", "pipeline.queue_size=8")
    return parser.parse_args(argv)


def build_config(args: argparse.Namespace) -> dict[str, Any]:
    """Defaults, then --config, then the named options, then --set: later wins, every step type-checked."""
    return config_from_args(args, OPTIONS)


def print_status(line: str) -> None:
    """The live one-line status: rewritten in place on a terminal, one line per period in a log."""
    if sys.stderr.isatty():
        print(f"\r{line[:200]}\033[K", end="", file=sys.stderr, flush=True)
    else:
        print(line, file=sys.stderr, flush=True)


def setup_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname_lower)s: %(message)s"))
    handler.addFilter(_lower_level)
    logging.basicConfig(level=logging.WARNING, handlers=[handler], force=True)


def _lower_level(record: logging.LogRecord) -> bool:
    record.levelname_lower = record.levelname.lower()
    return True


def main(argv: list[str] | None = None, signals: StopSignals | None = None) -> int:
    """The command; ``signals``: the stop-signal handlers the caller installed (else they are installed here, for
    this call)."""
    setup_logging()
    cfg = build_config(parse_args(argv))
    with StopSignals() if signals is None else contextlib.nullcontext(signals) as active:
        try:
            return stream(cfg, active)
        except BaseException as error:
            stop = interrupted_by(error)
            if stop is None:
                raise
            print(f"stopped by {stop.signal_name} during start-up: nothing was fused", file=sys.stderr)
            return 130


def stream(cfg: dict[str, Any], signals: StopSignals) -> int:
    """Build every stage from its config section, run the stream, report. ``signals`` stop it (or its start-up)."""
    # Outputs that cannot be written fail before anything opens; then each stage is built from its own section.
    if cfg["record"]:
        check_record_path(cfg["record"])
    snapshot_path = None
    if cfg["snapshot"]:
        snapshot_path = check_output_path(cfg["snapshot"], SNAPSHOT_SUFFIXES, "cannot write snapshot")
    monitor = AlignmentMonitor.from_config(cfg["align"])
    gain = IrGain.from_config(cfg["gain"])
    steady = SteadyFilter.from_config(cfg["steady"])
    sources = SourcePair.from_config(cfg["source"])
    signals.check()  # a stop signal during the start-up ends it between two steps
    pairing = LivePairing.from_config(cfg["sync"], (sources.ir.fps, sources.vis.fps))
    # The demo clip ships with its rig's calibration, as a real rig would: without it the check rightly says misaligned.
    calibration_path = cfg["align"]["calibration"] or (DEMO_CALIBRATION if sources.demo else None)
    calibration = load_calibration(calibration_path) if calibration_path else None
    engine = engine_from_config(cfg["engine"], sources.vis.size, sources.ir.size if calibration else None,
                                reconnect_s=cfg["source"]["reconnect_s"])
    signals.check()
    publisher = Publisher.from_config(cfg["publish"], sources.live)
    try:
        sinks = Sinks(publisher, Recorder.from_config(cfg["record"], sources.fps), Display.from_config(cfg["display"]))
        pipeline = Pipeline.from_config(cfg["pipeline"], sources, engine, monitor, status=print_status, sinks=sinks,
                                        registration=IrRegistration(calibration), pairing=pairing, gain=gain,
                                        steady=steady)
        signals.attach(pipeline)
        summary = run(pipeline, publisher, cfg["publish"]["wait_subscriber"])
    finally:
        if publisher is not None:
            publisher.close()
    if pipeline.status is not None and sys.stderr.isatty():
        print(file=sys.stderr)
    report(summary, publisher)
    if snapshot_path is not None and pipeline.last is not None:
        if not cv2.imwrite(str(snapshot_path), pipeline.snapshot(pipeline.last)):
            raise StreamFusionError(f"cannot write snapshot {snapshot_path}")
        print(f"snapshot: {snapshot_path}", file=sys.stderr)
    if summary.error is not None:
        raise summary.error
    return 0


def run(pipeline: Pipeline, publisher: Publisher | None, wait_subscriber_s: float) -> Summary:
    """Say what runs, wait for a subscriber if asked, run the stream to its end (or a stop signal: see
    stream_fusion.stopping)."""
    ir, vis, engine = pipeline.sources.ir, pipeline.sources.vis, pipeline.engine
    where = "not publishing"
    if publisher is not None:
        where = f"publishing on {publisher.endpoint}" + (" (CURVE)" if publisher.secure else "")
    depth = f" (16-bit, {pipeline.gain.description} gain)" if getattr(ir, "bits", 8) == 16 else ""
    steady = ", steady video" if pipeline.steady is not None else ""
    precision = f", {engine.precision}" if getattr(engine, "precision", None) else ""  # which export runs (fp16 on GPUs)
    print(f"stream_fusion: IR {ir.description}{depth} + visible {vis.description} -> {engine.name} ({engine.provider}"
          f"{precision}){steady}, {'live' if pipeline.live else 'replay'}, {where}", file=sys.stderr, flush=True)
    if publisher and wait_subscriber_s > 0:
        wait_for_subscriber(publisher, wait_subscriber_s, pipeline.stop_event)
    return pipeline.run()


def wait_for_subscriber(publisher: Publisher, seconds: float, stop: threading.Event) -> None:
    """Wait (interruptibly: Ctrl-C must not have to sit out the timeout) until a subscriber is there."""
    deadline = time.monotonic() + seconds
    while not stop.is_set() and time.monotonic() < deadline:
        if publisher.wait_for_subscriber(min(0.2, max(0.0, deadline - time.monotonic()))):
            return
    if not stop.is_set():
        logging.getLogger("run_stream").warning("no subscriber within %.1f s: publishing anyway", seconds)


def report(summary: Summary, publisher: Publisher | None) -> None:
    lines = summary.lines()
    if publisher is not None:  # the publisher's own account of its frames, whose numbers add up
        lines = [f"  {publisher.summary()}; recorded {summary.recorded}" if line.startswith("  published ") else line
                 for line in lines]
    print("\n".join(lines), flush=True)


def cli() -> None:
    """The ``stream-fusion`` console script: ``main`` with one-line errors (exit 2) instead of tracebacks, and the
    stop signals handled until the process is gone (a signal just after the summary must not print a traceback)."""
    with StopSignals() as signals:
        try:
            run_cli(functools.partial(main, signals=signals))
        except SystemExit as done:
            # Everything is finished explicitly by now (recording, publisher, summary). The interpreter's teardown
            # takes tens of ms with its signal handlers gone (a Ctrl-C then is a traceback or exit 143) and
            # destroys ONNX Runtime's globals: skip it.
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(done.code if isinstance(done.code, int) else 0 if done.code is None else 1)


if __name__ == "__main__":
    cli()
