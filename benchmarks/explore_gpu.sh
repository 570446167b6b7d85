#!/usr/bin/env bash
# Design study (benchmarks/explore.py) on a lent CUDA machine, from the repository root:
# install what is missing (wheels carried in .whl/), render the offline dataset, build its
# cache once, then train the variants in parallel, JOBS at a time, for each seed in SEEDS.
# Each variant trains on 6 training instruments and is scored on 3 held-out training
# instruments (never the test instruments). Results go to $OUT/explore-*.json and a table.
set -uo pipefail
OUT=${OUT:-explore-out}; mkdir -p "$OUT"
# One JSON and one log per run go here; $OUT gets them merged (explore-all.json) and the table.
RUNS=${RUNS:-/tmp/explore-runs}; mkdir -p "$RUNS"
JOBS=${JOBS:-5}
SEEDS=${SEEDS:-"0 1"}
FOLDS=${FOLDS:-"0"}
VARIANTS=${VARIANTS:-default}
STEPS=${STEPS:-1000}
export PYTHONUNBUFFERED=1
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
export FSL_CACHE_DIR=/tmp/fsl-cache FSL_DATA_ROOT=/tmp/fsl-data OMP_NUM_THREADS=${OMP_NUM_THREADS:-3}
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$OUT/gpu.txt"
python3 -m fslcli download tinysol-gm >/dev/null
HOME_GM=/tmp/fsl-data/tinysol-gm
python3 -c "
from pathlib import Path
from fslcli.config import RunConfig
from fslcli.datasets import DataSource
from fslcli.workflows import prepare
prepare(DataSource('tinysol-gm', Path('$HOME_GM')), RunConfig().split, 16000, None)
"
jobs=()
for seed in $SEEDS; do for fold in $FOLDS; do for v in $VARIANTS; do jobs+=("$seed $fold $v"); done; done; done
printf '%s\n' "${jobs[@]}" | xargs -P "$JOBS" -L 1 sh -c \
  'python3 benchmarks/explore.py --data-home '"$HOME_GM"' --steps '"$STEPS"' --seed "$0" --fold "$1" --only "$2" \
     --accelerator '"${ACCEL:-cuda}"' --precision '"${PRECISION:-bf16-mixed}"' --work-dir /tmp/explore --out '"$RUNS"'/explore-"$2"-seed"$0"-fold"$1".json \
     > '"$RUNS"'/log-"$2"-seed"$0"-fold"$1".txt 2>&1; echo "done $2 seed $0 fold $1"'
python3 benchmarks/explore.py summarise "$RUNS"/explore-*.json | tee "$OUT/table.txt"
python3 - "$RUNS" "$OUT/explore-all.json" <<'PY'
import json, pathlib, sys
rows = {p.stem.removeprefix("explore-"): json.loads(p.read_text()) for p in sorted(pathlib.Path(sys.argv[1]).glob("explore-*.json"))}
pathlib.Path(sys.argv[2]).write_text(json.dumps(rows, indent=1))
PY
tail -n 3 "$RUNS"/log-*.txt > "$OUT/logs-tail.txt"
