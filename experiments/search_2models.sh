#!/usr/bin/env bash
# Issue #8: a search from scratch over both shared models at 70% unstructured; fitness and the
# choice of the best on the selection splits (valid), confirmation over 3 calibration seeds,
# report on test beside magnitude/wanda/gblm/pruner-zero.
#   experiments/search_2models.sh [OUT] [GP_SEED]
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${SHARED:-../shared}
OUT=${1:-runs/search-2models}
SEED=${2:-0}
TASKS=$(mktemp --suffix .yaml)
sed "s#\.\./shared#$SHARED#g" experiments/tasks_2models.yaml > "$TASKS"
/usr/bin/time -v .venv/bin/pruner-zero search --tasks "$TASKS" --nsamples 32 --seqlen 256 \
    --sparsity 0.7 --device cpu --space small --generations 10 --population 20 \
    --gp-seed "$SEED" --seed 0 --fitness-windows 128 --race-factor 1.5 \
    --confirm-seeds 3 --final-top 5 --quiet --out "$OUT"
.venv/bin/pruner-zero report "$OUT" || echo "(report needs matplotlib: pip install '.[plot]')"
