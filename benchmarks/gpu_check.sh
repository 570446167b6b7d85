#!/usr/bin/env bash
# GPU check, run on a lent CUDA machine from the repository root:
#   install what is missing (wheels carried in .whl/), render the offline dataset,
#   `fsl train` a few hundred steps on CUDA with mixed precision, `fsl eval`, and time each step.
# Writes timings and outputs under $OUT (or ./gpu-check-out).
set -euo pipefail
OUT=${OUT:-gpu-check-out}; mkdir -p "$OUT"
STEPS=${STEPS:-300}
PRECISION=${PRECISION:-bf16-mixed}
export PYTHONUNBUFFERED=1
if [ -d .whl ] && [ -z "${SKIP_WHEELS:-}" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD
fi
export FSL_CACHE_DIR=${FSL_CACHE_DIR:-/tmp/fsl-cache} FSL_DATA_ROOT=${FSL_DATA_ROOT:-/tmp/fsl-data}
fsl() { python3 -m fslcli "$@"; }
t() { local name=$1; shift; local s=$EPOCHREALTIME; "$@"; local e=$EPOCHREALTIME; awk -v n="$name" -v s="$s" -v e="$e" 'BEGIN { printf "%s %.1f s\n", n, e - s }' | tee -a "$OUT/timings.txt"; }
(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || echo "no nvidia-smi") | tee "$OUT/gpu.txt"
python3 -c "import torch, pytorch_lightning as pl; print('torch', torch.__version__, 'lightning', pl.__version__, 'cuda', torch.cuda.is_available())" | tee -a "$OUT/gpu.txt"
t render fsl download tinysol-gm
t "train_${STEPS}_steps_${PRECISION}" fsl train --steps "$STEPS" --accelerator "${ACCEL:-cuda}" --precision "$PRECISION" --out /tmp/run --force
t eval_1000_5shot sh -c "python3 -m fslcli eval /tmp/run/model.pt --json > $OUT/eval5.json"
t eval_1000_1shot sh -c "python3 -m fslcli eval /tmp/run/model.pt --json --shots 1 > $OUT/eval1.json"
cp /tmp/run/history.jsonl "$OUT/" || true
python3 - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
for k in ("eval5", "eval1"):
    r = json.load(open(f"{out}/{k}.json"))
    print(k, f"{r['mean_accuracy']:.4f} ± {r['ci95_half_width']:.4f}", f"({r['seconds']} s in-process)")
PY
cat "$OUT/timings.txt"
