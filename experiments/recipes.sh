#!/usr/bin/env bash
# Recipes at 70% on our three models (issue #20): {wanda, gblm} x {uniform, owl} x {none, obs}
# and SparseGPT, 3 calibration seeds, valid 32 x 256 calibration, spread windows of test.
# Usage: bash experiments/recipes.sh [toy|real|all]   (toy ~15 min, real ~60 min on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${SHARED:-../shared}
PY=${PYTHON:-.venv/bin/python}
OUT=experiments/results/recipes
WHAT=${1:-all}
mkdir -p "$OUT"
if [ "$WHAT" != real ]; then
  "$PY" experiments/recipes.py --model "$SHARED/models/wiki-llama-5m" \
    --data-dir "$SHARED/data/wikitext-2" --eval-windows 256 --out "$OUT/wiki-llama-5m.json"
  "$PY" experiments/recipes.py --model "$SHARED/models/code-llama-5m" \
    --data-dir "$SHARED/data/python-code" --eval-windows 256 --out "$OUT/code-llama-5m.json"
fi
if [ "$WHAT" != toy ]; then
  "$PY" experiments/recipes.py --model models/SmolLM2-135M-Instruct.Q4_1.gguf \
    --data-dir "$SHARED/data/wikitext-2" --eval-windows 32 --out "$OUT/smollm2.json"
fi
