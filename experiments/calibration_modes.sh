#!/usr/bin/env bash
# Dense vs layer-by-layer (sequential) calibration on both shared models: wanda, gblm,
# pruner-zero (and sparsegpt, which always walks layer by layer) at 50%, 70% and 2:4, measured
# on each model's whole test split after calibrating on 32 windows of 256 tokens (seed 0).
# Usage (from the repo root): bash experiments/calibration_modes.sh [SEEDS]
set -euo pipefail
SEEDS=${1:-1}
OUT=experiments/results/calibration_modes
mkdir -p "$OUT"
PZ=".venv/bin/pruner-zero"
for shape in "--sparsity 0.5" "--sparsity 0.7" "--structure 2:4"; do
  tag=$(echo "$shape" | tr -d ' -' | tr ':' '-')
  for mode in dense sequential; do
    metrics="wanda,gblm,pruner-zero"
    [ "$mode" = dense ] && metrics="$metrics,sparsegpt"
    echo "== $mode $shape" >&2
    $PZ compare --tasks experiments/tasks_2models.yaml --nsamples 32 --seqlen 256 --seeds "$SEEDS" \
      --device cpu --quiet --calibration "$mode" $shape --metrics "$metrics" \
      --out "$OUT/${tag}_$mode" > "$OUT/${tag}_$mode.md"
  done
done
