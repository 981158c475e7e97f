"""What storing G in bfloat16 (--stats-dtype bfloat16) does to the metrics that read it.

G is summed in float32 either way; bfloat16 keeps 8 bits of mantissa of the result, so scores
that differ by less than ~0.4% can swap ranks. Measured on the shared model (README protocol:
wiki-llama-5m, calibration valid x32 at seqlen 256, seed 0, all of test, CPU float32): the
fraction of weights whose mask differs, and the perplexity with each.

    python experiments/stats_dtype_effect.py --out experiments/results/stats_dtype_effect.json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
METRICS = ("gblm", "pruner-zero", "mul(W, G)", "G")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=str(SHARED / "models" / "wiki-llama-5m"))
    p.add_argument("--data-dir", default=str(SHARED / "data" / "wikitext-2"))
    p.add_argument("--out", default=None)
    a = p.parse_args()
    sys.path.insert(0, str(REPO))
    from pruner_zero.engine import Engine
    from pruner_zero.masks import Structure
    from pruner_zero.metric.io import resolve_metric
    from pruner_zero.workbench import Protocol, Workbench

    bench = Workbench(Protocol(model=a.model, data_dir=a.data_dir, calib_split="valid",
                               eval_split="test", nsamples=32, seqlen=256, seed=0, device="cpu",
                               dtype="float32"), cache_dir=None, progress=False)
    full = bench.statistics({"X", "G"})
    half = {n: {"X": s["X"], "G": s["G"].to("cpu", copy=True).bfloat16()} for n, s in full.items()}
    rows = []
    for sparsity in (0.5, 0.7):
        for metric in METRICS:
            tree = resolve_metric(metric)[1]
            row = {"metric": metric, "sparsity": sparsity}
            zeros = {}
            for label, stats in (("float32", full), ("bfloat16", half)):
                engine = Engine(bench.model, bench.linears, stats, Structure(sparsity))
                engine.prune(tree, metric)
                zeros[label] = {n: (m.weight == 0).clone() for n, m in bench.linears.items()}
                row[f"ppl_{label}"] = bench.perplexity(progress=False)
                engine.restore()
            differ = sum(int((zeros["float32"][n] != zeros["bfloat16"][n]).sum()) for n in zeros["float32"])
            total = sum(m.weight.numel() for m in bench.linears.values())
            row["mask_differs"] = differ / total
            rows.append(row)
            print(json.dumps(row), flush=True)
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps({"protocol": bench.protocol.as_dict(), "rows": rows},
                                          indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
