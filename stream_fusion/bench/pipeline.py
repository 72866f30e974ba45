"""Pipeline benchmark: replay throughput of the demo clip and capture-to-publish latency of a 640x512 live stream.

    python -m stream_fusion.bench.pipeline [--model classical --model default ...] [--out docs/pipeline_bench_cpu.json]

Both measurements run the real pipeline (capture threads, pairing, alignment check, fusion and the steady-video
filter with the shipped defaults, ZeroMQ publisher with a real subscriber draining it on 127.0.0.1), with no display.

* throughput: the 360x270 demo clip replayed losslessly as fast as it goes, looped to ``--frames`` frames;
* latency: a 640x512 IR / visible pair of video files (the demo clip scaled up, written to a temporary folder) read
  in live mode, paced at ``--fps``, for ``--seconds``; "total" is from the grab of the older input frame to the hand-
  off to the publisher, "publish" the send call itself. Drops are reported: a live stream sheds what it cannot fuse.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import zmq

from stream_fusion import DEMO_IR, DEMO_VIS
from stream_fusion.align import AlignmentMonitor
from stream_fusion.bench import cpu_name
from stream_fusion.capture import SourcePair, open_source
from stream_fusion.config import load_config, positive_number
from stream_fusion.engine import FusionEngine, create_engine
from stream_fusion.errors import StreamFusionError
from stream_fusion.pipeline import Pipeline
from stream_fusion.publish import Publisher
from stream_fusion.sinks import Sinks
from stream_fusion.stats import Summary
from stream_fusion.steady import SteadyFilter


class CountingPublisher:
    """The real publisher, stopping the pipeline after ``limit`` frames (a looped replay has no end of its own)."""

    def __init__(self, publisher: Publisher, limit: int | None) -> None:
        self.publisher, self.limit, self.pipeline = publisher, limit, None

    @property
    def sent(self) -> int:
        return self.publisher.sent

    @property
    def dropped(self) -> int:
        return self.publisher.dropped

    def send(self, image: np.ndarray, meta: dict) -> bool:
        ok = self.publisher.send(image, meta)
        if self.limit is not None and meta["index"] + 1 >= self.limit:
            self.pipeline.stop("frame limit")
        return ok


def drain(endpoint: str, stop: threading.Event, counter: list[int]) -> None:
    """A subscriber that keeps up: receives and discards, like a viewer on the same box."""
    sub = zmq.Context.instance().socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(endpoint)
    while not stop.is_set():
        if sub.poll(50):
            sub.recv_multipart()
            counter[0] += 1
    sub.close(linger=0)


def run(ir: Path, vis: Path, model: str | FusionEngine, *, live: bool, pace_fps: float | None, loop: bool,
        limit: int | None, seconds: float | None, hwm: int) -> tuple[Summary, int, str]:
    """One pipeline over the clip, fused by ``model`` (a ``--model`` value, or an engine built already)."""
    ir_source, vis_source = open_source(ir, "ir"), open_source(vis, "vis")
    engine = model if isinstance(model, FusionEngine) else create_engine(
        model, "auto", **({"resolution": vis_source.size} if vis_source.size else {}))
    publisher = Publisher("tcp://127.0.0.1:*", hwm=hwm)
    stop, received = threading.Event(), [0]
    subscriber = threading.Thread(target=drain, args=(publisher.endpoint, stop, received), daemon=True)
    subscriber.start()
    publisher.wait_for_subscriber(10)
    counting = CountingPublisher(publisher, limit)
    sources = SourcePair(ir_source, vis_source, live=live, pace_fps=pace_fps, loop=loop)
    pipeline = Pipeline(sources, engine, AlignmentMonitor(), sinks=Sinks(counting),
                        steady=SteadyFilter.from_config(load_config()["steady"]))
    counting.pipeline = pipeline
    if seconds is not None:
        threading.Timer(seconds, pipeline.stop, args=("time limit",)).start()
    summary = pipeline.run()
    time.sleep(0.3)
    stop.set()
    subscriber.join(2)
    publisher.close()
    return summary, received[0], f"{engine.name} ({engine.provider})"


def write_scaled_clip(folder: Path, size: tuple[int, int]) -> tuple[Path, Path]:
    """The demo clip resized to ``size`` as two MJPG videos: a real file source of the benchmark's resolution."""
    paths = []
    for name, frames in (("ir", DEMO_IR), ("vis", DEMO_VIS)):
        path = folder / f"{name}_{size[0]}x{size[1]}.avi"
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30, size)
        for file in sorted(frames.iterdir()):
            gray = cv2.imread(str(file), cv2.IMREAD_GRAYSCALE)
            writer.write(cv2.cvtColor(cv2.resize(gray, size, interpolation=cv2.INTER_CUBIC), cv2.COLOR_GRAY2BGR))
        writer.release()
        paths.append(path)
    return paths[0], paths[1]


def machine() -> str:
    return f"{cpu_name()}, {os.cpu_count()} cores visible"


def row(summary: Summary, received: int) -> dict[str, Any]:
    return {
        "frames": summary.frames,
        "seconds": round(summary.seconds, 3),
        "fps": round(summary.fps, 2),
        "latency_ms": {stage: {"median": round(m, 2), "p99": round(p, 2)} for stage, (m, p) in summary.latency_ms.items()},
        "drops": summary.drops,
        "received_by_subscriber": received,
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m stream_fusion.bench.pipeline",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", help="engine(s) to measure (default: classical and default)")
    parser.add_argument("--frames", type=int, default=320, help="replay throughput: frames to fuse (looped clip)")
    parser.add_argument("--fps", type=positive_number, default=30.0, help="latency: live source rate")
    parser.add_argument("--seconds", type=positive_number, default=10.0, help="latency: stream duration")
    parser.add_argument("--out", type=Path, help="also write the results (machine, command, numbers) here as JSON")
    args = parser.parse_args()
    models = args.model or ["classical", "default"]
    results: dict[str, Any] = {"machine": machine(), "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
                               "command": "python -m stream_fusion.bench.pipeline " + " ".join(f"--model {m}" for m in models),
                               "throughput_demo_replay": {}, "latency_live_640x512": {}}
    with tempfile.TemporaryDirectory() as tmp:
        ir_big, vis_big = write_scaled_clip(Path(tmp), (640, 512))
        for model in models:
            try:
                create_engine(model, "auto", warmup=False) if model != "classical" else None
            except StreamFusionError as error:  # e.g. the shipped network not exported yet: say so, measure the rest
                print(f"skipped {model}: {error}")
                results["skipped"] = {**results.get("skipped", {}), model: str(error)}
                continue
            summary, received, engine = run(DEMO_IR, DEMO_VIS, model, live=False, pace_fps=None, loop=True,
                                            limit=args.frames, seconds=None, hwm=64)
            results["throughput_demo_replay"][model] = {"engine": engine, "resolution": "360x270", **row(summary, received)}
            print(f"replay 360x270  {engine:32s} {summary.frames:4d} frames  {summary.fps:7.1f} fps  "
                  f"fuse median {summary.latency_ms['fuse'][0]:.1f} ms")
            summary, received, engine = run(ir_big, vis_big, model, live=True, pace_fps=args.fps, loop=True,
                                            limit=None, seconds=args.seconds, hwm=2)
            lat = summary.latency_ms
            results["latency_live_640x512"][model] = {"engine": engine, "resolution": "640x512",
                                                      "source_fps": args.fps, **row(summary, received)}
            print(f"live 640x512@{args.fps:g} {engine:32s} {summary.frames:4d} frames  {summary.fps:7.1f} fps  "
                  f"capture->publish median {lat['total'][0]:.1f} ms p99 {lat['total'][1]:.1f} ms  "
                  f"drops {sum(summary.drops.values())}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
