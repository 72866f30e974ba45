"""Many camera pairs: N concurrent streams fused each by its own local engine, or all by one fusion server.

    python -m stream_fusion.bench.streams --streams 1,2,4,8 [--model lite] [--seconds 10] [--fps 30] [--json F]

Each stream is what an edge box runs: the real pipeline (capture threads, live pairing, alignment check, fusion,
ZeroMQ publisher with a subscriber draining it on 127.0.0.1) over a 640x512 IR / visible pair of video files (the
demo clip scaled up, looped) read live at ``--fps``: a stream that cannot keep up sheds frames, and every drop is
counted. For each N it runs (a) ``local``: N pipelines, each with its own engine (ONNX Runtime in this process:
what N boxes fusing for themselves cost, here all on this machine's processors), and (b) ``server``: the same N
pipelines with ``--model triton://...``, all fused by one ``python -m stream_fusion.serve`` (started here from
``--server-python``, default ``.venv-serve/bin/python``) or by the server ``--server HOST:PORT`` names (a tritonserver
container). Per run: the aggregate fused frames/s, each stream's fps, p50 / p99 capture-to-publish latency and drops.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from stream_fusion.bench import cpu_name
from stream_fusion.bench.pipeline import run as run_pipeline
from stream_fusion.bench.pipeline import write_scaled_clip
from stream_fusion.bench.server import SERVE_PYTHON, ServerProcess
from stream_fusion.engine import SHIPPED_MODELS, create_engine
from stream_fusion.engine.sessions import usable_cores
from stream_fusion.config import positive_number
from stream_fusion.errors import StreamFusionError, run_cli

SIZE = (640, 512)


def run_streams(count: int, model: str, clip: tuple[Path, Path], fps: float, seconds: float) -> dict[str, Any]:
    """``count`` live pipelines at once, each fusing with ``model`` (a name: its own engine; a triton:// URL: the
    server's); what each delivered."""
    results: list[dict[str, Any] | None] = [None] * count
    errors: list[str] = []
    # Built one after the other, before the streams start: opening sessions at once would race over the process's
    # stdout and stderr, which ONNX Runtime's provider probing redirects while it runs.
    engines = [create_engine(model, "auto", resolution=SIZE) for _ in range(count)]

    def one(index: int) -> None:
        try:
            summary, received, engine = run_pipeline(*clip, engines[index], live=True, pace_fps=fps, loop=True, limit=None,
                                                     seconds=seconds, hwm=2)
        except Exception as error:  # noqa: BLE001 - reported in the results, the other streams go on
            errors.append(f"stream {index}: {error}")
            return
        if summary.error is not None:
            errors.append(f"stream {index}: {summary.error}")
        median, p99 = summary.latency_ms.get("total", (float("nan"), float("nan")))
        results[index] = {"engine": engine, "frames": summary.frames, "fps": round(summary.fps, 2),
                          "p50_ms": round(median, 1), "p99_ms": round(p99, 1), "drops": sum(summary.drops.values()),
                          "received": received}

    threads = [threading.Thread(target=one, args=(k,)) for k in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    streams = [result for result in results if result is not None]
    return {
        "streams": count,
        "aggregate_fps": round(sum(s["fps"] for s in streams), 2),
        "p50_ms_median": round(float(np.median([s["p50_ms"] for s in streams])), 1) if streams else None,
        "p99_ms_worst": max((s["p99_ms"] for s in streams), default=None),
        "drops": sum(s["drops"] for s in streams),
        "per_stream": streams,
        "errors": errors,
    }


def served_counts(address: str, model: str) -> tuple[int, int]:
    """Triton's count of frames inferred and of network runs (batches) for ``model`` so far."""
    import tritonclient.grpc as grpcclient

    stats = grpcclient.InferenceServerClient(address).get_inference_statistics(model).model_stats[0]
    return stats.inference_count, stats.execution_count


def hop_cost(address: str, model: str, frames: int = 30) -> dict[str, Any]:
    """What the network hop adds to one frame, one stream alone (nothing to batch with): the requests the remote
    engine sends for a 640x512 colour pair, timed by the client, less the server's own time for the same requests
    (Triton's statistics: queue, input, network run, output), both averaged over the same ``frames`` requests so a
    noisy machine moves both alike. Also the whole ``fuse`` (host steps included), local and through the server."""
    import tritonclient.grpc as grpcclient

    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (SIZE[1] // 16, SIZE[0] // 16, 3), np.uint8)
    vis = np.ascontiguousarray(np.repeat(np.repeat(small, 16, axis=0), 16, axis=1))
    ir = vis[:, :, 1].copy()
    fuse_ms = {}
    remote = create_engine(f"triton://{address}/{model}", resolution=SIZE)
    for name, engine in (("local", create_engine(model, "auto", resolution=SIZE)), ("remote", remote)):
        runs = []
        for _ in range(frames):
            started = time.perf_counter()
            engine.fuse(ir, vis)
            runs.append((time.perf_counter() - started) * 1000)
        fuse_ms[name] = round(float(np.median(runs)), 1)
    sent = vis[None] if remote.colour else cv2.cvtColor(vis, cv2.COLOR_BGR2YCrCb)[None, None, :, :, 0]
    inputs = []
    for name, array in (("ir", ir[None, None]), ("vis", np.ascontiguousarray(sent))):
        tensor = grpcclient.InferInput(name, list(array.shape), "UINT8")
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    client = grpcclient.InferenceServerClient(address)

    def server_ns() -> tuple[int, int]:
        stats = client.get_inference_statistics(model).model_stats[0].inference_stats
        return (stats.queue.ns + stats.compute_input.ns + stats.compute_infer.ns + stats.compute_output.ns,
                stats.success.count)

    before, client_s = server_ns(), 0.0
    for _ in range(frames):
        started = time.perf_counter()
        client.infer(model, inputs)
        client_s += time.perf_counter() - started
    after = server_ns()
    requests = after[1] - before[1]
    server_ms = (after[0] - before[0]) / requests / 1e6
    round_trip_ms = client_s / frames * 1000
    return {"model": model, "requests": requests, "local_fuse_ms": fuse_ms["local"],
            "remote_fuse_ms": fuse_ms["remote"], "round_trip_ms": round(round_trip_ms, 1),
            "server_ms": round(server_ms, 1), "hop_ms": round(round_trip_ms - server_ms, 1),
            "bytes_per_frame": int(ir.size + sent.size + sent.size)}


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| model | mode | streams | fused fps (all) | fps per stream | p50 ms | p99 ms (worst) | drops | "
             "mean batch |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        per = r["aggregate_fps"] / r["streams"]
        lines.append(f"| {r['model']} | {r['mode']} | {r['streams']} | {r['aggregate_fps']:.1f} | {per:.1f} | "
                     f"{r['p50_ms_median']} | {r['p99_ms_worst']} | {r['drops']} | {r.get('mean_batch', '-')} |")
    return "\n".join(lines)


def parse_list(text: str, what: str, convert: type) -> list:
    try:
        values = [convert(item) for item in text.split(",") if item.strip()]
    except ValueError:
        raise StreamFusionError(f"--{what} takes a comma-separated list, got {text!r}") from None
    if not values:
        raise StreamFusionError(f"--{what} is empty")
    return values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stream_fusion.bench.streams", description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", default="1,2,4,8", help="stream counts to run (default 1,2,4,8)")
    parser.add_argument("--model", default="lite", help="network(s), comma-separated (default lite)")
    parser.add_argument("--fps", type=positive_number, default=30.0, help="each camera pair's frame rate (default 30)")
    parser.add_argument("--seconds", type=positive_number, default=10.0, help="duration of each run (default 10)")
    parser.add_argument("--modes", default="local,server", help="local, server or both (default)")
    parser.add_argument("--server", metavar="HOST:PORT", help="a running fusion server to use instead of starting one")
    parser.add_argument("--server-python", type=Path, default=SERVE_PYTHON,
                        help="interpreter with the [serve] extra (default .venv-serve/bin/python)")
    parser.add_argument("--provider", default="auto", help="the started server's provider (default auto)")
    parser.add_argument("--hop", action="store_true", help="also measure what the network hop adds to one frame")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    counts = parse_list(args.streams, "streams", int)
    models = parse_list(args.model, "model", str)
    modes = parse_list(args.modes, "modes", str)
    if unknown := sorted(set(models) - set(SHIPPED_MODELS)):
        raise StreamFusionError(f"--model {', '.join(unknown)}: choose among {', '.join(SHIPPED_MODELS)}")
    if unknown := sorted(set(modes) - {"local", "server"}):
        raise StreamFusionError(f"--modes {', '.join(unknown)}: local and/or server")
    server = None
    if "server" in modes and args.server is None:
        server = ServerProcess(models, python=args.server_python, provider=args.provider)
        server.start()
    address = args.server or (server.address if server else None)
    report: dict[str, Any] = {
        "command": "python -m stream_fusion.bench.streams " + " ".join(
            f"--{key.replace('_', '-')} {value}" for key, value in vars(args).items()
            if value is not None and key not in ("json", "server_python")),
        "machine": f"{cpu_name()}, {usable_cores()} cores usable",
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "size": f"{SIZE[0]}x{SIZE[1]}", "fps_per_stream": args.fps, "seconds": args.seconds,
        "server": f"{address} ({'started here: ' + args.provider if server else 'given'})" if address else None,
        "results": [],
    }
    try:
        with tempfile.TemporaryDirectory(prefix="stream_fusion_streams_") as tmp:
            clip = write_scaled_clip(Path(tmp), SIZE)
            if args.hop and address:
                report["hop"] = [hop_cost(address, model) for model in models]
                for hop in report["hop"]:
                    print(f"{hop['model']} one frame: fuse local {hop['local_fuse_ms']} ms, through the server "
                          f"{hop['remote_fuse_ms']} ms; a request's round trip {hop['round_trip_ms']} ms, of which "
                          f"the server {hop['server_ms']} ms: hop {hop['hop_ms']} ms", flush=True)
            for model in models:
                for mode in modes:
                    target = model if mode == "local" else f"triton://{address}/{model}"
                    for count in counts:
                        before = served_counts(address, model) if mode == "server" else None
                        row = {"model": model, "mode": mode, **run_streams(count, target, clip, args.fps,
                                                                           args.seconds)}
                        if before is not None:  # how many frames the server ran per network run, on average
                            after = served_counts(address, model)
                            row["mean_batch"] = round((after[0] - before[0]) / max(1, after[1] - before[1]), 2)
                        report["results"].append(row)
                        print(f"{model} {mode:6s} {count:2d} streams: {row['aggregate_fps']:6.1f} fps fused, "
                              f"p50 {row['p50_ms_median']} ms, p99 {row['p99_ms_worst']} ms, drops {row['drops']}"
                              + (f", mean batch {row['mean_batch']}" if "mean_batch" in row else "")
                              + (f", errors: {'; '.join(row['errors'])}" if row["errors"] else ""), flush=True)
    finally:
        if server is not None:
            server.stop()
    print(f"machine: {report['machine']}")
    print(table(report["results"]))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    run_cli(main)
