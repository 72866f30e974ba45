"""Per-frame latency of the fusion network on every runtime this machine has, same weights, same run.

    python -m stream_fusion.bench --json runs/bench.json --presets lite --sizes 640x512,1280x1024

For each preset and frame size it times: the engine as shipped (``OnnxEngine.fuse`` on a colour pair: colour split,
padding, network, clipping, chroma merge; on a GPU provider its kernels replayed as one CUDA graph), the engine with
a calibration's IR warp (``engine+warp``: a homography, inside the session on a GPU provider, OpenCV on the host with
the CPU provider), on a GPU provider the engine without the CUDA graph (``engine-no-graph``), the bare ONNX Runtime
session (float inputs already prepared; on a GPU provider bound on the device), PyTorch eager, and ``torch.compile``
where it compiles. Providers that do not load
here are listed with the reason instead of timed. Weights: ``stream_fusion/weights/difffuse_<preset>.pt`` when present
(exported to ONNX in a temporary folder so both runtimes run the same weights), else random init at the same
cost, said in the output. A benchmark, so it may import torch; the runtime does not, and a deployment box (no torch)
runs it too: it then times the shipped ONNX files (fp32, and fp16 under CUDA) on every provider and says that the
torch rows were skipped.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
from tqdm import tqdm

from stream_fusion import DEMO_IR, WEIGHTS_DIR
from stream_fusion.bench import cpu_name
from stream_fusion.engine import PROVIDERS, create_engine, import_onnxruntime
from stream_fusion.engine.graph import is_colour_model, model_metadata, read_model
from stream_fusion.engine.precision import shipped_files
from stream_fusion.config import positive_number
from stream_fusion.errors import StreamFusionError, run_cli
from stream_fusion.warp import IrWarp

if TYPE_CHECKING:
    import torch

# A calibration-like homography (rotation, scale, keystone of a few px) for the engine+warp runner.
BENCH_WARP = np.array([[1.01, 0.012, -3.2], [-0.011, 0.99, 4.1], [2e-5, -1e-5, 1.0]])
NO_TORCH = "torch is not installed (a deployment install): no torch rows; pip install stream-fusion[train] for them"


def optional_torch() -> ModuleType | None:
    """torch where it is installed (a development install), else None: the engine rows need only ONNX Runtime."""
    try:
        import torch
    except ModuleNotFoundError as error:
        if error.name != "torch":
            raise
        return None
    return torch


def gpu_name(torch: ModuleType | None) -> str | None:
    """The GPU's name from torch, or from nvidia-smi on a box without torch; None without a GPU."""
    if torch is not None:
        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    if shutil.which("nvidia-smi") is None:
        return None
    query = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True,
                           timeout=30)
    return query.stdout.splitlines()[0].strip() if query.returncode == 0 and query.stdout.strip() else None


def machine(ort: ModuleType, torch: ModuleType | None) -> dict[str, Any]:
    """What the numbers were measured on: CPU model and cores, GPU if any, library versions, load."""
    from stream_fusion.engine.sessions import usable_cores

    return {
        "cpu": cpu_name(),
        "cores": usable_cores(),
        "gpu": gpu_name(torch),
        "onnxruntime": ort.__version__,
        "onnxruntime_providers": ort.get_available_providers(),
        "torch": torch.__version__ if torch is not None else None,
        "python": platform.python_version(),
        "load_average_at_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def load_weights(preset: str) -> tuple[torch.nn.Module, str]:
    """The trained network when its checkpoint ships, else random init (same structure, same cost)."""
    from stream_fusion.training.model import build_model, load_checkpoint

    checkpoint = WEIGHTS_DIR / f"difffuse_{preset}.pt"
    if checkpoint.is_file():
        return load_checkpoint(checkpoint)[0], f"trained ({checkpoint.name})"
    return build_model(preset).eval(), "random init (no checkpoint shipped yet; same cost)"


def sample_pair(width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """A real IR frame and a colour visible frame at the benchmark size (content does not change the cost, but a
    colour frame makes the engine pay for the chroma split and merge)."""
    ir = cv2.imread(str(sorted(DEMO_IR.glob("*.png"))[0]), cv2.IMREAD_GRAYSCALE)
    ir = cv2.resize(ir, (width, height), interpolation=cv2.INTER_LINEAR)
    vis = cv2.applyColorMap(cv2.resize(255 - ir, (width, height)), cv2.COLORMAP_OCEAN)
    return ir, vis


def timed(step: Callable[[], object], iters: int, budget_s: float, warmup: int = 2) -> dict[str, float]:
    """Median, p99 and throughput of ``step`` over ``iters`` runs, fewer (at least 3) if ``budget_s`` runs out."""
    for _ in range(warmup):
        step()
    times: list[float] = []
    start, cpu_start = time.perf_counter(), time.process_time()
    while len(times) < iters and (len(times) < 3 or time.perf_counter() - start < budget_s):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    cpu_ms = (time.process_time() - cpu_start) * 1000 / len(times)
    ms = np.array(times) * 1000
    # cpu_ms: CPU time this process spent per frame, all its threads together. Unlike wall time it barely moves
    # when other jobs share the cores, so it says what a frame costs on a busy machine (spin-waits included).
    return {"median_ms": float(np.median(ms)), "p99_ms": float(np.percentile(ms, 99)),
            "fps": float(len(ms) / ms.sum() * 1000), "n": len(ms), "cpu_ms": float(cpu_ms)}


def bare_session_step(path: Path, provider: str, ir: np.ndarray, vis: np.ndarray) -> Callable[[], object]:
    """The float network alone; on a GPU provider inputs and output stay on the device (no copies timed)."""
    from stream_fusion.engine.sessions import default_cache_dir, open_session, ort

    session, _ = open_session(path.read_bytes(), provider, shapes={"ir": ir.shape, "vis": vis.shape},
                              cache_dir=default_cache_dir(), threads=None, device_id=0)
    if provider == "cpu":
        feeds = {"ir": ir, "vis": vis}
        return lambda: session.run(None, feeds)
    binding = session.io_binding()
    values = [ort.OrtValue.ortvalue_from_numpy(a, "cuda", 0) for a in (ir, vis)]
    binding.bind_ortvalue_input("ir", values[0])
    binding.bind_ortvalue_input("vis", values[1])
    binding.bind_ortvalue_output("fused", ort.OrtValue.ortvalue_from_shape_and_type(vis.shape, np.float32, "cuda", 0))

    def step() -> None:
        session.run_with_iobinding(binding)
        binding.synchronize_outputs()

    return step


def one_line(error: Exception) -> str:
    return " ".join(str(error).split())[:300]


def torch_step(model: torch.nn.Module, ir: np.ndarray, vis: np.ndarray, half: bool) -> Callable[[], object]:
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.float16 if half else torch.float32
    model = model.to(device, dtype)
    a, b = (torch.from_numpy(x).to(device, dtype) for x in (ir, vis))

    def step() -> None:
        with torch.inference_mode():
            model(a, b)
        if device == "cuda":
            torch.cuda.synchronize()

    return step


def prepare(preset: str, workdir: Path, torch: ModuleType | None) -> tuple[Any, dict[str, Path], int, bool, str]:
    """What one preset is timed with: the torch network (None without torch), its ONNX file per precision, the size
    multiple, whether it takes a colour visible frame, and where the weights came from. With torch the checkpoint is
    exported here, so both runtimes run the same weights; without it the shipped ONNX files are timed (the exports of
    the same checkpoint, checked by the tests)."""
    if torch is None:
        files = shipped_files(preset)
        meta = model_metadata(read_model(files["fp32"]))
        return None, files, int(meta["size_multiple"]), is_colour_model(meta), f"shipped {files['fp32'].name}"
    from export.network import export_model

    model, origin = load_weights(preset)
    paths = {"fp32": workdir / f"{preset}_fp32.onnx", "fp16": workdir / f"{preset}_fp16.onnx"}
    export_model(model, paths["fp32"], metadata={"preset": preset, "model_version": f"{preset}-bench",
                                                 "training": origin})
    return model, paths, int(model.size_multiple), getattr(model, "vis_channels", 1) == 3, origin


RUNNERS = ("engine", "engine-no-graph", "engine+warp", "session", "torch-eager", "torch-compile")


def run(presets: list[str], sizes: list[tuple[int, int]], iters: int, budget_s: float, compile_: bool | list[str],
        workdir: Path, save: Callable[[dict[str, Any]], None] = lambda report: None,
        runners: tuple[str, ...] = RUNNERS) -> dict[str, Any]:
    """Time every case; ``save`` gets the report so far after each result (a run cut short keeps what it timed).
    ``compile_``: torch.compile for every precision (True), none (False), or the precisions listed (a GPU job
    short of time compiles fp16 only); ``runners``: which rows to time (all by default)."""
    compiled = (["fp32", "fp16"] if compile_ else []) if isinstance(compile_, bool) else compile_
    ort, torch = import_onnxruntime(), optional_torch()
    report: dict[str, Any] = {"machine": machine(ort, torch), "weights": {}, "unavailable": {}, "results": []}
    if torch is None:
        report["unavailable"]["torch"] = NO_TORCH
    providers = [p for p in ("tensorrt", "cuda", "cpu") if PROVIDERS[p] in ort.get_available_providers()]
    gpu_torch = torch is not None and torch.cuda.is_available()
    cases = [(preset, size) for preset in presets for size in sizes]
    bar = tqdm(total=len(cases), desc="bench", unit="case")
    for preset in presets:
        model, paths, multiple, colour, origin = prepare(preset, workdir, torch)
        report["weights"][preset] = origin
        for width, height in sizes:
            bar.set_postfix_str(f"{preset} {width}x{height}")
            ir8, vis8 = sample_pair(width, height)
            h, w = height + -height % multiple, width + -width % multiple
            ir = np.ascontiguousarray(cv2.resize(ir8, (w, h))[None, None], np.float32) / 255
            vis_planes = (cv2.resize(vis8, (w, h)).transpose(2, 0, 1) if colour
                          else cv2.cvtColor(cv2.resize(vis8, (w, h)), cv2.COLOR_BGR2GRAY)[None])
            vis = np.ascontiguousarray(vis_planes[None], np.float32) / 255

            def record(runner: str, provider: str, precision: str, step: Callable[[], object]) -> None:
                if runner not in runners:
                    return
                try:
                    stats = timed(step, iters, budget_s)
                except Exception as error:  # a runtime that fails here is a result to report, not a crash
                    report["unavailable"][f"{runner}/{provider}/{precision}"] = one_line(error)
                    return
                report["results"].append({"preset": preset, "size": f"{width}x{height}", "runner": runner,
                                          "provider": provider, "precision": precision, **stats})
                save(report)

            dead: set[str] = set()
            onnx_rows = {"engine", "engine-no-graph", "engine+warp", "session"} & set(runners)
            for provider in providers if onnx_rows else []:
                # fp16 only where the provider computes in fp16: TensorRT builds fp16 from the fp32 file itself,
                # CUDA runs an fp16 file; the CPU provider would insert casts around fp32 kernels.
                precisions = {"tensorrt": ["fp16"], "cuda": ["fp32", "fp16"], "cpu": ["fp32"]}[provider]
                for precision in precisions:
                    if provider in dead:
                        continue
                    file = "fp32" if provider != "cuda" else precision
                    if file not in paths:  # the CUDA fp16 file is exported with torch
                        report["unavailable"][f"{provider}/{precision}"] = NO_TORCH
                        continue
                    path = paths[file]
                    if precision == "fp16" and provider == "cuda" and not path.exists():
                        from export.network import export_model

                        export_model(model, path, fp16=True, metadata={"preset": preset, "training": origin,
                                                                       "model_version": f"{preset}-bench"})
                    try:
                        engine = create_engine(path, provider, resolution=(width, height))
                    except StreamFusionError as error:
                        report["unavailable"][provider] = str(error)
                        dead.add(provider)
                        continue
                    # "engine" is the engine as shipped: on a GPU provider with a known size, a CUDA graph
                    record("engine", provider, precision, lambda e=engine: e.fuse(ir8, vis8))
                    if provider != "cpu" and "engine-no-graph" in runners:  # one kernel launch per node
                        plain = create_engine(path, provider, resolution=(width, height), cuda_graph=False)
                        record("engine-no-graph", provider, precision, lambda e=plain: e.fuse(ir8, vis8))
                    warp = IrWarp(BENCH_WARP, (width, height), (width, height))
                    record("engine+warp", provider, precision, lambda e=engine, w=warp: e.fuse(ir8, vis8, w))
                    if "session" in runners:
                        record("session", provider, precision, bare_session_step(path, provider, ir, vis))
            device = "cuda" if gpu_torch else "cpu"
            for precision in (["fp32", "fp16"] if gpu_torch else ["fp32"]) if model is not None else []:
                record("torch-eager", device, precision, torch_step(model, ir, vis, precision == "fp16"))
                if precision in compiled and "torch-compile" in runners:
                    record("torch-compile", device, precision,
                           torch_step(torch.compile(model), ir, vis, precision == "fp16"))
            if model is not None:
                model = model.float().cpu()
            bar.update()
    bar.close()
    report["machine"]["load_average_at_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    return report


def table(report: dict[str, Any]) -> str:
    """The results as a Markdown table (what docs/engine.md shows)."""
    lines = ["| preset | size | runner | provider | precision | median ms | p99 ms | fps | n | CPU ms/frame |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["results"]:
        lines.append(f"| {r['preset']} | {r['size']} | {r['runner']} | {r['provider']} | {r['precision']} | "
                     f"{r['median_ms']:.1f} | {r['p99_ms']:.1f} | {r['fps']:.1f} | {r['n']} | {r['cpu_ms']:.0f} |")
    return "\n".join(lines)


def parse_sizes(text: str) -> list[tuple[int, int]]:
    sizes = []
    for item in text.split(","):
        try:
            width, height = (int(v) for v in item.lower().split("x"))
        except ValueError:
            raise StreamFusionError(f"--sizes takes WIDTHxHEIGHT[,WIDTHxHEIGHT...], got {item!r}") from None
        if width < 8 or height < 8:
            raise StreamFusionError(f"frame size {item} is too small")
        sizes.append((width, height))
    return sizes


def main(argv: list[str] | None = None) -> int:
    torch = optional_torch()
    if torch is not None:
        torch._logging.set_logs(dynamo=logging.ERROR, inductor=logging.ERROR)  # graph-break chatter, not results
    parser = argparse.ArgumentParser(prog="python -m stream_fusion.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, help="also write the full report (machine, weights, results) here")
    parser.add_argument("--sizes", default="640x512,1280x1024", help="WIDTHxHEIGHT list (default 640x512,1280x1024)")
    parser.add_argument("--presets", default="lite,base",
                        help="comma list of lite, base, cdfusion (default lite,base)")
    parser.add_argument("--iters", type=int, default=50, help="timed runs per case (default 50)")
    parser.add_argument("--budget", type=positive_number, default=20.0,
                        help="seconds per case after which fewer runs are kept (at least 3; default 20)")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile (slow to compile on a CPU)")
    parser.add_argument("--compile-precisions", default="fp32,fp16",
                        help="precisions torch.compile runs in, where torch runs fp16 (default fp32,fp16)")
    parser.add_argument("--runners", default=",".join(RUNNERS), help=f"rows to time (default all: {','.join(RUNNERS)})")
    args = parser.parse_args(argv)
    runners = tuple(r.strip() for r in args.runners.split(",") if r.strip())
    compiled = [p.strip() for p in args.compile_precisions.split(",") if p.strip()]
    if not runners or set(runners) - set(RUNNERS):
        raise StreamFusionError(f"--runners takes {', '.join(RUNNERS)}, got {args.runners!r}")
    if set(compiled) - {"fp32", "fp16"}:
        raise StreamFusionError(f"--compile-precisions takes fp32 and/or fp16, got {args.compile_precisions!r}")
    presets = [p.strip() for p in args.presets.split(",") if p.strip()]
    unknown = sorted(set(presets) - {"lite", "base", "cdfusion"})
    if unknown or not presets:
        raise StreamFusionError(f"--presets takes lite, base and/or cdfusion, got {args.presets!r}")
    if args.iters < 3:
        raise StreamFusionError("--iters must be at least 3")
    def save(report: dict[str, Any]) -> None:
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(report, indent=2) + "\n")

    with tempfile.TemporaryDirectory(prefix="stream_fusion_bench_") as workdir:
        report = run(presets, parse_sizes(args.sizes), args.iters, args.budget, [] if args.no_compile else compiled,
                     Path(workdir), save, runners)
    m = report["machine"]
    print(f"machine: {m['cpu']}, {m['cores']} cores, GPU {m['gpu'] or 'none'}, onnxruntime {m['onnxruntime']}, "
          f"torch {m['torch'] or 'not installed'}, load average {m['load_average_at_start']} -> {m['load_average_at_end']}")
    for preset, origin in report["weights"].items():
        print(f"weights {preset}: {origin}")
    print(table(report))
    for what, why in report["unavailable"].items():
        print(f"not timed: {what}: {why}")
    if args.json:
        save(report)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    run_cli(main)
