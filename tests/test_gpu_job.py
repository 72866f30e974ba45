"""stream_fusion/bench/gpu.sh, the GPU measurement job: its steps keep to the job's deadline and survive each other's failures
(the device machine's minutes are few; a slow or failing step must cost only its own numbers)."""
from __future__ import annotations

import subprocess
from pathlib import Path

JOB = Path(__file__).resolve().parents[1] / "stream_fusion" / "bench" / "gpu.sh"


def test_steps_keep_to_the_deadline_and_survive_failures() -> None:
    script = (f"source {JOB}; MIN_STEP=1; DEADLINE=$((SECONDS + 3)); "
              "step 100 fine true; step 100 failing false; step 100 slow sleep 30; step 100 late true; echo end")
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60)
    lines = [line for line in done.stdout.splitlines() if line.startswith("===") or line == "end"]
    assert lines[0].startswith("=== fine (") and ("limit 3s" in lines[0] or "limit 2s" in lines[0])
    assert "=== failing: exit status 1" in lines
    assert any(line.startswith("=== slow (") for line in lines)
    assert any(line.startswith("=== slow: exit status 124 (time limit)") for line in lines)
    assert "=== late: skipped, the job's time is spent" in lines and lines[-1] == "end"


def test_without_a_command_it_says_how_to_use_it() -> None:
    done = subprocess.run(["bash", str(JOB)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "usage: bash stream_fusion/bench/gpu.sh prepare|run" in done.stderr
