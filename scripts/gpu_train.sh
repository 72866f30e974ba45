#!/usr/bin/env bash
# Training on a lent GPU machine (issue #15 point 5) as one prepared job: it trains, selects on the validation split,
# exports, and brings weights and logs back under $OUT. 15 minutes of an H200 is days of the 2-core CPU.
#
#   bash scripts/gpu_train.sh prepare               # here, once: the training pairs and two wheels under .gpu_train/
#   bash scripts/gpu_train.sh run [CONFIG] [EPOCHS] # there: carry [".gpu_train"]; default configs/train_lite_gpu.yaml
#
# Why prepare: ../shared/data does not travel with the working tree (only the repository does, plus carried paths,
# 64 MiB in all: train/ is 48 MB), and the machine reaches no package index, so the two pure-Python packages the
# training imports that the machine may lack (tqdm, PyYAML) come as wheels. The machine's torch (2.11, CUDA) is used.
#
# `run` writes under $OUT (else runs/gpu_train): log.txt, the run folder (log.csv, best.pt, final.pt), the exported
# ONNX of best.pt, and the validation table of best.pt against the shipped network. Each step has its own time limit
# (BUDGET, default 540 s: a device call may run 600), so a slow export costs its own output, not the weights.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
STAGE=.gpu_train

prepare() {
    set -e
    grep -qx "/$STAGE/" .git/info/exclude 2>/dev/null || echo "/$STAGE/" >> .git/info/exclude
    local data=${STREAM_FUSION_DATA:-../shared/data}
    rm -rf "$STAGE" && mkdir -p "$STAGE/data" "$STAGE/wheels"
    cp -r "$data/train" "$STAGE/data/train"
    # Two pairs of each eval split: the export's parity check reads eval/ (never used for training or selection).
    for split in tno25 roadscene50; do
        for kind in ir vis; do
            mkdir -p "$STAGE/data/eval/$split/$kind"
            ls "$data/eval/$split/$kind" | sort | head -2 | while read -r name; do
                cp "$data/eval/$split/$kind/$name" "$STAGE/data/eval/$split/$kind/"
            done
        done
    done
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 -d "$STAGE/wheels" tqdm pyyaml
    du -sh "$STAGE"/*
    echo "call: carry [\"$STAGE\"], command: bash scripts/gpu_train.sh run"
}

step() {  # step SECONDS NAME COMMAND...: limited in time, its failure reported and survived
    local left=$((DEADLINE - SECONDS)) name=$2
    local limit=$(($1 < left ? $1 : left))
    shift 2
    if [ "$limit" -lt "${MIN_STEP:-20}" ]; then echo "=== $name: skipped, the job's time is spent"; return 1; fi
    echo "=== $name ($(date -u +%H:%M:%S), limit ${limit}s): $*"
    timeout "$limit" "$@"
    local status=$?
    [ $status -eq 0 ] || echo "=== $name: exit status $status$([ $status -eq 124 ] && echo ' (time limit)')"
    return $status
}

run() {
    local config=${1:-configs/train_lite_gpu.yaml} epochs=${2:-}
    OUT=${OUT:-runs/gpu_train}
    DEADLINE=$((SECONDS + ${BUDGET:-540}))
    mkdir -p "$OUT"
    exec > >(tee "$OUT/log.txt") 2>&1
    export PYTHONUNBUFFERED=1 STREAM_FUSION_DATA="$PWD/$STAGE/data"
    if ! python3 -c "import tqdm, yaml" 2>/dev/null; then
        python3 -m pip install -q --no-index --no-deps --target /tmp/site "$STAGE"/wheels/*.whl || exit 1
    fi
    export PYTHONPATH="/tmp/site:$PWD"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
    python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))" || exit 1
    local run_dir="$OUT/run"
    # The training itself, most of the budget (each call starts on an empty $OUT: no resuming across calls).
    step $((${BUDGET:-540} - 100)) "train $config" python3 -m stream_fusion.training.train --config "$config" \
        --out "$run_dir" --set device=cuda ${epochs:+--epochs "$epochs"}
    local best="$run_dir/best.pt"
    [ -f "$best" ] || best="$run_dir/final.pt"
    [ -f "$best" ] || { echo "no checkpoint written"; exit 1; }
    step 50 "export $best" python3 -m export.network --checkpoint "$best" --out "$OUT/difffuse_lite.onnx" --pairs 2
    step 40 "validation: $best against the shipped network" python3 -m stream_fusion.training.validate \
        --checkpoint stream_fusion/weights/difffuse_lite.pt "$best"
    rm -f "$run_dir/last.pt"  # resume state: optimizer included, not needed back here
    echo "=== done $(date -u +%H:%M:%S)"
}

[ "${BASH_SOURCE[0]}" = "$0" ] || return 0  # sourced (the tests): the functions only
case "${1:-}" in
    prepare) prepare ;;
    run) shift; run "$@" ;;
    *) echo "usage: bash scripts/gpu_train.sh prepare | run [CONFIG] [EPOCHS]" >&2; exit 2 ;;
esac
