"""How many report windows does the tie rule need? Per-window NLL over a whole split, for a few
metrics x calibration seeds, then the perplexity of N windows spread evenly (window floor(i*W/N))
for several N: the window-subset error against the whole split, beside the calibration-seed
spread, and whether each metric's verdict against the reference (better / worse / tie, the tie
rule of ``spread.verdict``) is the whole split's.

    python experiments/tail_budget.py [--seqlen 64] [--sparsity 0.5] [--out FILE.json]

One whole-split pass per (metric, seed); the subsets are read off the same per-window numbers.
Results: experiments/README.md ("The tail of a search").
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch

SHARED = Path(__file__).resolve().parents[2] / "shared"


@torch.no_grad()
def per_window_nll(model, windows: torch.Tensor, batch: int = 32) -> torch.Tensor:
    """Summed next-token NLL of each window (the terms evaluate.perplexity adds up)."""
    out = []
    for i in range(0, windows.shape[0], batch):
        ids = windows[i:i + batch]
        logits = model(input_ids=ids).logits[:, :-1].float()
        nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                ids[:, 1:].reshape(-1), reduction="none")
        out.append(nll.view(ids.shape[0], -1).double().sum(dim=1))
    return torch.cat(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=str(SHARED / "models" / "wiki-llama-5m"))
    p.add_argument("--data-dir", default=str(SHARED / "data" / "wikitext-2"))
    p.add_argument("--calib-split", default="valid")
    p.add_argument("--split", default="test")
    p.add_argument("--nsamples", type=int, default=4)
    p.add_argument("--seqlen", type=int, default=64)
    p.add_argument("--sparsity", type=float, default=0.5)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--budgets", default="32,64,128,256")
    p.add_argument("--metrics", default="wanda,magnitude,gblm,pruner-zero")
    p.add_argument("--reference", default="wanda")
    p.add_argument("--out", default=None)
    a = p.parse_args()

    from pruner_zero.data import spread_indices
    from pruner_zero.spread import mean_std, verdict
    from pruner_zero.engine import Engine
    from pruner_zero.masks import Structure
    from pruner_zero.metric.io import resolve_metric
    from pruner_zero.workbench import Protocol, Workbench

    metrics = a.metrics.split(",")
    base = Workbench(Protocol(model=a.model, data_dir=a.data_dir, calib_split=a.calib_split,
                              nsamples=a.nsamples, seqlen=a.seqlen, device="cpu", seed=0,
                              eval_split=a.split), progress=False, log=lambda m: None)
    windows = base.eval_windows()
    total = windows.shape[0]
    nll: dict[tuple[str, int], torch.Tensor] = {}  # per-window summed NLL
    for seed in range(a.seeds):
        bench = base if seed == 0 else base.variant(seed=seed)
        engine = Engine(bench.model, bench.linears, bench.stats, Structure(a.sparsity))
        for spec in metrics:
            _, tree = resolve_metric(spec)
            engine.prune(tree, spec)
            try:
                nll[(spec, seed)] = per_window_nll(bench.model, windows)
            finally:
                engine.restore()
            print(f"seed {seed} {spec}: done", flush=True)
    tokens = a.seqlen - 1

    def ppl(spec: str, seed: int, n: int | None) -> float:
        v = nll[(spec, seed)]
        if n is not None:
            v = v[spread_indices(n, total)]
        return math.exp(float(v.sum()) / (v.numel() * tokens))

    budgets = [int(b) for b in a.budgets.split(",") if int(b) < total] + [None]
    rows = []
    whole_verdict = {m: verdict([ppl(m, s, None) for s in range(a.seeds)],
                                [ppl(a.reference, s, None) for s in range(a.seeds)]) for m in metrics}
    for n in budgets:
        for m in metrics:
            vals = [ppl(m, s, n) for s in range(a.seeds)]
            full = [ppl(m, s, None) for s in range(a.seeds)]
            mean, std = mean_std(vals)
            err = max(abs(v - f) / f for v, f in zip(vals, full))
            v = verdict(vals, [ppl(a.reference, s, n) for s in range(a.seeds)])
            rows.append({"windows": n or total, "metric": m, "mean": mean, "seed_std": std,
                         "rel_seed_std": std / mean, "max_rel_error_vs_whole": err,
                         "verdict_vs_reference": v, "whole_split_verdict": whole_verdict[m]})
    print(f"{'windows':>8} {'metric':12} {'mean':>10} {'seed std':>9} {'std/mean':>9} "
          f"{'|N-all|/all':>11}  verdict (whole split)")
    for r in rows:
        print(f"{r['windows']:>8} {r['metric']:12} {r['mean']:10.4f} {r['seed_std']:9.4f} "
              f"{r['rel_seed_std']:9.5f} {r['max_rel_error_vs_whole']:11.5f}  "
              f"{r['verdict_vs_reference']} ({r['whole_split_verdict']})")
    if a.out:
        Path(a.out).write_text(json.dumps({"args": vars(a), "total_windows": total, "rows": rows},
                                          indent=1))


if __name__ == "__main__":
    main()
