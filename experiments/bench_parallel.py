"""Candidates per second of a search measured in-process vs on N Ray workers, same run.

Two searches with the same options (every cache off, so each candidate costs its forward
passes) differ only in ``--workers``; the throughput is counted over generations 1.. (generation
0 also pays for the workers' start: the model and statistics loaded in each), and the two runs'
evaluations must be identical. On CPU it also measures the ceiling at equal cores: fitness
measurements per second of one process on every core vs one-thread processes side by side (no
driver at all), which bounds what any pool can gain here. On this machine the in-process search uses both cores (torch
threads), each of 2 workers one core: equal cores. On a GPU machine: ``--device cuda --workers
N`` puts one worker on each of N GPUs.

    python experiments/bench_parallel.py --out experiments/results/bench_parallel.json
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
ENV = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
"""The child processes import this checkout's pruner_zero."""


def search(out: Path, a: argparse.Namespace, workers: int) -> dict:
    cmd = [sys.executable, "-m", "pruner_zero", "search", "--model", a.model, "--data-dir",
           a.data_dir, "--calib-split", "valid", "--nsamples", "32", "--seqlen", "256",
           "--device", a.device, "--sparsity", "0.6", "--space", "paper", "--population",
           str(a.population), "--generations", str(a.generations), "--gp-seed", "11",
           "--fitness-windows", str(a.windows), "--no-canonical-cache", "--no-fingerprint-cache",
           "--polish", "0", "--final-top", "1", "--confirm-seeds", "1", "--baselines", "wanda",
           "--cache-dir", a.cache_dir, "--quiet", "--out", str(out)]
    if workers:
        cmd += ["--workers", str(workers)]
        if a.worker_cpus:
            cmd += ["--worker-cpus", str(a.worker_cpus)]
    started = time.perf_counter()
    subprocess.run(cmd, check=True, env=ENV, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    with open(out / "history.csv", newline="") as fh:
        history = [r for r in csv.DictReader(fh)
                   if str(r.get("polish", "")).lower() not in ("1", "true")]
    later = [r for r in history if int(r["generation"]) >= 1]
    seconds = sum(float(r["seconds"]) for r in later)
    evaluated = sum(int(r["evaluated"]) for r in later)
    records = [{k: v for k, v in json.loads(line).items() if k != "seconds"}
               for line in (out / "evaluations.jsonl").read_text().splitlines()]
    return {"workers": workers, "candidates": evaluated, "seconds": round(seconds, 2),
            "candidates_per_s": evaluated / seconds, "generation0_s": float(history[0]["seconds"]),
            "wall_s": round(wall, 1), "records": records}


CEILING_PROBE = """
import sys, time, torch
from pruner_zero.evaluate import perplexity
from pruner_zero.workbench import Protocol, Workbench
torch.set_num_threads(int(sys.argv[3]))
bench = Workbench(Protocol(sys.argv[1], data_dir=sys.argv[2], eval_split="valid", seqlen=256,
                           device="cpu"), progress=False, log=lambda m: None)
windows = bench.eval_windows(int(sys.argv[4]), spread=True)
perplexity(bench.model, windows)  # warm
started = time.perf_counter()
for _ in range(int(sys.argv[5])):
    perplexity(bench.model, windows)
print(time.perf_counter() - started)
"""


def ceiling(a: argparse.Namespace, repeats: int = 10) -> dict:
    """The most 2 one-core workers can gain at equal cores, whatever the driver does: fitness
    measurements (the bulk of a candidate) per second of one process on every core vs as many
    one-thread processes side by side."""
    cores = os.cpu_count() or 1

    def probe(threads: int, side_by_side: int) -> float:
        cmd = [sys.executable, "-c", CEILING_PROBE, a.model, a.data_dir, str(threads),
               str(a.windows), str(repeats)]
        procs = [subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, text=True)
                 for _ in range(side_by_side)]
        seconds = [float(p.communicate()[0].split()[-1]) for p in procs]
        return side_by_side * repeats / max(seconds)

    one = probe(cores, 1)
    many = probe(max(1, cores // a.workers), a.workers)
    return {"measurements_per_s_one_process": one, "measurements_per_s_workers": many,
            "ceiling": many / one, "repeats": repeats, "windows": a.windows}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=str(SHARED / "models" / "wiki-llama-5m"))
    p.add_argument("--data-dir", default=str(SHARED / "data" / "wikitext-2"))
    p.add_argument("--device", default="cpu")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--worker-cpus", type=int, default=None)
    p.add_argument("--population", type=int, default=8)
    p.add_argument("--generations", type=int, default=3)
    p.add_argument("--windows", type=int, default=32, help="fitness windows per candidate")
    p.add_argument("--out", default=None)
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        a.cache_dir = str(Path(tmp) / "cache")  # statistics computed once, by the first run
        here = search(Path(tmp) / "here", a, 0)
        pool = search(Path(tmp) / "pool", a, a.workers)
    bound = ceiling(a) if a.device == "cpu" else None
    same = here.pop("records") == pool.pop("records")
    speedup = pool["candidates_per_s"] / here["candidates_per_s"]
    result = {"command": " ".join(["python", "experiments/bench_parallel.py", *sys.argv[1:]]),
              "cpus": os.cpu_count(), "in_process": here, "workers": pool,
              "speedup": speedup, "identical_evaluations": same,
              "ceiling": bound}
    print(json.dumps(result, indent=2))
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
