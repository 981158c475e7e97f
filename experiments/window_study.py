"""Which fitness windows rank metrics like the full split? Perplexity at 70% of a few metrics on the
first 200 test windows, on 200 windows spread over the split (the search's fitness), and on all.

    python experiments/window_study.py [--full] [METRIC ...]

Results: experiments/README.md ("Why the fitness windows are spread").
"""
from __future__ import annotations

import argparse
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared"
METRICS = ["gblm", "wanda", "mul(W, sqrt(mul(X, G)))", "mul(sqrt(mul(mul(X, G), W)), W)",
           "mul(mul(W, sqrt(X)), add(W, G))", "mms(mul(add(G, W), mul(G, W)))"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("metrics", nargs="*", default=METRICS)
    p.add_argument("--model", default=str(SHARED / "models" / "wiki-llama-5m"))
    p.add_argument("--data-dir", default=str(SHARED / "data" / "wikitext-2"))
    p.add_argument("--sparsity", type=float, default=0.7)
    p.add_argument("--windows", type=int, default=200)
    p.add_argument("--full", action="store_true", help="also the whole split (slow)")
    a = p.parse_args()

    from pruner_zero.engine import Engine
    from pruner_zero.masks import Structure
    from pruner_zero.metric.io import resolve_metric
    from pruner_zero.workbench import Protocol, Workbench

    bench = Workbench(Protocol(model=a.model, data_dir=a.data_dir, calib_split="valid", nsamples=32,
                               seqlen=256, device="cpu", seed=0), progress=False, log=lambda m: None)
    engine = Engine(bench.model, bench.linears, bench.stats, Structure(a.sparsity))
    subsets = {f"first {a.windows}": bench.eval_windows(a.windows),
               f"spread {a.windows}": bench.eval_windows(a.windows, spread=True)}
    if a.full:
        subsets["full split"] = bench.eval_windows()
    print(f"{'metric':45s}" + "".join(f"{k:>14s}" for k in subsets), flush=True)
    for spec in a.metrics:
        _, tree = resolve_metric(spec)
        engine.prune(tree, spec)
        try:
            ppls = [bench.perplexity(w, progress=False) for w in subsets.values()]
        finally:
            engine.restore()
        print(f"{spec:45s}" + "".join(f"{x:14.3f}" for x in ppls), flush=True)


if __name__ == "__main__":
    main()
