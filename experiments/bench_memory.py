"""Peak memory of pruning and of a search candidate, as a multiple of the model's weight bytes.

A randomly initialised LLaMA is built from a config (nothing is downloaded; about 150M
parameters by default, any size by flags). Each case runs in a fresh process, so one case's
peak never hides another's:

- ``prune-wanda``: X only (forward passes), score/mask/prune layer by layer, perplexity;
- ``prune-g``: a G metric (gblm: X and G, one backward per calibration window), same steps;
- ``search``: X and G held, then a search candidate's cycle (score, mask and prune layer by
  layer with what is zeroed kept on the host, measure, restore) for a few metrics.

The peak is the process's peak RSS minus its RSS after the imports (the interpreter and torch's
libraries are not the pruning's), or ``torch.cuda.max_memory_allocated`` on CUDA. The table
below the measurements extrapolates the measured parts to LLaMA-2-7B, 13B and 70B on 80 GB GPUs.

    python experiments/bench_memory.py --out experiments/results/bench_memory.json
    python experiments/bench_memory.py --device cuda --stats-dtype bfloat16     # on a GPU
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CASES = ("prune-wanda", "prune-g", "search")
LLAMA2 = {"7B": 6.74e9, "13B": 13.0e9, "70B": 69.0e9}  # parameters
GPU_BYTES = 80e9


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize()


def run_case(a: argparse.Namespace) -> dict:
    """One case in this process; returns its measurements."""
    sys.path.insert(0, str(REPO))
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from pruner_zero.engine import Engine
    from pruner_zero.evaluate import perplexity
    from pruner_zero.masks import Structure
    from pruner_zero.metric.io import resolve_metric
    from pruner_zero.model import prunable_linears
    from pruner_zero.stats import compute_stats, placed

    dev = torch.device(a.device)
    cuda = dev.type == "cuda"
    base = torch.cuda.memory_allocated() if cuda else _rss_bytes()
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=a.vocab, hidden_size=a.hidden, intermediate_size=a.intermediate,
                      num_hidden_layers=a.layers, num_attention_heads=a.heads,
                      num_key_value_heads=a.heads, max_position_embeddings=a.seqlen,
                      tie_word_embeddings=False)
    dtype = getattr(torch, a.dtype)
    with torch.device(dev):
        model = LlamaForCausalLM(cfg).to(dtype).eval()
    params = sum(p.numel() for p in model.parameters())
    model_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    linears = prunable_linears(model)
    gen = torch.Generator().manual_seed(0)
    calib = torch.randint(0, a.vocab, (a.nsamples, a.seqlen), generator=gen)
    windows = torch.randint(0, a.vocab, (a.windows, a.seqlen), generator=gen)
    which = {"X"} if a.case == "prune-wanda" else {"X", "G"}
    stats = placed(compute_stats(model, linears, calib, False, which, a.stats_device),
                   a.stats_device, a.stats_dtype)
    stats_bytes = sum(v.numel() * v.element_size() for s in stats.values() for v in s.values())
    metrics = ["wanda"] if a.case == "prune-wanda" else \
        ["gblm"] if a.case == "prune-g" else ["gblm", "pruner-zero", "wanda"]
    engine = Engine(model, linears, stats, Structure(a.sparsity),
                    keep=None if a.case.startswith("prune") else "host")
    ppls = []
    kept_bytes = 0
    with torch.no_grad():
        for name in metrics:
            tree = resolve_metric(name)[1]
            engine.check(tree, name) if a.case.startswith("prune") else None
            engine.prune(tree, name)
            kept_bytes = max(kept_bytes, sum(u.values.numel() * u.values.element_size()
                                             + u.packed.numel() for u in engine._undo.values()))
            ppls.append(perplexity(model, windows.to(dev), a.batch_size))
            engine.restore()
    if cuda:
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    return {"case": a.case, "device": dev.type, "dtype": a.dtype, "stats_dtype": a.stats_dtype,
            "stats_device": a.stats_device or "beside the weights", "params": params,
            "model_bytes": model_bytes, "stats_bytes": stats_bytes, "kept_bytes": kept_bytes,
            "peak_bytes": peak, "peak_over_model": peak / model_bytes,
            "stats_over_model": stats_bytes / model_bytes,
            "kept_over_model": kept_bytes / model_bytes,
            "other_over_model": (peak - model_bytes - stats_bytes - kept_bytes) / model_bytes,
            "ppl": ppls, "config": {k: getattr(a, k) for k in (
                "hidden", "intermediate", "layers", "heads", "vocab", "nsamples", "seqlen",
                "windows", "batch_size", "sparsity")}}


LIMITS = {"prune-wanda": 1.3, "prune-g": 2.3, "search": 2.6}


def extrapolate(rows: list[dict], sparsity: float) -> list[dict]:
    """Bytes on one GPU for LLaMA-2 in bfloat16: the model, G (bfloat16 on the GPU, or streamed
    from the host with --stats-device cpu), what a candidate zeroes (host memory on a GPU), and
    the measured rest (activations, one layer's temporaries) scaled as the measured fraction of
    the model; that fraction shrinks with size (activations grow with the width, weights with
    its square), so the table errs high."""
    other = {r["case"]: max(r["other_over_model"], 0.0) for r in rows}
    out = []
    for size, n in LLAMA2.items():
        model = 2 * n
        for case in CASES:
            g = 0.0 if case == "prune-wanda" else model  # bfloat16 G: the model's bytes
            for where in ("gpu", "cpu"):
                if case == "prune-wanda" and where == "cpu":
                    continue
                on_gpu = model + (g if where == "gpu" else 0.0) + other.get(case, 0.0) * model
                host = (g if where == "cpu" else 0.0) + \
                    ((sparsity * model + n / 8) if case == "search" else 0.0)
                out.append({"model": f"LLaMA-2-{size}", "case": case, "stats_device": where,
                            "gpu_gb": round(on_gpu / 1e9, 1), "host_gb": round(host / 1e9, 1),
                            "fits_80gb": on_gpu <= GPU_BYTES})
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--case", choices=CASES, default=None, help="run one case in this process")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--stats-dtype", default="float32")
    p.add_argument("--stats-device", default=None)
    p.add_argument("--hidden", type=int, default=768)
    p.add_argument("--intermediate", type=int, default=2048)
    p.add_argument("--layers", type=int, default=14)
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--nsamples", type=int, default=8)
    p.add_argument("--seqlen", type=int, default=128)
    p.add_argument("--windows", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--sparsity", type=float, default=0.5)
    p.add_argument("--out", default=None, help="write the measurements and the table as JSON")
    a = p.parse_args()
    if a.case is not None:
        print(json.dumps(run_case(a)))
        return 0
    rows = []
    forwarded = [f"--{k.replace('_', '-')}={v}" for k, v in vars(a).items()
                 if k not in ("case", "out") and v is not None]
    for case in CASES:
        res = subprocess.run([sys.executable, __file__, "--case", case, *forwarded],
                             capture_output=True, text=True, check=True)
        rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
        r = rows[-1]
        print(f"{case:12s} peak/model {r['peak_over_model']:.3f} (limit {LIMITS[case]})  "
              f"stats {r['stats_over_model']:.3f}  kept {r['kept_over_model']:.3f}  "
              f"other {r['other_over_model']:.3f}  [{r['params'] / 1e6:.0f}M params, "
              f"{r['model_bytes'] / 1e6:.0f} MB]", flush=True)
    table = extrapolate(rows, a.sparsity)
    print("\nLLaMA-2 in bfloat16, bfloat16 G, one 80 GB GPU (GB; host = host memory):")
    print(f"{'model':12s} {'case':12s} {'G on':5s} {'GPU':>7s} {'host':>7s}  fits")
    for t in table:
        print(f"{t['model']:12s} {t['case']:12s} {t['stats_device']:5s} {t['gpu_gb']:7.1f} "
              f"{t['host_gb']:7.1f}  {'yes' if t['fits_80gb'] else 'no'}")
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps({"command": " ".join(["python",
                                                                "experiments/bench_memory.py",
                                                                *sys.argv[1:]]),
                                           "rows": rows, "extrapolated": table}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
