"""python -m stream_fusion.bench.gpu_table: the GPU job's JSONs as the tables the docs carry, ratios computed, not typed."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from stream_fusion.bench import gpu_table
from stream_fusion.errors import StreamFusionError

MACHINE = {"gpu": "NVIDIA H200", "onnxruntime": "1.31.1", "torch": "2.11.0+cu130", "date": "2026-12-06T09:10:11+00:00"}


def result(preset: str, runner: str, provider: str, precision: str, ms: float) -> dict:
    return {"preset": preset, "size": "640x512", "runner": runner, "provider": provider, "precision": precision,
            "median_ms": ms, "p99_ms": ms, "fps": 1000 / ms, "n": 100, "cpu_ms": 1.0}


def write_run(folder: Path) -> None:
    base = [result("base", "engine", "cuda", "fp32", 6.72), result("base", "engine-no-graph", "cuda", "fp32", 7.76),
            result("base", "session", "cuda", "fp32", 6.48), result("base", "torch-compile", "cuda", "fp32", 6.1),
            result("base", "engine", "cuda", "fp16", 4.9), result("base", "torch-compile", "cuda", "fp16", 4.9 / 1.25),
            result("base", "torch-eager", "cuda", "fp16", 11.3)]
    lite = [result("lite", "engine", "cuda", "fp32", 2.12)]  # no torch.compile in fp32: a dash
    (folder / "bench_base.json").write_text(json.dumps({"machine": MACHINE, "results": base}))
    (folder / "bench_lite_cdfusion.json").write_text(json.dumps({"machine": MACHINE, "results": lite}))
    timing = {"median_ms": 4.2}
    (folder / "variants.json").write_text(json.dumps({"machine": MACHINE, "preset": "base", "size": "640x512",
                                                      "pairs": 4, "results": [
        {"variant": "gn-onnx", "precision": "fp16", "nodes": 430, "full_res_nodes": 354, "mb_per_frame": 6339.0,
         "engine": timing, "engine-no-graph": {"median_ms": 5.0}, "max_levels_vs_shipped_fp32": 1,
         "placement": "GPU placement (cuda): every node runs on the GPU"},
        {"variant": "gn-contrib", "precision": "fp32", "nodes": 431, "full_res_nodes": 355, "mb_per_frame": 13862.0,
         "error": "NOT_IMPLEMENTED: GroupNorm"}]}))
    (folder / "fp16_parity.json").write_text(json.dumps({"device": {"gpu": "NVIDIA H200", "onnxruntime": "1.31.1",
                                                                    "date": "2026-12-06T09:05:00+00:00"},
                                                         "networks": {"base": {"provider": "cuda", "size": "640x512",
                                                                               "pairs": 75, "frames": 150,
                                                                               "within_2": 150, "max_levels": 1,
                                                                               "mean_levels": 0.0253}}}))


def test_tables_carry_every_measurement_and_the_ratio_to_torch_compile(tmp_path: Path) -> None:
    write_run(tmp_path)
    text = gpu_table.tables(tmp_path)
    assert "Measured: NVIDIA H200, onnxruntime 1.31.1, torch 2.11.0+cu130, 2026-12-06 09:10 UTC" in text
    assert "| base | 640x512 | cuda | fp32 | 6.72 | 7.76 | 6.48 | 6.10 | 1.10x |" in text
    assert "| base | 640x512 | cuda | fp16 | 4.90 | – | – | 3.92 | 1.25x |" in text
    assert "| lite | 640x512 | cuda | fp32 | 2.12 | – | – | – | – |" in text
    assert "torch-eager" not in text and "| torch |" not in text
    assert "| gn-onnx | fp16 | 4.20 | 5.00 | 1.07x | 1 | 430 | 354 | 6.3 | GPU placement (cuda): every node" in text
    assert "| gn-contrib | fp32 | failed: NOT_IMPLEMENTED: GroupNorm |" in text
    assert "| base | cuda | 640x512 | 75 | 150 | 150 | 1 | 0.025 |" in text


def test_the_cli_writes_what_it_prints_and_an_empty_folder_is_one_line(tmp_path: Path, capsys) -> None:
    write_run(tmp_path)
    assert gpu_table.main([str(tmp_path), "--out", str(tmp_path / "tables.md")]) == 0
    assert capsys.readouterr().out == (tmp_path / "tables.md").read_text()
    with pytest.raises(StreamFusionError, match="no bench_\\*.json, variants.json or fp16_parity.json"):
        gpu_table.tables(tmp_path / "empty")
