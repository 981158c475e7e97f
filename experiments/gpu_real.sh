#!/usr/bin/env bash
# A lent GPU session (15 minutes of device time, two calls): the recipe path on CUDA, then SmolLM2.
#   toy:  the recipe path on CUDA on wiki-llama-5m (a sweep-lsq prune against its CPU figure, a
#         tiny recipe search: seconds a candidate), then experiments/gpu_check.sh.
#   real: SmolLM2-135M on CUDA: a probe prune against its CPU figure (dense and gblm / sweep-lsq,
#         seed 0, 32 spread test windows), #19's baseline table (256 spread test windows, 3 seeds),
#         then a recipe search at 70% (#20), sized from the probe's time, cut at the deadline.
# Every step has a time cap; each writes its log under $R (pack it: only 8 files come back).
#   OUT_DIR=DIR SHARED=.gpu/shared DEADLINE=480 bash experiments/gpu_real.sh toy|real
# The model does not fit one call (64 MiB a call, the xz of the GGUF is 90 MB), and a call removes
# the ignored folders it does not carry, so: a call carrying .gpu (toy assets, wheels, the first
# piece) runs `toy` (or `stage`), which copies .gpu to /tmp/gpu (kept while the machine is warm,
# 30 s after a call); the next call carries .gpu2 (the other pieces) and runs `real`.
# `prepare`, on this machine after `make real-model`, builds .gpu and .gpu2 (list both in
# .git/info/exclude): the wheels the GPU image lacks (deap 1.4.3, whose hypervolume is built in:
# 1.4.4 needs moocore and cffi, absent there; gguf), the toy assets, the tokenizer as converted
# here (the slow part of a conversion) and the GGUF's xz in pieces.
set -uo pipefail
cd "$(dirname "$0")/.."
MODE=${1:?usage: $0 prepare|stage|toy|real}
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

if [ "$MODE" = prepare ]; then
  rm -rf .gpu .gpu2 && mkdir -p .gpu/whl .gpu/shared/models .gpu/shared/data .gpu2 || exit 1
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .gpu/whl deap==1.4.3 gguf==0.19.0 || exit 1
  cp -r "$SHARED/models/wiki-llama-5m" .gpu/shared/models/ && cp -r "$SHARED/data/wikitext-2" \
    .gpu/shared/data/ && chmod -R u+w .gpu || exit 1
  ckpt=$(ls -d "${PRUNER_ZERO_CACHE:-$HOME/.cache/pruner_zero}"/gguf/SmolLM2-135M-Instruct.Q4_1-b179c9523d0e6a0f)
  tar -C "$ckpt" -cJf .gpu/tok.tar.xz chat_template.jinja config.json generation_config.json \
    gguf_source.json tokenizer.json tokenizer_config.json || exit 1
  rm -f /tmp/gguf.xz.*
  xz -T2 -6 -c "$MODEL" | split -b 38000000 -d - /tmp/gguf.xz. || exit 1
  [ "$(ls /tmp/gguf.xz.* | wc -l)" = 3 ] || { echo "expected 3 pieces of the xz" >&2; exit 1; }
  mv /tmp/gguf.xz.00 .gpu/gguf.xz.a && mv /tmp/gguf.xz.01 .gpu2/gguf.xz.b \
    && mv /tmp/gguf.xz.02 .gpu2/gguf.xz.c || exit 1
  du -sb .gpu .gpu2
  exit 0
fi
if [ "$MODE" = toy ] || [ "$MODE" = stage ]; then
  rm -rf /tmp/gpu && cp -r .gpu /tmp/gpu
fi
[ "$MODE" = stage ] && exit 0
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
[ -d .gpu ] || cp -r /tmp/gpu .gpu || exit 1
if [ ! -f "$MODEL" ]; then
  mkdir -p "$(dirname "$MODEL")"
  cat .gpu/gguf.xz.a .gpu2/gguf.xz.b .gpu2/gguf.xz.c | xz -dc -T0 > "$MODEL.part" || exit 1
  mv "$MODEL.part" "$MODEL"
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
