#!/usr/bin/env bash
# The GPU engine's measurements (issue #4) as one prepared job, sized for a lent GPU machine's few minutes.
#
#   bash stream_fusion/bench/gpu.sh prepare     # here, once: onnxruntime-gpu in parts under .gpu/ (git-ignored), eval pairs
#   bash stream_fusion/bench/gpu.sh run         # there, after the parts have been copied to /tmp/ortw: install, measure
#
# Why parts: the onnxruntime-gpu wheel (~256 MB, CUDA 13) is larger than what one call to the lent machine may carry
# (64 MiB with the working tree), and that machine reaches no package index (../shared/docs/gpu.md). So `prepare`
# splits it into .gpu/p0 ... .gpu/pN (50 MB each); each call to the machine carries one of them and copies it to
# /tmp/ortw, back to back (the machine is handed back after ~30 s idle); the last call carries the last part and
# .gpu/eval, and runs `bash stream_fusion/bench/gpu.sh run` (docs/engine.md, "Measuring on a GPU machine").
#
# `run` writes everything under $OUT (the device tool's folder that comes back; else runs/gpu): log.txt, the
# benchmark JSONs and the kernel profiles. Each step has its own time limit, so a slow step costs its own numbers,
# not the others'.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
WHEEL=onnxruntime_gpu-1.31.1-cp312-cp312-manylinux_2_28_x86_64.whl
DATA=${STREAM_FUSION_DATA:-../shared/data}  # where stream_fusion.DATA_DIR looks

prepare() {
    set -e
    grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
    rm -rf .gpu && mkdir -p .gpu/eval /tmp/ortgpu
    [ -f "/tmp/ortgpu/$WHEEL" ] || python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 -d /tmp/ortgpu onnxruntime-gpu==1.31.1
    (cd /tmp/ortgpu && rm -f part* && split -b 50M -d "$WHEEL" part)
    local n=0
    for part in /tmp/ortgpu/part*; do mkdir -p ".gpu/p$n" && cp "$part" ".gpu/p$n/"; n=$((n + 1)); done
    sha256sum "/tmp/ortgpu/$WHEEL" | cut -d' ' -f1 > .gpu/eval/wheel.sha256
    # Two pairs of each eval split: the export's parity check reads $DATA/eval, which does not travel.
    for split in tno25 roadscene50; do
        for kind in ir vis; do
            mkdir -p ".gpu/eval/$split/$kind"
            ls "$DATA/eval/$split/$kind" | sort | head -2 | while read -r name; do
                cp "$DATA/eval/$split/$kind/$name" ".gpu/eval/$split/$kind/"
            done
        done
    done
    echo "prepared $n parts:"; du -sh .gpu/p* .gpu/eval
    echo "calls: for each part K but the last: carry [\".gpu/pK\"], command: mkdir -p /tmp/ortw && cp .gpu/pK/* /tmp/ortw/"
    echo "last:  carry [\".gpu/p$((n - 1))\", \".gpu/eval\"], command: mkdir -p /tmp/ortw && cp .gpu/p$((n - 1))/* /tmp/ortw/ && bash stream_fusion/bench/gpu.sh run"
}

step() {  # step SECONDS NAME COMMAND...: one measurement, limited in time, its failure reported and survived
    local left=$((DEADLINE - SECONDS)) name=$2
    local limit=$(($1 < left ? $1 : left))
    shift 2
    if [ "$limit" -lt "${MIN_STEP:-20}" ]; then echo "=== $name: skipped, the job's time is spent"; return; fi
    echo "=== $name ($(date -u +%H:%M:%S), limit ${limit}s): $*"
    timeout "$limit" "$@"
    local status=$?
    [ $status -eq 0 ] || echo "=== $name: exit status $status$([ $status -eq 124 ] && echo ' (time limit)')"
}

run() {
    OUT=${OUT:-runs/gpu}
    # The whole job ends within BUDGET seconds (default 540: a device call may run 600), most important step first.
    DEADLINE=$((SECONDS + ${BUDGET:-540}))
    mkdir -p "$OUT"
    exec > >(tee "$OUT/log.txt") 2>&1
    export PYTHONUNBUFFERED=1
    if [ ! -d /tmp/site/onnxruntime/capi ]; then
        cat /tmp/ortw/part* > "/tmp/ortw/$WHEEL" || { echo "no wheel parts in /tmp/ortw"; exit 1; }
        if [ -f .gpu/eval/wheel.sha256 ] && [ "$(sha256sum "/tmp/ortw/$WHEEL" | cut -d' ' -f1)" != "$(cat .gpu/eval/wheel.sha256)" ]; then
            echo "the joined wheel does not match the one prepared: a part is missing or stale"; ls -la /tmp/ortw; exit 1
        fi
        python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "/tmp/ortw/$WHEEL" || exit 1
    fi
    export PYTHONPATH="/tmp/site:$PWD"
    if [ -d .gpu/eval ] && [ ! -e "$DATA/eval" ]; then
        mkdir -p "$DATA" && ln -s "$PWD/.gpu/eval" "$DATA/eval"
    fi
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
    python3 -c "import onnxruntime as ort, torch; ort.preload_dlls(); print('onnxruntime', ort.__version__, ort.get_available_providers(), '| torch', torch.__version__, torch.cuda.get_device_name(0))"
    # 1. The target: base at 640x512 through the engine (CUDA fp32 and fp16, with and without a CUDA graph), next to
    #    PyTorch eager and torch.compile, same weights, same run.
    step 300 "bench base 640x512" python3 -m stream_fusion.bench --presets base --sizes 640x512 --iters 200 --budget 6 --json "$OUT/bench_base_640x512.json"
    # 2. The same frames as the CPU engine? (the per-pixel work runs inside the session on a GPU provider)
    step 90 "routes: the CUDA engine against the CPU engine" python3 scripts/check_routes.py --provider cuda --json "$OUT/routes.json"
    step 60 "routes: with a CUDA graph, new frames reach it" python3 scripts/check_routes.py --provider cuda --models lite,base --pairs 1 --cuda-graph --json "$OUT/routes_graph.json"
    # 3. Every node on the GPU? (the export's placement check) And where the time goes: launch-bound or GPU-bound.
    step 90 "export base fp32, placement" python3 -m export.network --checkpoint stream_fusion/weights/difffuse_base.pt --out /tmp/base.onnx --pairs 2
    step 45 "profile base fp32" python3 -m stream_fusion.bench.profile_engine --model base --provider cuda --json "$OUT/profile_base_fp32.json"
    step 90 "export base fp16, placement" python3 -m export.network --checkpoint stream_fusion/weights/difffuse_base.pt --out /tmp/base16.onnx --pairs 2 --fp16
    step 45 "profile base fp16" python3 -m stream_fusion.bench.profile_engine --model /tmp/base16.onnx --provider cuda --json "$OUT/profile_base_fp16.json"
    step 45 "routes: base fp16" python3 scripts/check_routes.py --provider cuda --models /tmp/base16.onnx --pairs 1 --json "$OUT/routes_fp16.json"
    # 4. The rest of the grid, without torch.compile (a minute or more of compiling per case).
    step 120 "bench lite 640x512 + 1280x1024" python3 -m stream_fusion.bench --presets lite --sizes 640x512,1280x1024 --iters 100 --budget 4 --no-compile --json "$OUT/bench_lite.json"
    step 90 "bench base 1280x1024" python3 -m stream_fusion.bench --presets base --sizes 1280x1024 --iters 100 --budget 4 --no-compile --json "$OUT/bench_base_1280x1024.json"
    # 5. Many camera pairs (issue #14): lite and base, 1-16 streams of 640x512 at 30 fps, each fused by its own engine
    #    and all by one stream_fusion.serve on this GPU, with the network hop. Runs in the server's environment (it
    #    has the client too); prepare does not build one yet (nvidia-pytriton's wheel is ~150 MB and wants numpy<2):
    #    without it the step says so and the job goes on.
    local serve_python=${SERVE_PYTHON:-.venv-serve/bin/python}
    if "$serve_python" -c "import pytriton, tritonclient.grpc" 2>/dev/null; then
        step 400 "streams lite+base 1-16" "$serve_python" -m stream_fusion.bench.streams --model lite,base --streams 1,2,4,8,16 --seconds 6 --fps 30 --hop --server-python "$serve_python" --json "$OUT/streams_gpu.json"
    else
        echo "=== streams lite+base 1-16: skipped, no server environment at $serve_python (nvidia-pytriton, tritonclient)"
    fi
    echo "=== done $(date -u +%H:%M:%S)"
}

[ "${BASH_SOURCE[0]}" = "$0" ] || return 0  # sourced (the tests): the functions only
case "${1:-}" in
    prepare) prepare ;;
    run) run ;;
    *) echo "usage: bash stream_fusion/bench/gpu.sh prepare|run" >&2; exit 2 ;;
esac
