"""stream_fusion/bench/gpu.sh, the GPU measurement job: its steps keep to the job's deadline and survive each other's failures
(the device machine's minutes are few; a slow or failing step must cost only its own numbers)."""
from __future__ import annotations

import subprocess
from pathlib import Path

JOB = Path(__file__).resolve().parents[1] / "stream_fusion" / "bench" / "gpu.sh"
STREAMS_JOB = JOB.with_name("gpu_streams.sh")


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


def test_install_joins_checks_and_unpacks_the_parts(tmp_path: Path) -> None:
    """The onnxruntime-gpu files travel as parts of one xz tarball (one device call each); the job joins them, refuses
    a set that is not what prepare packed (a part missing, or left from another prepare), and unpacks it once."""
    import tarfile

    payload = tmp_path / "payload"
    (payload / "onnxruntime" / "capi").mkdir(parents=True)
    (payload / "onnxruntime" / "capi" / "lib.so").write_bytes(bytes(range(256)) * 4000)
    packed = tmp_path / "packed.tar.xz"
    with tarfile.open(packed, "w:xz") as tar:
        tar.add(payload / "onnxruntime", arcname="onnxruntime")
    data = packed.read_bytes()
    parts, site, sha = tmp_path / "ortw", tmp_path / "site", tmp_path / "ort.sha256"
    parts.mkdir()
    sha.write_text(__import__("hashlib").sha256(data).hexdigest() + "\n")
    half = len(data) // 2

    def install() -> subprocess.CompletedProcess:
        return subprocess.run(["bash", "-c", f"ORTW={parts} SITE={site} ORT_SHA={sha}; source {JOB}; install_ort"],
                              capture_output=True, text=True, timeout=60)

    assert install().stdout.startswith("no onnxruntime-gpu parts in")
    (parts / "part00").write_bytes(data[:half])
    done = install()
    assert done.returncode == 1 and "do not match what prepare packed" in done.stdout and not site.exists()
    (parts / "part01").write_bytes(data[half:])
    assert install().returncode == 0
    assert (site / "onnxruntime" / "capi" / "lib.so").read_bytes() == bytes(range(256)) * 4000
    (parts / "part01").write_bytes(b"stale")  # unpacked already: not joined again
    assert install().returncode == 0


def test_the_job_measures_issue_16_most_important_first() -> None:
    """The order is the plan: the fp16 evidence, the graph's distinct frames (fp32 and fp16 files), base with
    torch.compile, base's variants, lite and cdfusion; the tables come last, outside the steps' budget."""
    text = JOB.read_text()
    run = text[text.index("run() {"):]
    order = [run.index(marker) for marker in (
        'step 120 "fp16 vs fp32 frames', "--cuda-graph", 'step 170 "bench base 640x512"', "stream_fusion.bench.variants",
        'step 150 "bench lite+cdfusion', "stream_fusion.bench.gpu_table")]
    assert order == sorted(order)
    assert "--record \"$OUT/fp16_verified.json\"" in run and "--runners engine,engine-no-graph,session,torch-compile" in run
    routes = text.split("FP16_ROUTES=", 1)[1].splitlines()[0].split(",")
    assert routes[:3] == ["lite", "base", "cdfusion"]
    assert all((JOB.parents[2] / path).is_file() for path in routes[3:]) and len(routes) == 6


def test_the_streams_job_installs_into_a_venv_and_stops_at_a_missing_part(tmp_path: Path) -> None:
    """Issue #14's GPU job: both packs go into one venv over the machine's python3 (pytriton finds its tritonserver
    libraries only from a site-packages); without the parts it says which are missing, in one line, and stops."""
    done = subprocess.run(["bash", str(STREAMS_JOB)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "usage: bash stream_fusion/bench/gpu_streams.sh prepare|run" in done.stderr
    env = f"SERVE_VENV={tmp_path}/venv ORTW={tmp_path}/ortw OUT={tmp_path}/out"
    done = subprocess.run(["bash", "-c", f"{env} bash {STREAMS_JOB} run"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and f"no onnxruntime-gpu parts in {tmp_path}/ortw" in done.stdout
    assert (tmp_path / "venv" / "bin" / "python").exists() and "no onnxruntime-gpu parts" in (tmp_path / "out" / "log.txt").read_text()
    run = STREAMS_JOB.read_text().split("run_streams() {", 1)[1]
    assert '--model lite,base' in run and '"${STREAMS:-1,2,4,8,16}"' in run and "--hop" in run
    assert '--server-python "$python"' in run and '--provider "${PROVIDER:-cuda}"' in run
