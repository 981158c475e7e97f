"""Every shared-model perplexity the README states, measured again in one process.

The numbers of a refactor must not move: run this before and after, compare the JSON (full
precision). Protocol as in the README: wiki-llama-5m, calibration valid x32 at seqlen 256, seed
0, all 1365 windows of test, CPU float32.

    python experiments/readme_numbers.py --out experiments/results/readme_numbers.json
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"

CELLS = [  # (metric, sparsity, calibration)
    *[(m, s, "dense") for s in (0.5, 0.7) for m in ("magnitude", "wanda", "gblm", "pruner-zero")],
    ("wanda", 0.7, "sequential"), ("gblm", 0.7, "sequential"), ("sparsegpt", 0.7, "dense"),
]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=str(SHARED / "models" / "wiki-llama-5m"))
    p.add_argument("--data-dir", default=str(SHARED / "data" / "wikitext-2"))
    p.add_argument("--out", default=None, help="write the numbers here as JSON")
    a = p.parse_args()
    sys.path.insert(0, str(REPO))
    from pruner_zero.engine import Engine, weights_kept_on_host
    from pruner_zero.masks import parse_structure
    from pruner_zero.metric.io import resolve_metric
    from pruner_zero.sparsegpt import sparsegpt_prune
    from pruner_zero.workbench import Protocol, Workbench

    bench = Workbench(Protocol(model=a.model, data_dir=a.data_dir, calib_split="valid",
                               eval_split="test", nsamples=32, seqlen=256, seed=0, device="cpu",
                               dtype="float32"), cache_dir=None, progress=False)
    started = time.time()
    rows = [{"metric": "dense", "ppl": bench.perplexity()}]
    for metric, sparsity, mode in CELLS:
        shape = parse_structure("unstructured", sparsity)
        engine = Engine(bench.model, bench.linears, bench.stats, shape, mode,
                        bench.calib if mode == "sequential" else None)
        if metric == "sparsegpt":
            with weights_kept_on_host(bench.linears):
                sparsegpt_prune(bench.model, bench.calib, shape, False)
                ppl = bench.perplexity()
        else:
            engine.prune(resolve_metric(metric)[1])
            ppl = bench.perplexity()
            engine.restore()
        rows.append({"metric": metric, "sparsity": sparsity, "calibration": mode, "ppl": ppl})
        print(json.dumps(rows[-1]), flush=True)
    result = {"protocol": bench.protocol.as_dict(), "rows": rows,
              "seconds": round(time.time() - started, 1)}
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"dense {rows[0]['ppl']!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
