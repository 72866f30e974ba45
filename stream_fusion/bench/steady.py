"""Cost and effect of the steady-video filter, the numbers in docs/pipeline.md ("Steady video").

    python -m stream_fusion.bench.steady [--model default] [--repeats 300]

Cost: :class:`stream_fusion.steady.SteadyFilter` on one 640x512 fused frame (the demo clip's frames resized), gray and
colour (frames prepared beforehand), on one core (``cv2.setNumThreads(1)``): median and 95th percentile of the
thread's CPU time and of wall time; and the host warp of the IR that a calibrated rig adds (the gate needs the IR on
the fused grid).

Effect, on the demo clip (TNO nato_camp, 32 consecutive frames, 360x270) fused frame by frame by ``--model`` and
then filtered as a replay is (shipped ``steady:`` defaults):

- static-region flicker (``stream_fusion.evaluate``'s measure), fused alone and as streamed, as the sequence folder
  is scored and as run_stream.py plays the demo (with its calibration, the IR warped onto the visible grid);
- moving pixels (an input changed by 10 levels or more since the last frame: the people walking, the clip's big
  steps): their mean frame-to-frame change alone and as streamed, and the largest |streamed - fused| on them;
- a hot object (12x28 px at 235) walked 6 px per frame through one real frame held still (no sensor noise, so the
  filter holds everything it may): the largest |streamed - fused| on it and where it was the frame before, and within
  40 px of it (the network reshapes its output there: its halo).
"""
from __future__ import annotations

import argparse
import platform
import time

import cv2
import numpy as np

from stream_fusion import DEMO_CALIBRATION, DEMO_IR, DEMO_VIS
from stream_fusion.align import load_calibration
from stream_fusion.batch import load_engine
from stream_fusion.capture import match_pairs
from stream_fusion.evaluate.score import stream_filter
from stream_fusion.evaluate.stability import temporal_change

SIZE = (640, 512)
MOVING_LEVELS = 10  # a pixel moved where an input changed by this many levels since the last frame
HALO_PX = 40


def demo_clip() -> list[tuple[np.ndarray, np.ndarray]]:
    return [(cv2.imread(str(ir), cv2.IMREAD_GRAYSCALE), cv2.imread(str(vis), cv2.IMREAD_GRAYSCALE))
            for _, ir, vis in match_pairs(DEMO_IR, DEMO_VIS)]


def percentiles(seconds: list[float]) -> str:
    ms = np.array(seconds[len(seconds) // 10:]) * 1000  # the first tenth: warm-up
    return f"median {np.median(ms):.2f} ms, p95 {np.percentile(ms, 95):.2f} ms"


def cost(repeats: int) -> None:
    """Per-frame cost at 640x512: the filter on gray and on colour frames, and the IR warp a calibration adds."""
    cv2.setNumThreads(1)
    frames = [(cv2.resize(ir, SIZE), cv2.resize(vis, SIZE)) for ir, vis in demo_clip()]
    tint = np.array([0.9, 1.0, 1.1])
    print(f"cost per {SIZE[0]}x{SIZE[1]} frame, one core ({platform.machine()}, {platform.processor() or 'cpu'}), "
          f"{repeats} frames:")
    gray = [(cv2.addWeighted(ir, 0.5, vis, 0.5, 0), ir, vis) for ir, vis in frames]  # the maker does not matter
    colour = [tuple(np.clip(cv2.cvtColor(image, cv2.COLOR_GRAY2BGR) * tint, 0, 255).astype(np.uint8) if role != "ir"
                    else image for role, image in zip(("fused", "ir", "vis"), triplet)) for triplet in gray]
    for kind, triplets in (("gray", gray), ("colour", colour)):
        steady = stream_filter()
        cpu, wall = [], []
        for i in range(repeats):
            fused, ir, vis = triplets[i % len(triplets)]
            started, started_cpu = time.perf_counter(), time.thread_time()
            steady(fused, ir, vis)
            cpu.append(time.thread_time() - started_cpu)
            wall.append(time.perf_counter() - started)
        print(f"  filter, {kind:>6}: CPU {percentiles(cpu)}; wall {percentiles(wall)}")
    warp = load_calibration(DEMO_CALIBRATION).warp(SIZE, SIZE)
    cpu, wall = [], []
    for i in range(repeats):
        started, started_cpu = time.perf_counter(), time.thread_time()
        warp.apply(frames[i % len(frames)][0])
        cpu.append(time.thread_time() - started_cpu)
        wall.append(time.perf_counter() - started)
    print(f"  IR warp for the gate (calibrated rig): CPU {percentiles(cpu)}; wall {percentiles(wall)}")


def effect(model: str) -> None:
    """Flicker and motion on the demo clip, fused alone and as streamed; the walking hot object."""
    engine = load_engine(model, "cpu")
    clip = [(engine.fuse(ir, vis), ir, vis) for ir, vis in demo_clip()]
    steady = stream_filter()
    streamed = [steady(fused, ir, vis) for fused, ir, vis in clip]
    alone = temporal_change(clip)
    through = temporal_change([(out, ir, vis) for out, (_, ir, vis) in zip(streamed, clip)])
    print(f"demo clip (nato_camp, 32 frames, 360x270), {engine.name}: static-region flicker {alone['ratio']:.2f}x the "
          f"inputs' alone, {through['ratio']:.2f}x as streamed ({steady.resets} starts: the first frame and cuts)")
    warp = load_calibration(DEMO_CALIBRATION).warp((360, 270), (360, 270))
    calibrated = [(engine.fuse(ir, vis, warp), warp.apply(ir), vis) for _, ir, vis in clip]
    steady = stream_filter()
    calibrated_streamed = [(steady(fused, ir, vis), ir, vis) for fused, ir, vis in calibrated]
    print(f"  with the clip's calibration, as run_stream.py plays it (scored on the warped IR): "
          f"{temporal_change(calibrated)['ratio']:.2f}x alone, {temporal_change(calibrated_streamed)['ratio']:.2f}x "
          "as streamed")
    change_alone = change_streamed = worst = 0.0
    count = 0
    for t in range(1, len(clip)):
        (fused, ir, vis), (prev_fused, prev_ir, prev_vis) = clip[t], clip[t - 1]
        moving = (cv2.absdiff(ir, prev_ir) >= MOVING_LEVELS) | (cv2.absdiff(vis, prev_vis) >= MOVING_LEVELS)
        change_alone += float(cv2.absdiff(fused, prev_fused)[moving].sum())
        change_streamed += float(cv2.absdiff(streamed[t], streamed[t - 1])[moving].sum())
        worst = max(worst, float(cv2.absdiff(streamed[t], fused)[moving].max(initial=0)))
        count += int(moving.sum())
    print(f"  moving pixels ({100 * count / (31 * clip[0][0].size):.0f} % of the frame over 31 steps): mean change "
          f"{change_alone / count:.2f} levels alone, {change_streamed / count:.2f} as streamed; largest "
          f"|streamed - fused| on them {worst:.0f}")
    _, ir, vis = clip[5]
    steady = stream_filter()
    on_it = halo = 0.0
    previous = None
    for k in range(10):
        blob = np.zeros_like(ir)
        cv2.ellipse(blob, (150 + 6 * k, 180), (6, 14), 0, 0, 360, 255, -1)
        ir_k = np.where(blob > 0, np.uint8(235), ir)
        fused = engine.fuse(ir_k, vis)
        diff = cv2.absdiff(steady(fused, ir_k, vis), fused)
        body = blob > 0 if previous is None else (blob > 0) | previous
        near = cv2.dilate(body.view(np.uint8), np.ones((2 * HALO_PX + 1,) * 2, np.uint8)) > 0
        on_it, previous = max(on_it, float(diff[body].max())), blob > 0
        if k:
            halo = max(halo, float(diff[near].max()))
    print(f"  hot object walking 6 px per frame through a still real frame: largest |streamed - fused| on it and "
          f"where it was {on_it:.0f}, within {HALO_PX} px of it {halo:.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m stream_fusion.bench.steady", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="default", help="the network the clip is fused by (default: the shipped)")
    parser.add_argument("--repeats", type=int, default=300, help="frames timed per case")
    args = parser.parse_args()
    cost(args.repeats)
    effect(args.model)


if __name__ == "__main__":
    main()
