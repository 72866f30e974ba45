"""Where a frame's time goes inside the engine's ONNX Runtime session: time per op type and the slowest nodes.

    python -m stream_fusion.bench.profile_engine --model base --provider cuda --size 640x512 [--runs 30] [--json out.json]

It profiles the graph the engine runs on that provider (``engine.frame_graph``: the network in its uint8 wrapper,
with the IR warp and colour handling inside the session on a GPU provider), at a fixed frame size, and reports per
run: the wall time of ``session.run``, the summed time of the nodes, and per op type the node count and time.

On the CPU provider a node's time is its compute. On a GPU provider ONNX Runtime times the host side of each node
(mostly launching its kernel, which runs asynchronously): when the summed node time comes close to the wall time,
the frame is bound by launching kernels, not by running them, and fewer nodes or a CUDA graph (``cuda_graph``)
pay; when the wall time is well above it, the GPU's own work sets the pace.
"""
from __future__ import annotations

import argparse
import collections
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from stream_fusion.engine import SHIPPED_MODELS
from stream_fusion.engine.graph import frame_dims, frame_graph, is_colour_model, model_metadata, read_model
from stream_fusion.errors import StreamFusionError, run_cli
from stream_fusion.warp import IrWarp


def feeds_for(in_session: bool, colour: bool, size: tuple[int, int], multiple: int) -> dict[str, np.ndarray]:
    """One frame pair of ``size`` (w, h) as the engine hands it to the session on that route."""
    w, h = size
    rng = np.random.default_rng(0)
    if in_session:
        frames = {"ir": rng.integers(0, 256, (1, 1, h, w), np.uint8),
                  "vis": rng.integers(0, 256, (1, h, w, 3), np.uint8)}
        return frames | IrWarp.resize((w, h), (w, h)).session_inputs((w + -w % multiple, h + -h % multiple))
    h, w = h + -h % multiple, w + -w % multiple
    vis_shape = (1, h, w, 3) if colour else (1, 1, h, w)
    return {"ir": rng.integers(0, 256, (1, 1, h, w), np.uint8), "vis": rng.integers(0, 256, vis_shape, np.uint8)}


def profile(model: Path, provider: str, size: tuple[int, int], runs: int, warmup: int = 3) -> dict[str, Any]:
    """Run the engine's graph ``warmup + runs`` times under ORT's profiler; summarise the last ``runs``."""
    # Here, not at the top: without ONNX Runtime the command says so in one line (run_cli), not in a traceback.
    from stream_fusion.engine.sessions import default_cache_dir, open_session

    proto = read_model(model)
    meta = model_metadata(proto)
    multiple = int(meta["size_multiple"])
    in_session = provider != "cpu"
    graph = frame_graph(proto, in_session=in_session)
    dims = frame_dims(size, size, multiple, in_session) if in_session else None
    feeds = feeds_for(in_session, is_colour_model(meta), size, multiple)
    session, name = open_session(graph.SerializeToString(), provider, shapes={k: v.shape for k, v in feeds.items()},
                                 cache_dir=default_cache_dir(), threads=None, device_id=0, profile=True, dims=dims)
    walls = []
    for index in range(warmup + runs):
        start = time.perf_counter()
        session.run(None, feeds)
        if index >= warmup:
            walls.append(time.perf_counter() - start)
    trace = Path(session.end_profiling())
    events = json.loads(trace.read_text())
    trace.unlink()
    run_starts = sorted(e["ts"] for e in events if e.get("cat") == "Session" and e["name"] == "model_run")
    first_timed = run_starts[warmup]  # node events of the warm-up runs (cuDNN search, engine builds) are left out
    nodes = [e for e in events
             if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] >= first_timed]
    by_op: dict[str, list[float]] = collections.defaultdict(list)
    by_node: dict[str, float] = collections.defaultdict(float)
    by_scope: dict[str, float] = collections.defaultdict(float)
    for event in nodes:
        node = event["name"].removesuffix("_kernel_time")
        by_op[event["args"]["op_name"]].append(event["dur"])
        by_node[f"{event['args']['op_name']} {node}"] += event["dur"]
        # The exporter names nodes after their module ("/skip/Conv_3"); the engine's own nodes are "frame_*" /
        # "warp_*"; ONNX Runtime's fused nodes keep their first node's name.
        by_scope[node.lstrip("/").split("/")[0] if "/" in node else node.split("_")[0]] += event["dur"]
    node_ms = sum(e["dur"] for e in nodes) / 1e3 / runs
    return {
        "model": str(model), "preset": meta["preset"], "provider": name, "size": f"{size[0]}x{size[1]}",
        "runs": runs, "wall_ms_median": 1e3 * statistics.median(walls), "node_ms_per_run": node_ms,
        "nodes_per_run": len(nodes) / runs,
        "op_types": sorted(({"op": op, "nodes_per_run": len(d) / runs, "ms_per_run": sum(d) / 1e3 / runs}
                            for op, d in by_op.items()), key=lambda row: -row["ms_per_run"]),
        "scopes": {scope: t / 1e3 / runs for scope, t in sorted(by_scope.items(), key=lambda item: -item[1])},
        "slowest_nodes": [{"node": n, "ms_per_run": t / 1e3 / runs}
                          for n, t in sorted(by_node.items(), key=lambda item: -item[1])[:15]],
    }


def report(result: dict[str, Any]) -> str:
    lines = [f"{result['preset']} on {result['provider']} at {result['size']}, {result['runs']} runs: "
             f"wall {result['wall_ms_median']:.2f} ms median, nodes {result['node_ms_per_run']:.2f} ms "
             f"({result['nodes_per_run']:.0f} nodes) per run",
             "| op type | nodes | ms per run | share of node time |", "|---|---|---|---|"]
    total = result["node_ms_per_run"] or 1.0
    for row in result["op_types"]:
        lines.append(f"| {row['op']} | {row['nodes_per_run']:.0f} | {row['ms_per_run']:.3f} | "
                     f"{100 * row['ms_per_run'] / total:.1f} % |")
    lines.append("by module: " + ", ".join(f"{scope} {ms:.2f} ms" for scope, ms in list(result["scopes"].items())[:10]))
    lines.append("slowest nodes: " + "; ".join(f"{row['node']} {row['ms_per_run']:.3f} ms"
                                              for row in result["slowest_nodes"][:8]))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stream_fusion.bench.profile_engine",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="base", help="lite, base, cdfusion or a path to an .onnx file")
    parser.add_argument("--provider", default="cpu", choices=["tensorrt", "cuda", "cpu"])
    parser.add_argument("--size", default="640x512", help="WIDTHxHEIGHT (default 640x512)")
    parser.add_argument("--runs", type=int, default=30, help="profiled runs after 3 warm-up runs (default 30)")
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args(argv)
    try:
        size = tuple(int(v) for v in args.size.lower().split("x"))
        assert len(size) == 2 and min(size) > 0
    except (ValueError, AssertionError):
        raise StreamFusionError(f"--size must be WIDTHxHEIGHT, got {args.size!r}") from None
    if args.runs < 1:
        raise StreamFusionError("--runs must be at least 1")
    model = SHIPPED_MODELS.get(args.model, Path(args.model))
    result = profile(model, args.provider, size, args.runs)  # type: ignore[arg-type]
    print(report(result))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    run_cli(main)
