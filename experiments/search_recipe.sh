#!/usr/bin/env bash
# Issue #20: a recipe searched at 70% unstructured (or SHAPE): the metric with the recipe as part of the
# genome (RECIPE_SPACE, default uniform/none,uniform/obs,owl:5:0.04/obs), or under one recipe
# (RECIPE_SPACE= ALLOCATION=... UPDATE=...), beside wanda, gblm (under the run's one recipe:
# plain with a genome) and SparseGPT, all measured in the same run. Calibration `valid` 32 x 256 (seed 0); fitness and the choice of the best on
# `valid` windows that share no token with a calibration window; report on spread `test`
# windows over 3 calibration seeds.
#   experiments/search_recipe.sh wiki|code|real [OUT] [GP_SEED]
# SPACE (default paper) and SEED_METRICS (default wanda,gblm) change the GP's space and seeds;
# the sweep: RECIPE_SPACE=uniform/sweep SPACE=obs SEED_METRICS='mul(sqr(W), H),wanda,gblm'.
# COMPARE=layer ranks each block over all its rows, as SparseGPT does (a search refuses the
# sparsegpt baseline then: BASELINES=wanda,gblm, and sparsegpt measured by recipe_carry.sh).
# NSAMPLES (default 32), POLISH (default 3), FINAL_TOP (default 3): a cheaper search on SmolLM2,
# whose recipe is then measured with the 32-sample protocol (sweep_carry.sh).
# SHAPE (default 0.7) searches at another sparsity or an N:M structure (SHAPE=2:4; the groups
# are then the blocks, so leave COMPARE at row).
# Every candidate walks the blocks (a Hessian per layer and the OBS solve): a 5M model costs
# seconds a candidate here, SmolLM2 minutes (see experiments/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${SHARED:-../shared}
WHICH=${1:-wiki}
OUT=${2:-runs/recipe-$WHICH}
SEED=${3:-0}
GENERATIONS=${GENERATIONS:-4}
POPULATION=${POPULATION:-12}
RECIPE_SPACE=${RECIPE_SPACE-uniform/none,uniform/obs,owl:5:0.04/obs}
SPACE=${SPACE:-paper}
COMPARE=${COMPARE:-row}
BASELINES=${BASELINES:-wanda,gblm,sparsegpt}
SEED_METRICS=${SEED_METRICS:-wanda,gblm}
NSAMPLES=${NSAMPLES:-32}
POLISH=${POLISH:-3}
SHAPE=${SHAPE:-0.7}
case "$SHAPE" in
  *:*) SHAPED=(--structure "$SHAPE") ;;
  *) SHAPED=(--sparsity "$SHAPE") ;;
esac
if [ -n "$RECIPE_SPACE" ]; then
  RECIPE=(--recipe-space "$RECIPE_SPACE")
else
  RECIPE=(--allocation "${ALLOCATION:-uniform}" --update "${UPDATE:-obs}")
fi
case "$WHICH" in
  wiki) DATA=(--model "$SHARED/models/wiki-llama-5m" --data-dir "$SHARED/data/wikitext-2")
        WINDOWS=(--fitness-windows 64 --confirm-windows 64 --eval-windows 256) ;;
  code) DATA=(--model "$SHARED/models/code-llama-5m" --data-dir "$SHARED/data/python-code")
        WINDOWS=(--fitness-windows 64 --confirm-windows 64 --eval-windows 256) ;;
  real) DATA=(--model models/SmolLM2-135M-Instruct.Q4_1.gguf --data-dir "$SHARED/data/wikitext-2")
        WINDOWS=(--fitness-windows 8 --confirm-windows 16 --eval-windows 32) ;;
  *) echo "usage: $0 wiki|code|real [OUT] [GP_SEED]" >&2; exit 2 ;;
esac
/usr/bin/time -f "search wall %e s, max RSS %M KB" .venv/bin/pruner-zero search "${DATA[@]}" \
    --calib-split valid --fitness-split valid --report-split test --nsamples "$NSAMPLES" --seqlen 256 \
    --seed 0 --device cpu "${SHAPED[@]}" --space "$SPACE" --seed-metrics "$SEED_METRICS" \
    "${RECIPE[@]}" \
    --generations "$GENERATIONS" --population "$POPULATION" --gp-seed "$SEED" --polish "$POLISH" "${WINDOWS[@]}" \
    --compare "$COMPARE" --final-top "${FINAL_TOP:-3}" --confirm-seeds 3 --baselines "$BASELINES" --quiet --out "$OUT"
cat "$OUT/best_metric.txt"
