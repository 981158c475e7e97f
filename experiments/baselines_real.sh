#!/usr/bin/env bash
# Issue #19: the published metrics on a real pretrained LLaMA (SmolLM2-135M-Instruct, Q4_1 GGUF,
# dequantized: the weights are the values of the Q4_1 grid). Calibration WikiText-2 `valid`
# 32 x 256 tokens, seeds 0,1,2 (Wanda's window sampler); report on WikiText-2 `test`,
# $WINDOWS windows of 256 tokens spread evenly over the split (window floor(i*1219/N)).
#   make real-model && WINDOWS=64 CALIBRATION=dense experiments/baselines_real.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${SHARED:-../shared}
MODEL=${MODEL:-models/SmolLM2-135M-Instruct.Q4_1.gguf}
WINDOWS=${WINDOWS:-256}
CALIBRATION=${CALIBRATION:-dense}
SEEDS=${SEEDS:-3}
OUT=${OUT:-experiments/results/real_baselines_${CALIBRATION}_${WINDOWS}w}
METRICS=${METRICS:-magnitude,wanda,gblm,pruner-zero,sparsegpt}
COMMON=(--model "$MODEL" --data-dir "$SHARED/data/wikitext-2" --calib-split valid --nsamples 32
        --seqlen 256 --device cpu --calibration "$CALIBRATION" --metrics "$METRICS"
        --seeds "$SEEDS" --eval-windows "$WINDOWS" --quiet)
mkdir -p "$OUT"
for shape in "unstructured 0.5,0.7" "2:4 -"; do
  set -- $shape
  args=(--structure "$1"); [ "$2" != - ] && args+=(--sparsity "$2")
  /usr/bin/time -f "compare $1 wall %e s" .venv/bin/pruner-zero compare "${COMMON[@]}" "${args[@]}" \
    --out "$OUT/${1/:/of}" | tee "$OUT/${1/:/of}.md"
done
