#!/usr/bin/env bash
# Issue #20: does the recipe searched on wiki-llama-5m (experiments/search_recipe.sh) carry to
# the other models? `compare` at 70% with the recipe file beside SparseGPT (and wanda under the
# OBS update on the 5M model), 3 calibration seeds, valid 32 x 256 calibration, spread `test`
# windows (256 on the 5M model, 32 on SmolLM2, as in experiments/recipes.sh).
#   experiments/recipe_carry.sh code|real [RECIPE.json]
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${SHARED:-../shared}
WHICH=${1:-code}
RECIPE=${2:-experiments/results/recipe_search/wiki/best_metric.json}
OUT=experiments/results/recipe_search/carry-$WHICH
COMMON=(--calib-split valid --nsamples 32 --seqlen 256 --seed 0 --device cpu --sparsity 0.7
        --seeds 3 --quiet --out "$OUT")
case "$WHICH" in
  code) .venv/bin/pruner-zero compare --model "$SHARED/models/code-llama-5m" \
          --data-dir "$SHARED/data/python-code" --eval-windows 256 "${COMMON[@]}" \
          --metrics "$RECIPE,wanda,sparsegpt" --update obs ;;
  real) .venv/bin/pruner-zero compare --model models/SmolLM2-135M-Instruct.Q4_1.gguf \
          --data-dir "$SHARED/data/wikitext-2" --eval-windows 32 "${COMMON[@]}" \
          --metrics "$RECIPE,sparsegpt" ;;
  *) echo "usage: $0 code|real [RECIPE.json]" >&2; exit 2 ;;
esac
