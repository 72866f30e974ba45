"""Time the candidate exports of ``python -m export.variants`` through the engine on a GPU (issue #16 point 3).

    python -m stream_fusion.bench.variants --dir .gpu/variants --provider cuda --json runs/variants.json

For each file of the folder's ``manifest.json`` (fp16 first, the likelier to reach 5 ms): where its nodes run (the
export's placement check: a node a GPU provider cannot take runs on the CPU, which a timing alone would hide), the
engine as shipped (with its CUDA graph) and without the graph, median of ``--iters`` frames of a real colour pair at
``--size``, and how far its frames are from the shipped fp32 engine's on real pairs (largest difference in grey
levels: a faster file must give the same picture). Then the channels-last session (the CUDA provider's
``prefer_nhwc`` option, no file of its own) on the shipped files. A file that fails is a result with its reason;
the JSON is rewritten after every file, so a run cut short keeps what it measured.
"""
from __future__ import annotations

import argparse
import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from stream_fusion import DATA_DIR
from stream_fusion.bench.engine import machine, one_line, optional_torch, timed
from stream_fusion.engine import create_engine, import_onnxruntime
from stream_fusion.config import positive_number
from stream_fusion.errors import StreamFusionError, run_cli


@contextlib.contextmanager
def cuda_option(name: str, value: str) -> Iterator[None]:
    """Sessions opened inside get one more CUDA provider option (``prefer_nhwc``: channels-last kernels, the
    provider inserting the layout transposes itself); an experiment's switch, so the bench sets it, not the engine."""
    from stream_fusion.engine import sessions

    original = sessions.provider_options

    def with_option(provider: str, **kwargs: Any) -> dict[str, str]:
        options = original(provider, **kwargs)
        return {**options, name: value} if provider == "cuda" else options

    sessions.provider_options = with_option
    try:
        yield
    finally:
        sessions.provider_options = original


def real_pairs(count: int, size: tuple[int, int]) -> list[tuple[np.ndarray, np.ndarray]]:
    """``count`` eval pairs (alternating TNO-25 and RoadScene-50), resized to ``size``: IR gray, visible BGR."""
    listings = [sorted((DATA_DIR / "eval" / split / "ir").glob("*.png")) for split in ("tno25", "roadscene50")]
    paths = [listings[k % 2][k // 2] for k in range(count) if k // 2 < len(listings[k % 2])]
    if not paths:
        raise StreamFusionError(f"no evaluation pairs under {(DATA_DIR / 'eval').resolve()}")
    pairs = []
    for path in paths:
        ir = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        vis = cv2.imread(str(path.parent.parent / "vis" / path.name), cv2.IMREAD_COLOR)
        pairs.append((cv2.resize(ir, size, interpolation=cv2.INTER_AREA),
                      cv2.resize(vis, size, interpolation=cv2.INTER_AREA)))
    return pairs


def placement(path: Path) -> str:
    """The export's GPU placement line for ``path`` (needs torch, which the export imports; else said)."""
    if optional_torch() is None:
        return "placement not checked: torch is not installed"
    import onnx

    from export.network import gpu_placement

    return gpu_placement(onnx.load(str(path)))


def measure(path: Path, provider: str, size: tuple[int, int], iters: int, budget: float,
            pairs: list[tuple[np.ndarray, np.ndarray]], expected: list[np.ndarray]) -> dict[str, Any]:
    """One file: placement, the engine with and without its CUDA graph, its frames against ``expected``."""
    row: dict[str, Any] = {"placement": placement(path)}
    ir, vis = pairs[0]
    for runner, options in (("engine", {}), ("engine-no-graph", {"cuda_graph": False})):
        engine = create_engine(path, provider, resolution=size, **options)
        row[runner] = timed(lambda e=engine: e.fuse(ir, vis), iters, budget)
        if runner == "engine":
            row["provider"], row["cuda_graph"] = engine.provider, bool(getattr(engine, "cuda_graph", False))
            levels = [int(np.abs(engine.fuse(i, v).astype(np.int16) - e).max()) for (i, v), e in zip(pairs, expected)]
            row["max_levels_vs_shipped_fp32"] = max(levels)
    return row


def run(folder: Path, provider: str, size: tuple[int, int], iters: int, budget: float, pair_count: int,
        save: Any = lambda report: None) -> dict[str, Any]:
    manifest = json.loads((folder / "manifest.json").read_text())
    preset = manifest["preset"]
    pairs = real_pairs(pair_count, size)
    reference = create_engine(preset, provider, precision="fp32", resolution=size)
    expected = [reference.fuse(ir, vis).astype(np.int16) for ir, vis in pairs]
    report: dict[str, Any] = {"machine": machine(import_onnxruntime(), optional_torch()), "preset": preset,
                              "size": f"{size[0]}x{size[1]}", "pairs": len(pairs), "results": []}
    rows = sorted(manifest["files"], key=lambda row: row["precision"] != "fp16")  # fp16 first, stable otherwise
    cases = [(row, None) for row in rows] + [
        (row, ("prefer_nhwc", "1")) for row in rows if row["variant"] in ("twopass", "gn-contrib")]
    for row, option in cases:
        name = row["variant"] + ("+prefer_nhwc" if option else "")
        result = {"variant": name, "precision": row["precision"], "file": row["file"], "nodes": row["nodes"],
                  "full_res_nodes": row["full_res_nodes"], "mb_per_frame": row["mb_per_frame"]}
        try:
            with cuda_option(*option) if option else contextlib.nullcontext():
                result |= measure(folder / row["file"], provider, size, iters, budget, pairs, expected)
        except Exception as error:  # a file a provider cannot run is a result, not the end of the job
            result["error"] = one_line(error)
        report["results"].append(result)
        save(report)
        timing = result.get("engine", {}).get("median_ms")
        print(f"{name} {row['precision']}: " + (f"engine {timing:.2f} ms, without the graph "
              f"{result['engine-no-graph']['median_ms']:.2f} ms, max {result['max_levels_vs_shipped_fp32']} levels "
              f"from the shipped fp32 engine; {result['placement']}" if timing else f"failed: {result['error']}"),
              flush=True)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stream_fusion.bench.variants",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=Path(".gpu/variants"), help="python -m export.variants --out")
    parser.add_argument("--provider", default="cuda", choices=["tensorrt", "cuda", "cpu"])
    parser.add_argument("--size", default="640x512", help="WIDTHxHEIGHT (default 640x512)")
    parser.add_argument("--iters", type=int, default=100, help="timed frames per case (default 100)")
    parser.add_argument("--budget", type=positive_number, default=3.0, help="seconds per case before fewer frames are kept")
    parser.add_argument("--pairs", type=int, default=4, help="real pairs the frames are compared on (default 4)")
    parser.add_argument("--json", type=Path, help="write the report here (after every file)")
    args = parser.parse_args(argv)
    if not (args.dir / "manifest.json").is_file():
        raise StreamFusionError(f"no {args.dir / 'manifest.json'}: build the files with python -m export.variants "
                                f"--out {args.dir}")
    try:
        width, height = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        raise StreamFusionError(f"--size must be WIDTHxHEIGHT, got {args.size!r}") from None

    def save(report: dict[str, Any]) -> None:
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(report, indent=1))

    run(args.dir, args.provider, (width, height), args.iters, args.budget, args.pairs, save)
    return 0


if __name__ == "__main__":
    run_cli(main)
