#!/usr/bin/env bash
# Issue #20: the recipe the sweep search found (experiments/search_recipe.sh with RECIPE_SPACE=
# uniform/sweep SPACE=obs COMPARE=layer) beside SparseGPT on each model, 70%, 3 calibration seeds,
# valid 32 x 256 calibration, spread `test` windows (256 on the 5M models, 32 on SmolLM2).
# Two `compare` runs with one protocol: the recipe, SparseGPT's saliency mul(sqr(W), H) and gblm
# under the sweep with blocks ranked over all their rows (--compare layer); then sparsegpt and
# wanda (SparseGPT chooses its own masks, so `compare` refuses --compare layer with it).
#   experiments/sweep_carry.sh wiki|code|real [RECIPE.json]
# SHAPE=0.5 or SHAPE=2:4 measures another sparsity or an N:M structure (default 0.7); under N:M the
# groups are the blocks, so the sweep rows drop --compare layer. UPDATE=sweep-lsq measures the
# sweep's masks with the kept weights solved exactly (default sweep); its files go in OUT-lsq.
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${SHARED:-../shared}
WHICH=${1:-wiki}
RECIPE=${2:-experiments/results/sweep/search-wiki/best_metric.json}
SHAPE=${SHAPE:-0.7}
UPDATE=${UPDATE:-sweep}
OUT=experiments/results/sweep/carry-$WHICH
if [ "$SHAPE" != 0.7 ]; then OUT="$OUT-${SHAPE/:/of}"; fi
if [ "$UPDATE" != sweep ]; then OUT="$OUT-${UPDATE#sweep-}"; fi
case "$SHAPE" in
  *:*) SHAPED=(--structure "$SHAPE"); RANK=(); SWEPT=sweep ;;
  *) SHAPED=(--sparsity "$SHAPE"); RANK=(--compare layer); SWEPT=sweep-layer ;;
esac
METRICS=${METRICS:-$RECIPE;mul(sqr(W), H);gblm}
case "$WHICH" in
  wiki) MODEL=(--model "$SHARED/models/wiki-llama-5m" --data-dir "$SHARED/data/wikitext-2"
               --eval-windows 256) ;;
  code) MODEL=(--model "$SHARED/models/code-llama-5m" --data-dir "$SHARED/data/python-code"
               --eval-windows 256) ;;
  real) MODEL=(--model models/SmolLM2-135M-Instruct.Q4_1.gguf
               --data-dir "$SHARED/data/wikitext-2" --eval-windows 32) ;;
  *) echo "usage: $0 wiki|code|real [RECIPE.json]" >&2; exit 2 ;;
esac
COMMON=(--calib-split valid --nsamples 32 --seqlen 256 --seed 0 --device cpu "${SHAPED[@]}"
        --seeds 3 --quiet)
IFS=';' read -r -a LIST <<< "$METRICS"
JOINED=$(printf '%s,' "${LIST[@]}")
.venv/bin/pruner-zero compare "${MODEL[@]}" "${COMMON[@]}" --out "$OUT/$SWEPT" \
    --metrics "${JOINED%,}" --update "$UPDATE" "${RANK[@]}"
if [ -z "${SKIP_SPARSEGPT:-}" ]; then
  .venv/bin/pruner-zero compare "${MODEL[@]}" "${COMMON[@]}" --out "$OUT/sparsegpt" \
      --metrics sparsegpt,wanda
fi
