#!/usr/bin/env bash
# A lent GPU session (15 minutes of device time, two calls): the recipe path on CUDA, then SmolLM2.
#   toy:  the recipe path on CUDA on wiki-llama-5m (a sweep-lsq prune against its CPU figure, a
#         tiny recipe search: seconds a candidate), then experiments/gpu_check.sh.
#   real: SmolLM2-135M on CUDA: a probe prune against its CPU figure (dense and gblm / sweep-lsq,
#         seed 0, 32 spread test windows), #19's baseline table (256 spread test windows, 3 seeds),
#         then a recipe search at 70% (#20), sized from the probe's time, cut at the deadline.
# Every step has a time cap; each writes its log under $R, and the last step packs $R.
#   OUT_DIR=DIR SHARED=../shared DEADLINE=480 bash experiments/gpu_real.sh toy|real
set -uo pipefail
cd "$(dirname "$0")/.."
MODE=${1:?usage: $0 toy|real}
PY=${PYTHON:-python3}
R=${OUT_DIR:-experiments/results/gpu-$MODE}
SHARED=${SHARED:-../shared}
DEADLINE=${DEADLINE:-480}
MODEL=${MODEL:-models/SmolLM2-135M-Instruct.Q4_1.gguf}
T0=$(date +%s)
mkdir -p "$R"
export PYTHONUNBUFFERED=1
left() { echo $(( DEADLINE - ($(date +%s) - T0) )); }
# step NAME CAP CMD...: run CMD for at most min(CAP, time left - RESERVE) seconds into $R/NAME.log
step() {
  local name=$1 cap=$2 t budget; shift 2
  budget=$(left); budget=$(( budget - ${RESERVE:-20} ))
  [ "$cap" -lt "$budget" ] && budget=$cap
  if [ "$budget" -lt 10 ]; then echo "$name: skipped, $(left) s left" | tee -a "$R/steps.log"; return 1; fi
  t=$(date +%s)
  timeout --signal=INT --kill-after=10 "$budget" "$@" > "$R/$name.log" 2>&1
  local rc=$?
  echo "$name: rc $rc, $(( $(date +%s) - t )) s (cap $budget s)" | tee -a "$R/steps.log"
  tail -n 4 "$R/$name.log"
  return $rc
}
PZ=("$PY" -m pruner_zero)
DEV=${DEVICE:-cuda}
CAL=(--calib-split valid --nsamples 32 --seqlen 256 --device "$DEV" --quiet)

if [ "$MODE" = toy ]; then
  WIKI=(--model "$SHARED/models/wiki-llama-5m" --data-dir "$SHARED/data/wikitext-2")
  # CPU: 105.5682 (seed 0, 256 spread test windows; dense 96.396)
  step prune-wiki-lsq 60 "${PZ[@]}" prune "${WIKI[@]}" "${CAL[@]}" --seed 0 --sparsity 0.7 \
    --metric gblm --update sweep-lsq --compare layer --eval-windows 256
  step search-wiki 60 "${PZ[@]}" search "${WIKI[@]}" "${CAL[@]}" --seed 0 --sparsity 0.7 \
    --space obs --recipe-space uniform/sweep-lsq,uniform/lsq,owl:5:0.08/sweep-lsq --compare layer \
    --seed-metrics 'gblm,mul(sqr(W), H)' --population 4 --generations 1 --polish 1 \
    --fitness-windows 16 --final-top 2 --confirm-seeds 2 --confirm-windows 16 --eval-windows 32 \
    --baselines wanda --out /tmp/search-wiki
  cp /tmp/search-wiki/history.csv "$R/search-wiki-history.csv" 2>/dev/null
  RESERVE=5 step gpu-check 120 env PYTHON="$PY" SHARED="$SHARED" OUT_DIR="$R/check" \
    bash experiments/gpu_check.sh
  exit 0
fi

# real: the model arrives as pieces of its xz (.gpu/gguf.xz.a, .gpu2/gguf.xz.b, .gpu2/gguf.xz.c)
# and the tokenizer converted on the CPU machine (.gpu/tok.tar.xz: the slow part of a conversion)
export PRUNER_ZERO_CACHE=${PRUNER_ZERO_CACHE:-/tmp/pz-cache}
if [ ! -f "$MODEL" ]; then
  mkdir -p "$(dirname "$MODEL")"
  cat .gpu/gguf.xz.a .gpu2/gguf.xz.b .gpu2/gguf.xz.c | xz -dc -T0 > "$MODEL" || exit 1
fi
echo "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53  $MODEL" | sha256sum -c || exit 1
step convert 120 "$PY" - "$MODEL" "$PRUNER_ZERO_CACHE" .gpu/tok.tar.xz <<'PYEOF' || exit 1
import json, sys, tarfile, time
from pathlib import Path
import torch
from transformers import AutoModelForCausalLM
sys.path.insert(0, ".")
from pruner_zero.gguf import CACHE_SUBDIR, file_sha256
gguf, cache, tok = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
digest = file_sha256(gguf)
dest = cache / CACHE_SUBDIR / f"{gguf.stem}-{digest[:16]}"
tmp = dest.with_name(dest.name + ".part")
tmp.mkdir(parents=True, exist_ok=True)
with tarfile.open(tok) as t:
    t.extractall(tmp)
assert json.loads((tmp / "gguf_source.json").read_text())["sha256"] == digest
t = time.time()
model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
if hasattr(model.config, "quantization_config"):
    del model.config.quantization_config
model.hf_quantizer = None
model.config.use_cache = True
model.save_pretrained(tmp)
tmp.rename(dest)
print(f"weights dequantized and saved in {time.time() - t:.1f} s: {dest}")
PYEOF
REAL=(--model "$MODEL" --data-dir "$SHARED/data/wikitext-2")
# CPU: dense 32.8185, gblm / sweep-lsq / per layer 87.3172 (seed 0, 32 spread test windows)
t=$(date +%s)
step probe 90 "${PZ[@]}" prune "${REAL[@]}" "${CAL[@]}" --seed 0 --sparsity 0.7 \
  --metric gblm --update sweep-lsq --compare layer --eval-windows 32
PROBE=$(( $(date +%s) - t ))
# #19: the published metrics, 256 spread test windows, 3 calibration seeds, dense statistics
for shape in "unstructured 0.5,0.7" "2:4 -"; do
  set -- $shape
  args=(--structure "$1"); [ "$2" != - ] && args+=(--sparsity "$2")
  RESERVE=200 step "baselines-${1/:/of}" 150 "${PZ[@]}" compare "${REAL[@]}" "${CAL[@]}" \
    --calibration dense --metrics magnitude,wanda,gblm,pruner-zero,sparsegpt --seeds 3 \
    --eval-windows 256 "${args[@]}" --out "$R/baselines-${1/:/of}"
done
# #20: a recipe search at 70%, its population sized so that ~70% of the time left buys walks
WALKS=$(( ($(left) - 40) * 7 / 10 / (PROBE > 1 ? PROBE : 1) ))
POP=$(( WALKS / 3 )); [ "$POP" -gt 16 ] && POP=16; [ "$POP" -lt 4 ] && POP=4
GENS=$(( WALKS / POP - 2 )); [ "$GENS" -gt 6 ] && GENS=6; [ "$GENS" -lt 1 ] && GENS=1
echo "probe ${PROBE} s: population $POP, generations $GENS" | tee -a "$R/steps.log"
RESERVE=15 step search-real 600 "${PZ[@]}" search "${REAL[@]}" "${CAL[@]}" --seed 0 --sparsity 0.7 \
  --space obs --recipe-space uniform/sweep-lsq,uniform/lsq,owl:5:0.08/sweep-lsq --compare layer \
  --seed-metrics 'gblm,mul(sqr(W), H),mul(W, add(sqrt(H), mul(100, G))),wanda' \
  --population "$POP" --generations "$GENS" --polish 1 --fitness-windows 16 --final-top 2 \
  --confirm-seeds 2 --confirm-windows 16 --eval-windows 32 --baselines wanda \
  --out /tmp/search-real
# then, if time is left, #19's table under sequential calibration
RESERVE=10 step baselines-sequential 300 "${PZ[@]}" compare "${REAL[@]}" "${CAL[@]}" \
  --calibration sequential --metrics magnitude,wanda,gblm,pruner-zero --seeds 3 \
  --eval-windows 256 --sparsity 0.5,0.7 --out "$R/baselines-sequential"
mkdir -p "$R/search-real"
cp /tmp/search-real/*.csv /tmp/search-real/*.json /tmp/search-real/*.txt "$R/search-real/" 2>/dev/null
echo "done in $(( $(date +%s) - T0 )) s" | tee -a "$R/steps.log"
