#!/usr/bin/env bash
# The GPU engine's measurements (issues #4 and #16) as one prepared job, sized for a lent GPU machine's few minutes.
#
#   bash stream_fusion/bench/gpu.sh prepare     # here, once: onnxruntime-gpu in parts under .gpu/ (git-ignored), the
#                                               # 75 eval pairs, base's candidate exports (python -m export.variants)
#   bash stream_fusion/bench/gpu.sh run         # there, after the parts have been copied to /tmp/ortw: install, measure
#
# Why parts: the onnxruntime-gpu wheel (~256 MB, CUDA 13) is larger than what one call to the lent machine may carry
# (64 MiB with the working tree), and that machine reaches no package index (../shared/docs/gpu.md). So `prepare`
# repacks its files as one xz tarball (203 MB) and splits it into .gpu/p0 ... .gpu/pN, each as large as a call may
# carry beside the working tree; each call to the machine carries one of them and copies it to /tmp/ortw, back to
# back (the machine is handed back after ~30 s idle); one more call carries .gpu/eval and .gpu/variants and runs
# `bash stream_fusion/bench/gpu.sh run` (docs/engine.md, "Measuring on a GPU machine").
#
# `run` writes everything under $OUT (the device tool's folder that comes back; else runs/gpu): log.txt, the JSONs,
# fp16_verified.json (the record engine.precision auto reads) and tables.md (python -m stream_fusion.bench.gpu_table:
# the tables docs/engine.md and the README carry). Each step has its own time limit, so a slow step costs its own
# numbers, not the others'.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
WHEEL=onnxruntime_gpu-1.31.1-cp312-cp312-manylinux_2_28_x86_64.whl
PACK=onnxruntime_gpu-1.31.1-cp312.tar.xz  # the wheel's files, xz-compressed (prepare)
ORTW=${ORTW:-/tmp/ortw}                   # there: where the calls leave the parts
SITE=${SITE:-/tmp/site}                   # there: where onnxruntime-gpu is unpacked
ORT_SHA=${ORT_SHA:-.gpu/eval/ort.sha256}  # the packed file's checksum, written by prepare
DATA=${STREAM_FUSION_DATA:-../shared/data}  # where stream_fusion.DATA_DIR looks
# The distinct-frames check of a graph-replaying engine (issue #16 point 1) for every shipped file, fp32 and fp16.
FP16_ROUTES=lite,base,cdfusion,stream_fusion/weights/difffuse_lite_fp16.onnx,stream_fusion/weights/difffuse_base_fp16.onnx,stream_fusion/weights/difffuse_cdfusion_fp16.onnx

prepare() {
    set -e
    local python=${PYTHON:-.venv/bin/python}
    [ -x "$python" ] || python=python3
    rm -rf .gpu && mkdir -p .gpu/eval /tmp/ortgpu
    [ -f "/tmp/ortgpu/$WHEEL" ] || "$python" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 -d /tmp/ortgpu onnxruntime-gpu==1.31.1
    # The wheel's files as one xz tarball: 203 MB against the wheel's 256 MB (zip), one device call fewer.
    if [ ! -f "/tmp/ortgpu/$PACK" ]; then
        rm -rf /tmp/ortgpu/unpacked && mkdir /tmp/ortgpu/unpacked
        "$python" -m zipfile -e "/tmp/ortgpu/$WHEEL" /tmp/ortgpu/unpacked
        (cd /tmp/ortgpu/unpacked && tar cf - . | xz -9 -T0 > "../$PACK.tmp")
        mv "/tmp/ortgpu/$PACK.tmp" "/tmp/ortgpu/$PACK" && rm -rf /tmp/ortgpu/unpacked
    fi
    sha256sum "/tmp/ortgpu/$PACK" | cut -d' ' -f1 > "$ORT_SHA"
    # Every eval pair (25 TNO-25 + 50 RoadScene-50, 18 MB): the fp16 check's evidence is all of them, and
    # $DATA/eval does not travel.
    for split in tno25 roadscene50; do
        for kind in ir vis; do
            mkdir -p ".gpu/eval/$split/$kind" && cp "$DATA/eval/$split/$kind"/*.png ".gpu/eval/$split/$kind/"
        done
    done
    # Base's candidate exports (issue #16 point 3; torch is here, not needed there): ~6 MB with their manifest.
    "$python" -m export.variants --preset base --out .gpu/variants 2>&1 | grep -E '^(base_|wrote)'
    split_parts "/tmp/ortgpu/$PACK" .gpu/p
    du -sh .gpu/p* .gpu/eval .gpu/variants
    echo "calls, back to back: for K in 0..$(( $(ls -d .gpu/p* | wc -l) - 1 )): carry [\".gpu/pK\"], command: mkdir -p /tmp/ortw && cp .gpu/pK/* /tmp/ortw/"
    echo "then: carry [\".gpu/eval\", \".gpu/variants\"], command: bash stream_fusion/bench/gpu.sh run"
}

split_parts() {  # split_parts FILE PREFIX: FILE as PREFIX0/part00, PREFIX1/part01, ..., each what one call may carry
    # A call carries the working tree too: each part is what 62 MiB leaves beside it (2 MiB of margin under 64).
    local tree part_bytes n=0 tmp
    tree=$(git ls-files -co --exclude-standard -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
    part_bytes=$(( 62 * 1048576 - tree ))
    tmp=$(mktemp -d)
    split -b "$part_bytes" -d "$1" "$tmp/part"
    for part in "$tmp"/part*; do mkdir -p "$2$n" && mv "$part" "$2$n/"; n=$((n + 1)); done
    rmdir "$tmp"
    echo "prepared $n parts of at most $((part_bytes / 1048576)) MiB beside a $((tree / 1048576)) MiB working tree:"
}

install_pack() {  # install_pack NAME PARTS PACK SHA SITE CHECK: the tarball from its parts, checked, into SITE (once)
    local name=$1 parts=$2 pack=$3 sha=$4 site=$5 check=$6
    [ -e "$site/$check" ] && return 0
    cat "$parts"/part* > "$parts/$pack" 2>/dev/null || { echo "no $name parts in $parts"; return 1; }
    if [ "$(sha256sum "$parts/$pack" | cut -d' ' -f1)" != "$(cat "$sha")" ]; then
        echo "the joined parts do not match what prepare packed: a part is missing or stale"; ls -la "$parts"; return 1
    fi
    mkdir -p "$site" && python3 -c "import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2], filter='data')" \
        "$parts/$pack" "$site" && rm "$parts/$pack"
}

install_ort() {  # onnxruntime-gpu from its parts in $ORTW into $SITE
    install_pack onnxruntime-gpu "$ORTW" "$PACK" "$ORT_SHA" "$SITE" onnxruntime/capi
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

start_job() {  # start_job DEFAULT_OUT: $OUT, the deadline, and everything the job prints also in $OUT/log.txt
    OUT=${OUT:-$1}
    # The whole job ends within BUDGET seconds (default 540: a device call may run 600), most important step first.
    DEADLINE=$((SECONDS + ${BUDGET:-540}))
    mkdir -p "$OUT"
    exec > >(tee "$OUT/log.txt") 2>&1
    export PYTHONUNBUFFERED=1
}

run() {
    start_job runs/gpu
    install_ort || exit 1
    export PYTHONPATH="$SITE:$PWD"
    if [ -d .gpu/eval ] && [ ! -e "$DATA/eval" ]; then
        mkdir -p "$DATA" && ln -s "$PWD/.gpu/eval" "$DATA/eval"
    fi
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
    python3 -c "import onnxruntime as ort, torch; ort.preload_dlls(); print('onnxruntime', ort.__version__, ort.get_available_providers(), '| torch', torch.__version__, torch.cuda.get_device_name(0))"
    # 1. Issue #16 point 2: the fp16 engine's frames against the fp32 engine's, every eval pair (75), colour and gray,
    #    lite, base and cdfusion, at 640x512 with the CUDA graph. fp16_verified.json is the record engine.precision
    #    auto reads: copied to stream_fusion/weights/ it makes fp16 the CUDA default for each network that passed.
    step 120 "fp16 vs fp32 frames, every eval pair" python3 scripts/check_fp16.py --provider cuda --json "$OUT/fp16_parity.json" --record "$OUT/fp16_verified.json"
    # 2. Point 1: new frames reach a graph-replaying engine (each pair, its mirror, the pair again), fp32 and fp16.
    step 100 "routes: with a CUDA graph, new frames reach it" python3 scripts/check_routes.py --provider cuda --models "$FP16_ROUTES" --pairs 1 --cuda-graph --json "$OUT/routes_graph.json"
    # 3. Points 3 and 5: base through the engine (CUDA fp32 and fp16, with and without the graph, the bare session)
    #    next to torch.compile of the same weights in the same run.
    step 170 "bench base 640x512" python3 -m stream_fusion.bench --presets base --sizes 640x512 --iters 100 --budget 3 --runners engine,engine-no-graph,session,torch-compile --json "$OUT/bench_base.json"
    # 4. Point 3: base's candidate exports (python -m export.variants, built by prepare) and the channels-last session.
    step 120 "variants of base" python3 -m stream_fusion.bench.variants --dir .gpu/variants --json "$OUT/variants.json"
    # 5. Point 5: lite and cdfusion the same way, torch.compile in fp16 only (a compile costs ~a minute).
    step 150 "bench lite+cdfusion 640x512" python3 -m stream_fusion.bench --presets lite,cdfusion --sizes 640x512 --iters 100 --budget 3 --runners engine,engine-no-graph,session,torch-compile --compile-precisions fp16 --json "$OUT/bench_lite_cdfusion.json"
    # 6. Where base fp16's time goes now, and the earlier route check (the CUDA engine against the CPU engine), if
    #    time is left.
    step 45 "profile base fp16" python3 -m stream_fusion.bench.profile_engine --model stream_fusion/weights/difffuse_base_fp16.onnx --provider cuda --json "$OUT/profile_base_fp16.json"
    step 90 "routes: the CUDA engine against the CPU engine" python3 scripts/check_routes.py --provider cuda --json "$OUT/routes.json"
    # 7. torch.compile in fp32 for lite and cdfusion, for their fp32 rows' ratio (the engine rows are in step 5).
    step 120 "torch.compile fp32, lite+cdfusion" python3 -m stream_fusion.bench --presets lite,cdfusion --sizes 640x512 --iters 100 --budget 3 --runners torch-compile --compile-precisions fp32 --json "$OUT/bench_lite_cdfusion_compile_fp32.json"
    # The tables for docs/engine.md and the README, from whatever the steps wrote (a few ms; outside the budget).
    timeout 30 python3 -m stream_fusion.bench.gpu_table "$OUT" --out "$OUT/tables.md"
    echo "=== done $(date -u +%H:%M:%S)"
}

[ "${BASH_SOURCE[0]}" = "$0" ] || return 0  # sourced (the tests): the functions only
case "${1:-}" in
    prepare) prepare ;;
    run) run ;;
    *) echo "usage: bash stream_fusion/bench/gpu.sh prepare|run" >&2; exit 2 ;;
esac
