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
# docs/runs/gpu_2026-11-28/results.csv), KERAS_BACKEND (default jax),
# PARALLEL (default 1): processes sharing the GPU, run i taking plan runs i, i+N, ... (on the
# H200, EfficientNetV2-S + CBAM kept 54 ms/step beside a ResNet50 process, 56 ms alone).
set -u -o pipefail
BUDGET=${1:-480}
OUT=${OUT:-/tmp/out}
BASE=${BASE:-scripts/gpu/base_all4.json}
PLAN=${PLAN:-scripts/gpu/plan_all4.json}
PARALLEL=${PARALLEL:-1}
start=$(date +%s)
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2 KERAS_BACKEND=${KERAS_BACKEND:-jax}
export JAX_COMPILATION_CACHE_DIR=/tmp/jaxcache JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0
if [ -d .whl ] && [ -z "${NO_WHEELS:-}" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
fi
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >"$OUT/gpu.txt" 2>&1
python3 scripts/gpu/pack_all4.py --unpack .gpu || exit 1
# Split the plan (split files made absolute, since the parts live elsewhere).
python3 - "$PLAN" "$PARALLEL" <<'PY' || exit 1
import json, os, sys
plan_path, n = sys.argv[1], int(sys.argv[2])
runs = json.load(open(plan_path))["runs"]
for r in runs:
    if r.get("split_file"):
        r["split_file"] = os.path.abspath(os.path.join(os.path.dirname(plan_path), r["split_file"]))
for i in range(n):
    json.dump({"runs": runs[i::n]}, open(f"/tmp/plan_part{i}.json", "w"), indent=1)
PY
if [ "$PARALLEL" -gt 1 ]; then
  export XLA_PYTHON_CLIENT_MEM_FRACTION=$(python3 -c "print(round(0.9 / $PARALLEL, 2))")
  export OMP_NUM_THREADS=$(( $(nproc) / PARALLEL ))
fi
left=$((BUDGET - $(date +%s) + start))
echo "== backend $KERAS_BACKEND, $PARALLEL process(es), $left s left"
for i in $(seq 0 $((PARALLEL - 1))); do
  mkdir -p /tmp/protocol_$i
  if [ -n "${PREVIOUS:-}" ] && [ ! -e /tmp/protocol_$i/results.csv ]; then
    cp "$PREVIOUS" /tmp/protocol_$i/results.csv
  fi
  python3 scripts/protocol_arrays.py --data-dir .gpu/all4 --base-config "$BASE" \
    --plan /tmp/plan_part$i.json -o /tmp/protocol_$i --time-budget "$left" \
    --min-run-seconds 150 --bundle "$OUT/protocol_$i.tar.gz" >"$OUT/stdout_$i.log" 2>&1 &
done
wait
# One results.csv: the header once, then every part's rows (PREVIOUS rows only once).
python3 - "$OUT/results.csv" /tmp/protocol_*/results.csv <<'PY'
import sys
out, parts = sys.argv[1], sys.argv[2:]
lines, seen = [], set()
for p in parts:
    with open(p) as f:
        rows = f.read().splitlines()
    if not lines and rows:
        lines.append(rows[0])
    for row in rows[1:]:
        if row not in seen:
            seen.add(row)
            lines.append(row)
open(out, "w").write("\n".join(lines) + "\n")
print(f"{len(lines) - 1} result rows in {out}")
PY
tail -n 3 "$OUT"/stdout_*.log
echo "== done after $(( $(date +%s) - start )) s"
