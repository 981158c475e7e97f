#!/usr/bin/env bash
# GPU check (#10): on a CUDA machine, (1) the shared model in float32 gives the CPU perplexities
# within 0.1% (dense, wanda, a G metric), (2) a random LLaMA-2-7B-shaped model in bfloat16:
# statistics, 10 search candidates, seconds per candidate and peak GPU memory, (3) the memory
# bench on the GPU. Results go to experiments/results/gpu/ (commit them).
#
#   bash experiments/gpu_check.sh            # from the repository root, ../shared beside it
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
OUT=${OUT_DIR:-experiments/results/gpu}
SHARED=${SHARED:-../shared}
DEVICE=${DEVICE:-cuda}  # DEVICE=cpu TINY=1: a dry run of this script on a machine without a GPU
mkdir -p "$OUT"
"$PY" - "$SHARED" "$OUT" "$DEVICE" "${TINY:-}" <<'PYEOF'
import json, sys, time
from pathlib import Path
import torch
shared, out, device, tiny = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], bool(sys.argv[4])
assert device == "cpu" or torch.cuda.is_available(), "no CUDA device"
sys.path.insert(0, ".")
from pruner_zero.pruning import prune
from pruner_zero.workbench import Protocol, Workbench
CPU = {"dense": 95.36580086873755, "wanda": 120.16263876890216, "gblm": 118.9200950475287}
rows = []
for metric in ("wanda", "gblm"):
    bench = Workbench(Protocol(model=str(shared / "models/wiki-llama-5m"),
                               data_dir=str(shared / "data/wikitext-2"), calib_split="valid",
                               nsamples=32, seqlen=256, seed=0, device=device, dtype="float32"),
                      progress=False)
    r = prune(bench, metric, sparsity=0.7, log=lambda m: None)
    for name, ppl in (("dense", r["ppl_dense"]), (metric, r["ppl"])):
        rel = abs(ppl - CPU[name]) / CPU[name]
        rows.append({"what": name, "gpu": ppl, "cpu": CPU[name], "rel_diff": rel, "ok": rel < 1e-3})
        print(json.dumps(rows[-1]), flush=True)
(out / "shared_model_ppl.json").write_text(json.dumps(rows, indent=2) + "\n")

# a LLaMA-2-7B-shaped model, random weights, bfloat16: statistics, then 10 candidates
from transformers import LlamaConfig, LlamaForCausalLM
from pruner_zero.engine import Engine
from pruner_zero.evaluate import perplexity
from pruner_zero.masks import Structure
from pruner_zero.metric.io import resolve_metric
from pruner_zero.model import prunable_linears
from pruner_zero.stats import compute_stats, placed
shape = (dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4)
         if tiny else dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                           num_attention_heads=32))
cfg = LlamaConfig(vocab_size=32000, num_key_value_heads=shape["num_attention_heads"],
                  max_position_embeddings=2048, **shape)
torch.manual_seed(0)
with torch.device(device):
    model = LlamaForCausalLM(cfg).to(torch.bfloat16).eval()
model_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
linears = prunable_linears(model)
seqlen = 64 if tiny else 2048
calib = torch.randint(0, 32000, (8, seqlen))
cuda = device != "cpu"
if cuda:
    torch.cuda.reset_peak_memory_stats()
t = time.time()
# G beside the weights when the card holds it in float32 (an H200 does: 27 GB for 7B); on the
# host every gradient crossed to it in each calibration window, past the first session's cap
free = torch.cuda.mem_get_info()[0] if cuda else 0
stats_where = device if free > 4 * model_bytes else "cpu"
stats = placed(compute_stats(model, linears, calib, False, {"X", "G"}, stats_where), stats_where,
               "bfloat16")
stats_s = time.time() - t
engine = Engine(model, linears, stats, Structure(0.5))
windows = torch.randint(0, 32000, (16, seqlen))
names = ["wanda", "gblm", "pruner-zero", "magnitude", "mul(W, G)", "mul(W, sqrt(G))",
         "mul(sqr(W), X)", "add(W, G)", "mul(W, mul(G, X))", "sqrt(mul(W, X))"]
times = []
for n in names:
    t = time.time()
    engine.prune(resolve_metric(n)[1], n)
    with torch.no_grad():
        perplexity(model, windows.to(device), 1)
    engine.restore()
    if cuda:
        torch.cuda.synchronize()
    times.append(time.time() - t)
res = {"model_bytes": model_bytes, "statistics_s": stats_s, "stats_device": stats_where,
       "stats_dtype": "bfloat16", "candidate_s": times, "windows": 16, "seqlen": seqlen, "shape": shape,
       "peak_gpu_bytes": torch.cuda.max_memory_allocated() if cuda else None,
       "peak_over_model": torch.cuda.max_memory_allocated() / model_bytes if cuda else None}
print(json.dumps(res), flush=True)
(out / "llama7b_shaped.json").write_text(json.dumps(res, indent=2) + "\n")
PYEOF
"$PY" experiments/bench_memory.py --device "$DEVICE" --out "$OUT/bench_memory_$DEVICE.json"
"$PY" experiments/bench_memory.py --device "$DEVICE" --dtype bfloat16 --stats-dtype bfloat16 \
    --out "$OUT/bench_memory_${DEVICE}_bf16.json"
echo "results in $OUT"
