"""Benchmarks: what the engine, the pipeline and the alignment check cost on the machine they run on.

They ship with the package, so a deployment box can measure itself; the figures they produced are in docs/.

* ``python -m stream_fusion.bench`` (:mod:`.engine`): per-frame latency of the network on every runtime here;
* ``python -m stream_fusion.bench.pipeline``: replay throughput and live capture-to-publish latency;
* ``python -m stream_fusion.bench.profile_engine``: where a frame's time goes inside the ONNX Runtime session;
* ``python -m stream_fusion.bench.align``: cost and accuracy of the alignment check and the calibration (needs the
  eval pairs);
* ``python -m stream_fusion.bench.variants``: candidate exports of a network (``python -m export.variants``) through
  the engine, for issue #16's base target;
* ``bash stream_fusion/bench/gpu.sh``: the GPU measurement as one prepared job (from a checkout), and
  ``python -m stream_fusion.bench.gpu_table``: its JSONs as the tables the docs carry.
"""
from __future__ import annotations

import platform
from pathlib import Path


def cpu_name() -> str:
    """The CPU model every report names (Linux's /proc/cpuinfo), else what the platform says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
