#!/usr/bin/env bash
# The all4 protocol on a device machine (JAX image, no TensorFlow), from the repo root.
# Needs, carried beside the checkout: .whl/ (keras, namex, optree wheels for cp312) and .gpu/
# (made here by `python scripts/gpu/pack_all4.py ../shared/data/all4 .gpu`). The wheels:
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
#     -d .whl keras==3.15.1 namex optree
# Usage: OUT=<results folder> bash scripts/gpu/run_all4.sh [time budget in seconds]
# Env: BASE (base config), PLAN (plan file), NO_WHEELS=1 (use installed keras),
# PREVIOUS (a results.csv of earlier calls: its runs are skipped, e.g.
# docs/runs/gpu_2026-11-28/results.csv), KERAS_BACKEND (default jax; torch is the fallback).
set -u -o pipefail
BUDGET=${1:-480}
OUT=${OUT:-/tmp/out}
BASE=${BASE:-scripts/gpu/base_all4.json}
PLAN=${PLAN:-scripts/gpu/plan_all4.json}
start=$(date +%s)
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2
export JAX_COMPILATION_CACHE_DIR=/tmp/jaxcache JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0
if [ -d .whl ] && [ -z "${NO_WHEELS:-}" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
fi
mkdir -p "$OUT" /tmp/protocol
if [ -n "${PREVIOUS:-}" ] && [ ! -e /tmp/protocol/results.csv ]; then
  cp "$PREVIOUS" /tmp/protocol/results.csv
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >"$OUT/gpu.txt" 2>&1
python3 scripts/gpu/pack_all4.py --unpack .gpu || exit 1
for backend in ${KERAS_BACKEND:-jax} torch; do
  left=$((BUDGET - $(date +%s) + start))
  echo "== backend $backend, $left s left"
  KERAS_BACKEND=$backend python3 scripts/protocol_arrays.py --data-dir .gpu/all4 \
    --base-config "$BASE" --plan "$PLAN" -o /tmp/protocol --time-budget "$left" \
    --min-run-seconds 150 --bundle "$OUT/protocol.tar.gz" 2>&1 | tee -a "$OUT/stdout.log"
  status=$?
  [ -s /tmp/protocol/results.csv ] && break   # a backend that finished a run is kept
  [ $status -eq 0 ] && break
done
cp /tmp/protocol/results.csv /tmp/protocol/summary.md "$OUT/" 2>/dev/null
echo "== done after $(( $(date +%s) - start )) s"
