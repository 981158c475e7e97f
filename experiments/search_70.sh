#!/usr/bin/env bash
# Issue #3 acceptance: a search from scratch (no seed metrics) at 70% unstructured sparsity on
# the small reference LLaMA, fitness on 200 test windows spread over the split, the top 5 re-measured
# on the full split (the lowest is the best metric), then the baselines on the full test split with
# the same protocol. Results: experiments/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${SHARED:-../shared}
OUT=${OUT:-runs/search70}
SEED=${SEED:-0}  # the GP's seed; calibration stays at --seed 0 like the baselines
SPACE=${SPACE:-small}
COMMON=(--model "$SHARED/models/wiki-llama-5m" --data-dir "$SHARED/data/wikitext-2"
        --calib-split valid --eval-split test --nsamples 32 --seqlen 256 --device cpu --quiet)
/usr/bin/time -f "search wall %e s" .venv/bin/pruner-zero search "${COMMON[@]}" --sparsity 0.7 \
  --space "$SPACE" --generations 10 --population 20 --gp-seed "$SEED" --fitness-windows 200 --race-factor 1.5 \
  --final-top 5 --out "$OUT"
# BASELINES=0: only the found metric (the baselines do not depend on the search)
METRICS=(magnitude wanda gblm pruner-zero)
[ "${BASELINES:-1}" = 0 ] && METRICS=()
for m in "${METRICS[@]}" "$OUT/best_metric.json"; do
  .venv/bin/pruner-zero prune "${COMMON[@]}" --sparsity 0.7 --metric "$m"
done
