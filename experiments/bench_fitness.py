"""Benchmark: what one candidate metric costs, against the forward passes that measure it.

Prints (and writes as JSON with --out):
  forward_s    the forward passes alone over the fitness windows (dense model)
  candidate_s  median full candidate evaluation (score, mask, apply, evaluate, restore) over
               random metrics from the paper's space, every cache and racing off
  overhead     candidate_s / forward_s
  loop_candidate_s, loop_overhead: the same candidates fingerprinted first, as the GP loop
               does for novelty (the evaluation then prunes with the kept masks)
  naive_s      per candidate, the original pipeline: reload the model, re-run calibration,
               prune, evaluate the whole split; and speedup = naive_s / candidate_s
  search       over a fixed 5-generation search: fractions of candidates resolved by the
               canonical cache, by the mask fingerprint, stopped early by racing; evaluations
               per minute; and the same search with caches off / racing off, to show caching is
               exact and racing only removes what cannot enter the hall of fame.

Not a test: timings depend on the machine. Results go in experiments/README.md.
"""
from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=str(SHARED / "models" / "wiki-llama-5m"))
    p.add_argument("--data-dir", default=str(SHARED / "data" / "wikitext-2"))
    p.add_argument("--calib-split", default="valid")
    p.add_argument("--nsamples", type=int, default=32)
    p.add_argument("--seqlen", type=int, default=256)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--windows", type=int, default=128, help="fitness windows")
    p.add_argument("--sparsity", type=float, default=0.5)
    p.add_argument("--candidates", type=int, default=12, help="random metrics for candidate_s")
    p.add_argument("--naive", type=int, default=2, help="candidates through the naive pipeline "
                                                        "(0: none; a whole split is long on a big model)")
    p.add_argument("--cache-dir", default=None,
                   help="statistics (and GGUF conversion) cache; default none: computed here")
    p.add_argument("--generations", type=int, default=5)
    p.add_argument("--population", type=int, default=20)
    p.add_argument("--race-factor", type=float, default=1.5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-search", action="store_true")
    p.add_argument("--search-only", action="store_true", help="only the fixed-search figures")
    p.add_argument("--update", default="none", choices=["none", "obs", "sweep"],
                   help="obs: every candidate's kept weights rebuilt under its masks (the "
                        "recipe's update; a Hessian per layer, the blocks walked)")
    p.add_argument("--out", default=None, help="write the figures as JSON here")
    p.add_argument("--keep", default=None,
                   help="keep the fixed searches' run directories under this folder")
    return p.parse_args()


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def random_metrics(n: int, seed: int):
    """n random valid-looking trees from the paper's space (OOS-simplified, distinct formulas)."""
    from deap import gp

    from pruner_zero.metric.io import format_formula
    from pruner_zero.metric.simplify import simplify
    from pruner_zero.metric.space import load_space

    space = load_space("paper")
    pset = space.pset()
    rng_state = random.getstate()
    random.seed(seed)
    out, seen = [], set()
    try:
        while len(out) < n:
            tree = gp.PrimitiveTree(gp.genHalfAndHalf(pset, space.init_min_depth, space.init_max_depth))
            tree = simplify(tree, pset=pset)
            if format_formula(tree) not in seen:
                seen.add(format_formula(tree))
                out.append(tree)
    finally:
        random.setstate(rng_state)
    return out


def main() -> None:
    a = parse_args()
    from pruner_zero.masks import Structure
    from pruner_zero.metric.io import resolve_metric
    from pruner_zero.search.fitness import FitnessEvaluator
    from pruner_zero.workbench import Protocol, Workbench

    protocol = Protocol(model=a.model, data_dir=a.data_dir, calib_split=a.calib_split,
                        nsamples=a.nsamples, seqlen=a.seqlen, device=a.device, dtype=a.dtype,
                        batch_size=a.batch_size, seed=a.seed)
    structure = Structure(a.sparsity)
    figures: dict = {"machine": f"{platform.node()} {platform.processor() or platform.machine()} "
                                f"{torch.get_num_threads()} threads, "
                                f"{torch.cuda.get_device_name() if a.device.startswith('cuda') else 'CPU'}",
                     "windows": a.windows, "seqlen": a.seqlen, "sparsity": a.sparsity}

    t0 = time.perf_counter()
    cache = None if a.cache_dir is None else Path(a.cache_dir)
    bench = Workbench(protocol, cache_dir=cache, progress=False, log=lambda m: None)
    _ = bench.stats
    figures["setup_s"] = round(time.perf_counter() - t0, 3)

    if a.search_only:
        figures["search"] = search_figures(a, bench)
        print(json.dumps(figures, indent=2))
        if a.out:
            Path(a.out).write_text(json.dumps(figures, indent=2) + "\n")
        return
    windows = bench.eval_windows(a.windows)
    times = []
    for _ in range(3):
        sync(a.device)
        t = time.perf_counter()
        bench.perplexity(windows, progress=False)
        sync(a.device)
        times.append(time.perf_counter() - t)
    figures["forward_s"] = statistics.median(times)

    figures["update"] = a.update
    engine = None
    if a.update != "none":
        from pruner_zero.engine import Engine

        engine = Engine(bench.model, bench.linears, bench.stats, structure, calib=bench.calib,
                        keep="copy", update=a.update)
    ev = FitnessEvaluator(bench, structure, fitness_windows=a.windows, canonical_cache=False,
                          fingerprint_cache=False, engine=engine)
    cand, invalid = [], 0
    for tree in random_metrics(a.candidates, a.seed):
        sync(a.device)
        r = ev.evaluate(tree)
        sync(a.device)
        if r.status == "ok":
            cand.append(r.seconds)
        else:
            invalid += 1
    def loop_seconds(engine) -> list[float]:
        """As the GP loop meets a candidate: fingerprinted first (novelty), then evaluated."""
        looped = FitnessEvaluator(bench, structure, fitness_windows=a.windows,
                                  canonical_cache=False, fingerprint_cache=False,
                                  windows=ev.windows, engine=engine)
        out = []
        for tree in random_metrics(a.candidates, a.seed):
            sync(a.device)
            t = time.perf_counter()
            looped.fingerprint(tree)
            r = looped.evaluate(tree)
            sync(a.device)
            if r.status == "ok":
                out.append(time.perf_counter() - t)
        return out

    in_loop = loop_seconds(engine)
    if a.update == "sweep":  # the same, walking again to measure (before the walked weights
        from pruner_zero.search import memo  # were kept from the fingerprint's walk)

        kept, memo.WALKED_MEMO_BYTES = memo.WALKED_MEMO_BYTES, 0
        figures["loop_walked_twice_s"] = statistics.median(loop_seconds(engine))
        memo.WALKED_MEMO_BYTES = kept
    figures["candidate_s"] = statistics.median(cand)
    figures["loop_candidate_s"] = statistics.median(in_loop)
    figures["candidates_timed"] = len(cand)
    figures["candidates_invalid"] = invalid
    figures["overhead"] = figures["candidate_s"] / figures["forward_s"]
    figures["loop_overhead"] = figures["loop_candidate_s"] / figures["forward_s"]
    print(f"forward_s {figures['forward_s']:.3f}  candidate_s {figures['candidate_s']:.3f}  "
          f"overhead {figures['overhead']:.3f}  fingerprinted first (as in the GP loop): "
          f"{figures['loop_candidate_s']:.3f} s, {figures['loop_overhead']:.3f}", flush=True)
    # where a candidate's time goes besides the forward passes: score + mask + prune every
    # layer (and fingerprint it), then restore the dense weights
    from pruner_zero.engine import Engine, undo_kind

    engine = ev.engine if a.update != "none" else \
        Engine(bench.model, bench.linears, bench.stats, structure, keep=undo_kind(bench.linears))
    prune_s, restore_s = [], []
    for tree in random_metrics(a.candidates, a.seed):
        try:
            t = time.perf_counter()
            engine.prune(tree)
            sync(a.device)
            prune_s.append(time.perf_counter() - t)
        except Exception:  # noqa: BLE001 -- an invalid metric: nothing to time
            continue
        t = time.perf_counter()
        engine.restore()
        sync(a.device)
        restore_s.append(time.perf_counter() - t)
    figures["prune_s"] = statistics.median(prune_s)
    figures["restore_s"] = statistics.median(restore_s)
    print(f"prune_s {figures['prune_s']:.3f}  restore_s {figures['restore_s']:.3f}", flush=True)

    naive = []
    for spec in ["wanda", "pruner-zero", "magnitude", "gblm"][: a.naive]:
        t = time.perf_counter()
        naive_bench = Workbench(protocol, cache_dir=None, progress=False, log=lambda m: None)
        from pruner_zero.engine import Engine

        engine = Engine(naive_bench.model, naive_bench.linears, naive_bench.stats, structure)
        engine.prune(resolve_metric(spec)[1])
        naive_bench.perplexity(progress=False)
        sync(a.device)
        naive.append(time.perf_counter() - t)
        del naive_bench, engine
    if naive:
        figures["naive_s"] = statistics.median(naive)
        figures["speedup"] = figures["naive_s"] / figures["candidate_s"]
        print(f"naive_s {figures['naive_s']:.3f}  speedup {figures['speedup']:.1f}x", flush=True)

    if not a.skip_search:
        figures["search"] = search_figures(a, bench)

    print(json.dumps(figures, indent=2))
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(figures, indent=2) + "\n")


def search_figures(a: argparse.Namespace, bench) -> dict:
    """The fixed search three times: everything on, caches off, racing off."""
    import pruner_zero

    variants = {
        "all_on": dict(race_factor=a.race_factor),
        "caches_off": dict(race_factor=a.race_factor, canonical_cache=False, fingerprint_cache=False),
        "racing_off": dict(race_factor=None),
    }
    out: dict = {}
    for name, extra in variants.items():
        with tempfile.TemporaryDirectory() as tmp:
            if a.keep:
                tmp = str(Path(a.keep) / name)
                Path(tmp).mkdir(parents=True, exist_ok=False)
            t = time.perf_counter()
            hof = pruner_zero.search(bench, Path(tmp) / "run", generations=a.generations,
                                     population=a.population, seed=a.seed,
                                     sparsity=a.sparsity, fitness_windows=a.windows,
                                     final_top=0, progress=False, **extra)
            seconds = time.perf_counter() - t
            rows = [json.loads(l) for l in (Path(tmp) / "run" / "evaluations.jsonl").open()]
        n = len(rows)
        stats = {
            "candidates": n,
            "seconds": round(seconds, 1),
            "evals_per_min": round(n / seconds * 60, 1),
            "canonical_frac": sum(r["cached"] == "canonical" for r in rows) / n,
            "fingerprint_frac": sum(r["cached"] == "fingerprint" for r in rows) / n,
            "stopped_early_frac": sum(r["status"] == "stopped_early" and r["cached"] is None
                                      for r in rows) / n,
            "full_evaluations": sum(r["cached"] is None and r["status"] == "ok" for r in rows),
            "hall_of_fame": [[h.formula, h.fitness] for h in hof],
        }
        stats["resolved_without_full_frac"] = 1 - stats["full_evaluations"] / n
        out[name] = stats
        print(f"search[{name}] {n} candidates in {seconds:.0f}s ({stats['evals_per_min']}/min); "
              f"canonical {stats['canonical_frac']:.2f} fingerprint {stats['fingerprint_frac']:.2f} "
              f"stopped {stats['stopped_early_frac']:.2f}; best {hof[0].formula} {hof[0].fitness:.3f}",
              flush=True)
    on, off = out["all_on"]["hall_of_fame"], out["caches_off"]["hall_of_fame"]
    out["caching_exact"] = on == off
    out["racing_best_as_good"] = (out["all_on"]["hall_of_fame"][0][1]
                                  <= out["racing_off"]["hall_of_fame"][0][1] + 1e-9)
    return out


if __name__ == "__main__":
    main()
