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
mkdir -p "$OUT"
"$PY" - "$SHARED" "$OUT" <<'PYEOF'
import json, sys, time
from pathlib import Path
import torch
assert torch.cuda.is_available(), "no CUDA device"
shared, out = Path(sys.argv[1]), Path(sys.argv[2])
sys.path.insert(0, ".")
from pruner_zero.api import prune
from pruner_zero.workbench import Protocol, Workbench
CPU = {"dense": 95.36580086873755, "wanda": 120.16263876890216, "gblm": 118.9200950475287}
rows = []
for metric in ("wanda", "gblm"):
    bench = Workbench(Protocol(model=str(shared / "models/wiki-llama-5m"),
                               data_dir=str(shared / "data/wikitext-2"), calib_split="valid",
                               nsamples=32, seqlen=256, seed=0, device="cuda", dtype="float32"),
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
cfg = LlamaConfig(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                  num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=2048)
torch.manual_seed(0)
with torch.device("cuda"):
    model = LlamaForCausalLM(cfg).to(torch.bfloat16).eval()
model_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
linears = prunable_linears(model)
calib = torch.randint(0, 32000, (8, 2048))
torch.cuda.reset_peak_memory_stats()
t = time.time()
stats = placed(compute_stats(model, linears, calib, False, {"X", "G"}, "cpu"), "cpu", "bfloat16")
stats_s = time.time() - t
engine = Engine(model, linears, stats, Structure(0.5))
windows = torch.randint(0, 32000, (16, 2048))
names = ["wanda", "gblm", "pruner-zero", "magnitude", "mul(W, G)", "mul(W, sqrt(G))",
         "mul(sqr(W), X)", "add(W, G)", "mul(W, mul(G, X))", "sqrt(mul(W, X))"]
times = []
for n in names:
    t = time.time()
    engine.prune(resolve_metric(n)[1], n)
    with torch.no_grad():
        perplexity(model, windows.cuda(), 1)
    engine.restore()
    torch.cuda.synchronize()
    times.append(time.time() - t)
res = {"model_bytes": model_bytes, "statistics_s": stats_s, "stats_device": "cpu",
       "stats_dtype": "bfloat16", "candidate_s": times, "windows": 16, "seqlen": 2048,
       "peak_gpu_bytes": torch.cuda.max_memory_allocated(),
       "peak_over_model": torch.cuda.max_memory_allocated() / model_bytes}
print(json.dumps(res), flush=True)
(out / "llama7b_shaped.json").write_text(json.dumps(res, indent=2) + "\n")
PYEOF
"$PY" experiments/bench_memory.py --device cuda --out "$OUT/bench_memory_cuda.json"
"$PY" experiments/bench_memory.py --device cuda --dtype bfloat16 --stats-dtype bfloat16 \
    --out "$OUT/bench_memory_cuda_bf16.json"
echo "results in $OUT"
