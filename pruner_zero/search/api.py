"""``search``: discover a pruning metric by GP and write the run directory (the CLI is a shell over it).

Heavy modules (torch, deap, sympy) are imported inside the functions so that
``import pruner_zero`` stays cheap for the other commands.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from pruner_zero.errors import ConfigError, MetricError
from pruner_zero.search.rundir import HallOfFameEntry, RunDir, best_entry

DEFAULT_SPACE = "paper"
DEFAULT_FITNESS_WINDOWS = 128
DEFAULT_FINAL_TOP = 5


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _seed_trees(names: Sequence[str], space: Any) -> list[Any]:
    """Built-in or user metrics that start in the initial population, parsed over the space's ops."""
    from pruner_zero.metric.io import format_formula, parse_formula, resolve_metric

    trees = []
    for name in names:
        _, tree = resolve_metric(name)
        try:
            trees.append(parse_formula(format_formula(tree), space.pset()))
        except MetricError as exc:
            raise ConfigError(f"seed metric '{name}' ({format_formula(tree)}) uses an op or terminal "
                              f"outside the search space '{space.name}': {exc}") from exc
    return trees


def _split_names(spec: str | Sequence[str] | None) -> list[str]:
    if spec is None:
        return []
    if isinstance(spec, str):  # split at commas outside parentheses: formulas contain commas
        parts, depth, start = [], 0, 0
        for i, ch in enumerate(spec + ","):
            depth += {"(": 1, ")": -1}.get(ch, 0)
            if ch == "," and depth <= 0:
                parts.append(spec[start:i].strip())
                start = i + 1
        return [p for p in parts if p]
    return [str(s).strip() for s in spec if str(s).strip()]


def _space_from_config(config: dict[str, Any]) -> Any:
    from pruner_zero.metric.space import SearchSpace

    return SearchSpace(**config["space"]["definition"])


def _fitness_windows(value: int | None) -> int | None:
    if value is None or value == 0:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"--fitness-windows must be a positive integer (0 = all windows), got {value!r}.")
    return value


def _fitness_note(fit: dict[str, Any]) -> str:
    """What the fitness column measures, for best_metric.txt."""
    n = fit["fitness_windows"]
    if n is None:
        return "perplexity on all evaluation windows"
    how = "spread evenly over the split" if fit.get("windows_spread") else "the first ones"
    return f"perplexity on {n} evaluation windows, {how}"


def _entries(hof: list[dict[str, Any]], ppls: list[float | None], pset: Any) -> list[HallOfFameEntry]:
    """Hall-of-fame entries from checkpoint records (formula, fitness, key) and full-split ppls."""
    from pruner_zero.metric.io import parse_formula

    out = []
    for rank, rec in enumerate(hof, start=1):
        tree = parse_formula(rec["formula"], pset)
        ppl = ppls[rank - 1] if rank - 1 < len(ppls) else None
        out.append(HallOfFameEntry(rank=rank, formula=rec["formula"], fitness=float(rec["fitness"]),
                                   ppl=ppl, size=len(tree), height=tree.height, key=rec.get("key"),
                                   tree=tree))
    return out


def search(model: Any = None, out: str | Path | None = None, *, generations: int = 10,
           population: int = 20, seed: int = 0, space: str | Path = DEFAULT_SPACE,
           sparsity: float | None = None, structure: str = "unstructured", compare: str = "row",
           tournament: int = 3, cx_prob: float = 0.5, mut_prob: float = 0.3, elite: int = 2,
           max_height: int | None = None, hof_size: int = 10, polish: int = 3,
           fitness_windows: int | None = DEFAULT_FITNESS_WINDOWS, race_factor: float | None = None,
           race_chunk: int = 16, canonical_cache: bool = True, fingerprint_cache: bool = True,
           seed_metrics: str | Sequence[str] | None = None, final_top: int = DEFAULT_FINAL_TOP,
           resume: bool = False, calib_seed: int | None = None, cache_dir: str | Path | None = None,
           progress: bool = True, log: Callable[[str], None] = _stderr,
           **protocol: Any) -> list[HallOfFameEntry]:
    """Search a pruning metric and write ``out`` (see README); returns the hall of fame, best
    fitness first (``rundir.best_entry`` picks the recommended metric: best full-split ppl).

    ``model`` is a hub id, a local directory, a loaded ``Workbench`` or a function
    returning one (called only after the cheap checks passed); the other
    protocol options (``data_dir``, ``nsamples``, ``seqlen``, ...) are those of
    ``prune``.  ``seed`` seeds the GP and, unless ``calib_seed`` is given, the
    calibration sampling.  ``resume=True`` continues the run in ``out`` from its
    config.json and checkpoint.json (all other arguments are then ignored; a
    ``Workbench`` may still be passed as ``model`` to skip loading).
    """
    from pruner_zero.masks import parse_structure
    from pruner_zero.metric.space import load_space
    from pruner_zero.search.loop import GPSettings
    from pruner_zero.workbench import Protocol, Workbench

    if out is None:
        raise ConfigError("search needs an output directory (--out).")
    run = RunDir(out)
    if resume:
        config = run.read_config()
        space_obj = _space_from_config(config)
        settings = GPSettings(**{"polish": 0, **config["gp"]})  # runs from before --polish: none
        bench = model if isinstance(model, Workbench) else Workbench(
            Protocol(**config["protocol"]), cache_dir=None if config["cache_dir"] is None
            else Path(config["cache_dir"]), progress=progress, log=log)
    else:
        run.check_new()
        parse_structure(structure, sparsity, compare)
        space_obj = load_space(space)
        settings = GPSettings(population=population, generations=generations, tournament=tournament,
                              cx_prob=cx_prob, mut_prob=mut_prob, elite=elite, hof_size=hof_size,
                              max_height=max_height, seed=seed, polish=polish).checked(space_obj)
        names = _split_names(seed_metrics)
        _seed_trees(names, space_obj)
        if len(names) > population:
            raise ConfigError(f"{len(names)} seed metrics do not fit into a population of {population}.")
        if isinstance(final_top, bool) or not isinstance(final_top, int) or final_top < 0:
            raise ConfigError(f"--final-top must be a non-negative integer, got {final_top!r}.")
        if race_factor is not None and race_factor < 1.0:
            raise ConfigError(f"--race-factor must be at least 1 (or left off), got {race_factor}.")
        if isinstance(race_chunk, bool) or not isinstance(race_chunk, int) or race_chunk < 1:
            raise ConfigError(f"--race-chunk must be a positive integer, got {race_chunk!r}.")
        windows = _fitness_windows(fitness_windows)
        if model is None:
            raise ConfigError("search needs a model (--model) unless it resumes a run (--resume).")
        if isinstance(model, Workbench):
            bench = model
        elif callable(model):
            bench = model()
        else:
            proto = Protocol(model=str(model), seed=seed if calib_seed is None else calib_seed, **protocol)
            bench = Workbench(proto, cache_dir=None if cache_dir is None else Path(cache_dir),
                              progress=progress, log=log)
        from dataclasses import asdict

        from pruner_zero.masks import check_fits

        check_fits((m.in_features for m in bench.linears.values()),
                   parse_structure(structure, sparsity, compare))
        _ = bench.stats  # missing data or a failing calibration stops here, before the run dir exists
        config = {
            "command": "search", "version": 1, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "protocol": bench.protocol.as_dict(),
            "cache_dir": None if bench.cache_dir is None else str(bench.cache_dir),
            "space": {"spec": str(space), "definition": {
                k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(space_obj).items()
                if not k.startswith("_")}},
            "gp": settings.as_dict(),
            "fitness": {"sparsity": sparsity, "structure": structure, "compare": compare,
                        "fitness_windows": windows, "windows_spread": True,
                        "race_factor": race_factor, "race_chunk": race_chunk,
                        "canonical_cache": canonical_cache, "fingerprint_cache": fingerprint_cache},
            "seed_metrics": names,
            "final_top": final_top,
        }
        run.create(config)
    return _run(run, config, space_obj, settings, bench, progress, log)


def _run(run: RunDir, config: dict[str, Any], space: Any, settings: Any, bench: Any, progress: bool,
         log: Callable[[str], None]) -> list[HallOfFameEntry]:
    """Run or resume the GP, measure the best metrics on the whole split, write the outputs."""
    from pruner_zero.masks import parse_structure
    from pruner_zero.search.fitness import FitnessEvaluator
    from pruner_zero.search.loop import CANDIDATE_ERRORS, run_gp

    fit = config["fitness"]
    state = run.load_checkpoint()
    if state is not None and state.get("finished"):
        log(f"{run.path}: the search already finished; rewriting its final outputs")
        entries = _entries(state["hall_of_fame"], state["final"]["ppl"], space.pset())
        run.write_outputs(entries, _fitness_note(fit))
        return entries
    shape = parse_structure(fit["structure"], fit["sparsity"], fit["compare"])
    evaluator = FitnessEvaluator(bench, shape, fit["fitness_windows"], fit["race_factor"], fit["race_chunk"],
                                 fit["canonical_cache"], fit["fingerprint_cache"],
                                 spread_windows=fit.get("windows_spread", False))  # older runs: first windows
    seeds = _seed_trees(config["seed_metrics"], space)
    try:
        result = run_gp(space, evaluator, settings, run, seeds, progress, log)
    finally:
        run.close()
    state = run.load_checkpoint()
    assert state is not None
    ppls: list[float | None] = []
    for ind in result.hall_of_fame[:config["final_top"]]:
        try:
            ppls.append(float(evaluator.full_split_ppl(ind)))
        except CANDIDATE_ERRORS as exc:
            log(f"warning: full-split perplexity of {ind} failed: {exc}")
            ppls.append(None)
    state.update(finished=True, final={"ppl": ppls})
    run.save_checkpoint(state)
    entries = _entries(state["hall_of_fame"], ppls, space.pset())
    run.write_outputs(entries, _fitness_note(fit))
    if entries:
        best = best_entry(entries)
        log(f"best metric: {best.formula}  (rank {best.rank})  fitness {best.fitness:.4f}"
            + ("" if best.ppl is None else f"  full-split ppl {best.ppl:.4f}"))
    else:
        log("warning: no candidate metric was valid; the hall of fame is empty")
    return entries
