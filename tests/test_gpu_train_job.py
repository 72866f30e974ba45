"""scripts/gpu_train.sh, the GPU training job: it says how to use it, and its steps keep to the job's deadline and
report a failure without ending the job (an export that fails must not cost the weights already trained)."""
from __future__ import annotations

import subprocess
from pathlib import Path

JOB = Path(__file__).resolve().parents[1] / "scripts" / "gpu_train.sh"


def test_without_a_command_it_says_how_to_use_it() -> None:
    done = subprocess.run(["bash", str(JOB)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "usage: bash scripts/gpu_train.sh prepare | run [CONFIG] [EPOCHS]" in done.stderr


def test_steps_keep_to_the_deadline_and_survive_failures() -> None:
    script = (f"source {JOB}; MIN_STEP=1; DEADLINE=$((SECONDS + 3)); "
              "step 100 fine true; step 100 failing false; step 100 slow sleep 30; step 100 late true; echo end")
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60)
    lines = [line for line in done.stdout.splitlines() if line.startswith("===") or line == "end"]
    assert "=== failing: exit status 1" in lines
    assert any(line.startswith("=== slow: exit status 124 (time limit)") for line in lines)
    assert "=== late: skipped, the job's time is spent" in lines and lines[-1] == "end"


def test_the_job_trains_the_config_it_names() -> None:
    text = JOB.read_text()
    default = text.split("local config=${1:-")[1].split("}")[0]
    assert (JOB.parents[1] / default).is_file()
