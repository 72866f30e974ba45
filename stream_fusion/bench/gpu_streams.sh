#!/usr/bin/env bash
# Many camera pairs on a lent GPU machine (issue #14 point 4) as one prepared job: lite and base at 1 to 16 streams
# of 640x512 at 30 fps, each fused by its own engine and all by one `python -m stream_fusion.serve` on the GPU, with
# the network hop (python -m stream_fusion.bench.streams; docs/serving.md, "Streams per GPU").
#
#   bash stream_fusion/bench/gpu.sh prepare           # here, once: onnxruntime-gpu in parts (.gpu/pK), as for gpu.sh
#   bash stream_fusion/bench/gpu_streams.sh prepare   # here, once: the server's Python 3.12 packages in parts (.gpu_serve/pK)
#   bash stream_fusion/bench/gpu_streams.sh run       # there, once every part has been copied to /tmp/ortw and /tmp/servew
#
# Why its own packages: the server (nvidia-pytriton, which bundles tritonserver) needs numpy<2, and the machine
# reaches no package index; its python3 has numpy 2 and an OpenCV built for it. So `prepare` installs, here, for
# CPython 3.12 on x86-64 Linux, pytriton, the Triton client and everything both sides import (numpy 1.26, OpenCV 4.11
# headless, onnx, pyzmq, ...) into one folder, packs it as one xz tarball and splits it like the onnxruntime-gpu one;
# `run` unpacks both into the site-packages of a venv over the machine's python3 and runs the benchmark and the
# server with it, so the two sides share one numpy. A venv, not a PYTHONPATH folder: pytriton finds its tritonserver
# libraries beside itself only when it sits in a site-packages. The venv sees the machine's packages behind its own
# (--system-site-packages): the CUDA libraries come from there (the engine preloads them).
#
# `run` writes under $OUT (else runs/gpu_streams): log.txt and streams_gpu.json. PROVIDER, STREAMS and SECONDS_PER_RUN
# change what it runs: with PROVIDER=cpu and a CPU onnxruntime in the venv it runs on any x86-64 Linux with CPython
# 3.12 (docs/serving.md, "Streams per GPU", says how it was checked).
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/gpu.sh"  # install_pack, install_ort, split_parts, start_job, step; cds to the repo root
SERVEW=${SERVEW:-/tmp/servew}                 # there: where the calls leave the parts
SERVE_VENV=${SERVE_VENV:-/tmp/venv-serve}     # there: a venv over the machine's python3, both packs unpacked into it
SERVE_PACK=serve-cp312.tar.xz
SERVE_SHA=${SERVE_SHA:-.gpu_serve/serve.sha256}
# The versions that run the server in CI (.venv-serve), for CPython 3.12.
SERVE_PACKAGES=(nvidia-pytriton==0.7.0 "tritonclient[grpc]==2.73.0" numpy==1.26.4 opencv-python-headless==4.11.0.86
                onnx==1.23.2 pyzmq==27.3.0 pyyaml==6.0.4 tqdm==4.70.1)

prepare_serve() {
    set -e
    local python=${PYTHON:-.venv/bin/python} platforms=() n
    [ -x "$python" ] || python=python3
    for n in 35 34 31 28 27 26 24 17 12 5; do platforms+=(--platform "manylinux_2_${n}_x86_64"); done
    rm -rf .gpu_serve /tmp/servepack && mkdir -p .gpu_serve /tmp/servepack/site
    grep -qx '/.gpu_serve/' .git/info/exclude 2>/dev/null || echo '/.gpu_serve/' >> .git/info/exclude
    "$python" -m pip install -q --no-compile --no-warn-conflicts --only-binary=:all: --python-version 3.12 --implementation cp \
        "${platforms[@]}" --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
        --target /tmp/servepack/site "${SERVE_PACKAGES[@]}"
    (cd /tmp/servepack/site && tar cf - . | xz -6 -T0 > "../$SERVE_PACK")
    sha256sum "/tmp/servepack/$SERVE_PACK" | cut -d' ' -f1 > "$SERVE_SHA"
    split_parts "/tmp/servepack/$SERVE_PACK" .gpu_serve/p
    du -sh .gpu_serve/p*
    echo "calls, back to back, after gpu.sh's onnxruntime-gpu parts (.gpu/pK to /tmp/ortw):"
    echo "  for K in 0..$(( $(ls -d .gpu_serve/p* | wc -l) - 1 )): carry [\".gpu_serve/pK\"], command: mkdir -p $SERVEW && cp .gpu_serve/pK/* $SERVEW/"
    echo "then: command: bash stream_fusion/bench/gpu_streams.sh run"
}

run_streams() {
    start_job runs/gpu_streams
    [ -x "$SERVE_VENV/bin/python" ] || python3 -m venv --system-site-packages --without-pip "$SERVE_VENV" || exit 1
    local python=$SERVE_VENV/bin/python site
    site=$("$python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
    SITE=$site install_ort || exit 1
    install_pack "the server's packages" "$SERVEW" "$SERVE_PACK" "$SERVE_SHA" "$site" pytriton || exit 1
    export PYTHONPATH=$PWD
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>/dev/null || echo "no nvidia-smi"
    "$python" -c "import numpy, cv2, onnxruntime as ort, pytriton, tritonclient.grpc; ort.preload_dlls(); print('numpy', numpy.__version__, '| opencv', cv2.__version__, '| onnxruntime', ort.__version__, ort.get_available_providers())" || exit 1
    step 500 "streams lite+base ${STREAMS:-1,2,4,8,16}" "$python" -m stream_fusion.bench.streams --model lite,base \
        --streams "${STREAMS:-1,2,4,8,16}" --seconds "${SECONDS_PER_RUN:-6}" --fps 30 --hop \
        --provider "${PROVIDER:-cuda}" --server-python "$python" --json "$OUT/streams_gpu.json"
    echo "=== done $(date -u +%H:%M:%S)"
}

[ "${BASH_SOURCE[0]}" = "$0" ] || return 0  # sourced (the tests): the functions only
case "${1:-}" in
    prepare) prepare_serve ;;
    run) run_streams ;;
    *) echo "usage: bash stream_fusion/bench/gpu_streams.sh prepare|run" >&2; exit 2 ;;
esac
