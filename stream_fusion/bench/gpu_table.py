"""The GPU job's JSONs as the Markdown tables docs/engine.md and the README carry, so measured numbers are pasted,
never typed.

    python -m stream_fusion.bench.gpu_table runs/gpu            # the folder `bash stream_fusion/bench/gpu.sh run` wrote

Reads what is there of ``bench_*.json`` (``python -m stream_fusion.bench``), ``variants.json``
(``python -m stream_fusion.bench.variants``) and ``fp16_parity.json`` (``scripts/check_fp16.py``) and prints:

1. per network and precision, the engine as shipped (with its CUDA graph), without the graph, the bare session,
   torch.compile of the same weights in the same run, and the engine as a ratio to torch.compile (same precision);
2. base's candidate exports (issue #16 point 3): the same ratio, frames against the shipped fp32 engine, and what
   the CPU counted of each file;
3. fp16 against fp32 frames on real pairs (issue #16 point 2).

Each table says the GPU, ONNX Runtime and torch versions and the date it was measured on; a missing input file
leaves its table out, a missing measurement is a dash.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from stream_fusion.errors import StreamFusionError, run_cli

def ms(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def ratio(value: float | None, reference: float | None) -> str:
    return "–" if value is None or not reference else f"{value / reference:.2f}x"


def source(machine: dict[str, Any]) -> str:
    return (f"{machine.get('gpu') or 'no GPU'}, onnxruntime {machine.get('onnxruntime')}, torch "
            f"{machine.get('torch') or 'not installed'}, {str(machine.get('date', ''))[:16].replace('T', ' ')} UTC")


def engine_table(reports: list[dict[str, Any]]) -> str:
    """Table 1 from the engine benchmark's reports (every preset, size and GPU precision they hold)."""
    rows: dict[tuple[str, str, str, str], dict[str, float]] = {}
    for report in reports:
        for r in report["results"]:
            provider = "torch" if r["runner"].startswith("torch") else r["provider"]
            key = (r["preset"], r["size"], r["precision"])
            rows.setdefault((*key, provider), {})[r["runner"]] = r["median_ms"]
    lines = [f"Measured: {source(reports[0]['machine'])}; median ms per frame, `python -m stream_fusion.bench`.", "",
             "| network | size | provider | precision | engine (CUDA graph) | without the graph | bare session "
             "| torch.compile | engine / torch.compile |", "|---|---|---|---|---|---|---|---|---|"]
    for (preset, size, precision, provider), runs in sorted(rows.items()):
        if provider == "torch":
            continue
        compiled = rows.get((preset, size, precision, "torch"), {}).get("torch-compile")
        lines.append(f"| {preset} | {size} | {provider} | {precision} | {ms(runs.get('engine'))} | "
                     f"{ms(runs.get('engine-no-graph'))} | {ms(runs.get('session'))} | {ms(compiled)} | "
                     f"{ratio(runs.get('engine'), compiled)} |")
    return "\n".join(lines)


def compile_ms(reports: list[dict[str, Any]], preset: str, size: str, precision: str) -> float | None:
    return next((r["median_ms"] for report in reports for r in report["results"]
                 if (r["preset"], r["size"], r["precision"], r["runner"]) == (preset, size, precision, "torch-compile")),
                None)


def variants_table(report: dict[str, Any], reports: list[dict[str, Any]]) -> str:
    """Table 2: base's candidate exports through the engine."""
    lines = [f"Measured: {source(report['machine'])}; {report['preset']} at {report['size']}, median ms per frame, "
             f"`python -m stream_fusion.bench.variants`; frames against the shipped fp32 engine on {report['pairs']} "
             "real pairs; nodes, full-resolution nodes and GB read+written per frame counted on the CPU from the "
             "file (one kernel per node, before ONNX Runtime's fusions).", "",
             "| variant | precision | engine (CUDA graph) | without the graph | engine / torch.compile | max levels "
             "| nodes | full-res nodes | GB per frame | placement |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["results"]:
        if "error" in r:
            lines.append(f"| {r['variant']} | {r['precision']} | failed: {r['error'][:120]} | | | | {r['nodes']} | "
                         f"{r['full_res_nodes']} | {r['mb_per_frame'] / 1e3:.1f} | |")
            continue
        compiled = compile_ms(reports, report["preset"], report["size"], r["precision"])
        engine = r["engine"]["median_ms"]
        lines.append(f"| {r['variant']} | {r['precision']} | {ms(engine)} | {ms(r['engine-no-graph']['median_ms'])} | "
                     f"{ratio(engine, compiled)} | {r['max_levels_vs_shipped_fp32']} | {r['nodes']} | "
                     f"{r['full_res_nodes']} | {r['mb_per_frame'] / 1e3:.1f} | {r['placement']} |")
    return "\n".join(lines)


def parity_table(report: dict[str, Any]) -> str:
    """Table 3: the fp16 engine's frames against the fp32 engine's."""
    device = report["device"]
    lines = [f"Measured: {device.get('gpu') or 'no GPU'}, onnxruntime {device['onnxruntime']}, "
             f"{device['date'][:16].replace('T', ' ')} UTC; `scripts/check_fp16.py`: every pair as a colour and "
             "as a gray visible frame.", "",
             "| network | provider | size | pairs | frames | within 2 levels | max levels | mean levels |",
             "|---|---|---|---|---|---|---|---|"]
    for name, s in report["networks"].items():
        lines.append(f"| {name} | {s['provider']} | {s['size']} | {s['pairs']} | {s['frames']} | {s['within_2']} | "
                     f"{s['max_levels']} | {s['mean_levels']:.3f} |")
    return "\n".join(lines)


def tables(folder: Path) -> str:
    """Every table the files in ``folder`` make, Markdown, separated by blank lines."""
    reports = [json.loads(path.read_text()) for path in sorted(folder.glob("bench_*.json"))]
    parts = []
    if reports:
        parts.append(engine_table(reports))
    if (folder / "variants.json").is_file():
        parts.append(variants_table(json.loads((folder / "variants.json").read_text()), reports))
    if (folder / "fp16_parity.json").is_file():
        parts.append(parity_table(json.loads((folder / "fp16_parity.json").read_text())))
    if not parts:
        raise StreamFusionError(f"{folder}: no bench_*.json, variants.json or fp16_parity.json to make a table of")
    return "\n\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stream_fusion.bench.gpu_table", description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="the GPU job's output folder ($OUT of gpu.sh run)")
    parser.add_argument("--out", type=Path, help="also write the tables here")
    args = parser.parse_args(argv)
    text = tables(args.folder)
    print(text, end="")
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    run_cli(main)
