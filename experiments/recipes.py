"""Recipes beside each other (issue #20): metric x allocation (uniform, OWL) x update (none,
OBS), and SparseGPT, per model and calibration seed.

One Workbench per (model, seed): the statistics are computed once, then every recipe is
pruned, measured on the same spread windows of the report split, and restored. Allocation and
update are the ones `prune --allocation owl --update obs` uses (`allocation.linear_sparsities`, the
engine's update).

    python experiments/recipes.py --model ../shared/models/wiki-llama-5m \\
        --data-dir ../shared/data/wikitext-2 --out experiments/results/recipes/wiki-llama-5m.json
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--calib-split", default="valid")
    p.add_argument("--eval-split", default="test")
    p.add_argument("--eval-windows", type=int, default=64)
    p.add_argument("--nsamples", type=int, default=32)
    p.add_argument("--seqlen", type=int, default=256)
    p.add_argument("--sparsity", type=float, default=0.7)
    p.add_argument("--metrics", default="wanda,gblm")
    p.add_argument("--allocations", default="uniform,owl")
    p.add_argument("--updates", default="none,obs")
    p.add_argument("--no-sparsegpt", action="store_true")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--first-seed", type=int, default=0, help="calibration seeds first-seed, ...")
    p.add_argument("--cache-dir", default=str(Path.home() / ".cache" / "pruner_zero"))
    p.add_argument("--out", required=True)
    a = p.parse_args()
    sys.path.insert(0, str(REPO))
    from pruner_zero.allocation import Allocation, linear_sparsities
    from pruner_zero.engine import Engine
    from pruner_zero.masks import parse_structure
    from pruner_zero.metric.io import resolve_metric
    from pruner_zero.engine import weights_kept_on_host
    from pruner_zero.model import layers_prefix
    from pruner_zero.sparsegpt import sparsegpt_prune
    from pruner_zero.spread import mean_std
    from pruner_zero.workbench import Protocol, Workbench

    shape = parse_structure("unstructured", a.sparsity)
    rows, started = [], time.time()
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def measured(row: dict) -> None:  # kept as it comes: a stopped run keeps what it measured
        rows.append(row)
        print(json.dumps(row), flush=True)
        out.write_text(json.dumps({"args": vars(a), "rows": rows}, indent=2) + "\n")

    for seed in range(a.first_seed, a.first_seed + a.seeds):
        bench = Workbench(Protocol(model=a.model, data_dir=a.data_dir, calib_split=a.calib_split,
                                   eval_split=a.eval_split, eval_windows=a.eval_windows,
                                   nsamples=a.nsamples, seqlen=a.seqlen, seed=seed, device="cpu",
                                   dtype="float32"),
                          cache_dir=Path(a.cache_dir), progress=False, log=lambda m: None)
        windows = bench.report_windows()
        stats = bench.statistics({"X", "G"})
        for kind in a.allocations.split(","):
            sparsities = linear_sparsities(Allocation(kind), shape.sparsity, bench.linears, stats,
                                           layers_prefix(bench.model))
            for update in a.updates.split(","):
                engine = Engine(bench.model, bench.linears, stats, shape, calib=bench.calib,
                                keep="copy", sparsities=sparsities,
                                update=None if update == "none" else update)
                for metric in a.metrics.split(","):
                    engine.prune(resolve_metric(metric)[1])
                    ppl = bench.perplexity(windows)
                    engine.restore()
                    measured({"recipe": f"{metric}/{kind}/{update}", "seed": seed, "ppl": ppl,
                              "windows": int(windows.shape[0])})
        if not a.no_sparsegpt:
            with weights_kept_on_host(bench.linears):
                sparsegpt_prune(bench.model, bench.calib, shape, False)
                measured({"recipe": "sparsegpt", "seed": seed, "ppl": bench.perplexity(windows),
                          "windows": int(windows.shape[0])})
    table = {}
    for recipe in dict.fromkeys(r["recipe"] for r in rows):
        m, s = mean_std([r["ppl"] for r in rows if r["recipe"] == recipe])
        table[recipe] = [m, s]
        print(f"{recipe:>24}  {m:.3f} ± {s:.3f}")
    result = {"args": vars(a), "rows": rows, "mean_std": table,
              "seconds": round(time.time() - started, 1)}
    out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
