"""``search``: discover a pruning metric by GP and write the run directory (the CLI is a shell over it).

Heavy modules (torch, deap, sympy) are imported inside the functions so that
``import pruner_zero`` stays cheap for the other commands.
"""
from __future__ import annotations

import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from pruner_zero.errors import ConfigError, MetricError
from pruner_zero.search.rundir import HallOfFameEntry, RunDir, best_entry
from pruner_zero.files import user_path

from pruner_zero.search.config import (  # noqa: F401  (re-exported: the names callers know)
    CONFIG_VERSION, DEFAULT_BASELINES, DEFAULT_CONFIRM_SEEDS, DEFAULT_FINAL_TOP,
    DEFAULT_FITNESS_WINDOWS, DEFAULT_REFERENCE, DEFAULT_SPACE, FREE_ON_RESUME, MAX_SEEDS,
    SearchConfig, _metric_tree, _seed_trees)
from pruner_zero.data import windows_note


def _fitness_note(config: dict[str, Any]) -> str:
    """What the fitness column measures, for best_metric.txt."""
    n = config["fitness"]["fitness_windows"]
    splits = sorted({t["fitness_split"] for t in config["tasks"]})
    windows = "all windows of" if n is None else f"{n} windows spread evenly over"
    many = "weighted geometric mean over tasks of " if len(config["tasks"]) > 1 else ""
    return (f"{many}ppl / ppl({config['reference']}), on {windows} the selection split "
            f"({', '.join(splits)})")



def build_tasks(model: Any = None, sparsity: Any = None, tasks: Any = None, *,
                structure: str = "unstructured", **protocol: Any) -> list[Any]:
    """The tasks of a search from ``--tasks`` (a YAML path or a list of mappings/Tasks) or from
    the cross product of models x sparsities; ``protocol`` gives every key a task omits."""
    from pruner_zero.tasks import TASK_KEYS, Task, cross_tasks, load_tasks_file, name_tasks, \
        parse_sparsities, _typed

    common = {k: v for k, v in protocol.items() if k in TASK_KEYS and v is not None}
    common["structure"] = structure
    models = [model] if isinstance(model, str) else list(model or [])
    if tasks is not None:
        defaults = dict(common)
        if len(models) > 1:
            raise ConfigError("with --tasks, --model gives at most one default model; list the "
                              "models in the tasks file")
        if len(models) == 1:
            defaults["model"] = models[0]
        sparsities = parse_sparsities(sparsity)
        if len(sparsities) > 1:
            raise ConfigError("with --tasks, --sparsity gives one default value; list each "
                              "task's sparsity in the tasks file")
        if len(sparsities) == 1 and sparsities[0] is not None:
            defaults["sparsity"] = sparsities[0]
        if isinstance(tasks, (str, Path)):
            out = load_tasks_file(tasks, defaults)
        else:
            out = [t if isinstance(t, Task) else _typed({**defaults, **t}, "task") for t in tasks]
    else:
        out = cross_tasks(models, parse_sparsities(sparsity), **common)
    return name_tasks(out)


def search(model: Any = None, out: str | Path | None = None, **options: Any) -> list[HallOfFameEntry]:
    """Search a pruning metric and write ``out`` (see README); returns the hall of fame, best
    fitness first (``rundir.best_entry`` picks the recommended metric).

    ``search(config)`` takes a ``SearchConfig``; ``search(model, out, **options)`` builds one
    from its fields. ``model`` is a hub id, a local directory, a list of them (one task per
    model and sparsity), or a loaded ``Workbench``; ``tasks`` a tasks.yaml path or a list of task
    mappings instead. The other protocol options (``data_dir``, ``calib_split``,
    ``fitness_split``, ``report_split``, ``nsamples``, ``seqlen``, ``device``, ...) are the
    defaults of every task. ``seed`` seeds the GP and, unless ``calib_seed`` is given, the
    calibration sampling. ``resume=True`` continues the run in ``out`` from its config.json and
    checkpoint.json; any other option given a value other than its default is refused, as on
    the command line (``SearchConfig.check_resume``).
    """
    if isinstance(model, SearchConfig):
        if out is not None or options:
            raise ConfigError("search(config) takes the options in the SearchConfig alone")
        config = model
    else:
        config = SearchConfig.from_options(model=model, out=out, **options)
    return run_search(config)


def run_search(config: SearchConfig, baseline: SearchConfig | None = None,
               how: str = "resume=True", names: Callable[[list[str]], list[str]] = list
               ) -> list[HallOfFameEntry]:
    """``search`` of one config; a resume is checked against ``baseline`` (the front end's
    value of every option left out) and names what it refuses with ``names``."""
    from pruner_zero.measure import TaskBenches
    from pruner_zero.tasks import Task
    from pruner_zero.workbench import Workbench

    if config.out is None:
        raise ConfigError("search needs an output directory (--out).")
    if not isinstance(config.out, (str, Path)):
        raise ConfigError(f"out must be a directory path, got {config.out!r}")
    preloaded = config.model if isinstance(config.model, Workbench) else None
    if config.resume:
        config.check_resume(baseline, how, names)
        from pruner_zero.search.workers import require_ray

        require_ray(config.workers, config.ray_address)
    else:
        config = config.checked()
    run = RunDir(config.out)
    with run.lock("--resume" if config.resume else "--out"):  # one process per run directory; a killed holder's lock is taken over
        if config.resume:
            config = SearchConfig.from_dict(  # the run's options, and how to run it now
                run.read_config(), run.path / "config.json",
                **{name: getattr(config, name) for name in FREE_ON_RESUME})
        else:
            run.check_new()
            config = _resolved_tasks(config, preloaded)
        space_obj = config.search_space()
        settings = config.gp_settings(space_obj)
        benches = TaskBenches(config.runtime(),
                              None if config.cache_dir is None else Path(config.cache_dir),
                              config.progress, config.log, preloaded)
        benches.needed = _statistics_needed(config, space_obj)
        if not config.resume:
            # models, widths, data, statistics: before the run dir exists
            benches.prepare(list(config.task_list), config.compare, "fitness_split",
                            with_stats=True, allow_partial=config.allow_partial)
            resolved = []
            for t in config.task_list:  # resolved paths, so a resume finds them
                p = benches.bench(t).protocol
                resolved.append(Task.from_dict({**t.as_dict(), "model": p.model,
                                                "data_dir": p.data_dir, "seqlen": p.seqlen}))
            config = replace(config, task_list=tuple(resolved),
                             created=time.strftime("%Y-%m-%dT%H:%M:%S"))
            run.create(config.to_dict())
        return _run(run, config.to_dict(), space_obj, settings, benches, list(config.task_list),
                    config.progress, config.log, _pool_factory(config))


def _pool_factory(config: SearchConfig) -> Callable[[dict[str, Any], Any], Any] | None:
    """How to start the run's Ray workers, or None to measure in this process."""
    if not config.workers and config.ray_address is None:
        return None
    from pruner_zero.search.workers import WorkerPool
    from pruner_zero.workbench import Workbench

    if isinstance(config.model, Workbench):
        raise ConfigError("workers load their own model: give a model id or directory, not a "
                          "loaded Workbench, with workers")

    def start(stored: dict[str, Any], needed: Any) -> Any:
        if stored.get("cache_dir") is None:
            config.log("warning: no statistics cache (--cache-dir): every worker computes the "
                       "statistics again")
        return WorkerPool(stored, needed, config.workers or 1, config.ray_address,
                          config.worker_cpus, config.worker_gpus, progress=config.progress,
                          log=config.log)
    return start


def _resolved_tasks(config: SearchConfig, preloaded: Any) -> SearchConfig:
    """A new run's tasks (checked before any model loads), runtime and cache directory."""
    from dataclasses import fields

    from pruner_zero.measure import Runtime
    from pruner_zero.tasks import check_tasks

    protocol = config.protocol()
    model = config.model
    if preloaded is not None:
        p = preloaded.protocol
        protocol = {**{k: getattr(p, k) for k in ("data_dir", "calib_split", "nsamples",
                                                   "seqlen", "seed", "calib_data",
                                                   "text_join")}, **protocol}
        if config.calib_seed is not None:
            protocol["seed"] = config.calib_seed
        config = replace(config, **{f.name: getattr(p, f.name) for f in fields(Runtime)})
        model = p.model
    else:
        protocol["seed"] = config.seed if config.calib_seed is None else config.calib_seed
    if model is None and config.tasks is None:
        raise ConfigError("search needs a model (--model) or tasks (--tasks) unless it resumes "
                          "a run (--resume).")
    task_list = build_tasks(model, config.sparsity, config.tasks, structure=config.structure,
                            **protocol)
    check_tasks(task_list, config.compare)
    task_list = [t.located() for t in task_list]
    cache = None if config.cache_dir is None else str(user_path(config.cache_dir).resolve())
    return replace(config, task_list=tuple(task_list), cache_dir=cache)


def _statistics_needed(config: SearchConfig, space: Any) -> set[str]:
    """What the space's terminals and the run's named metrics (reference, baselines, seeds) read."""
    from pruner_zero.metric.registry import statistics_read
    from pruner_zero.metric.tree import leaves

    names = [config.reference, *config.baselines, *config.seed_metrics]
    return statistics_read(set(space.terminals).union(*(leaves(_metric_tree(n)) for n in names)))


def task_evaluators(benches: Any, tasks: list[Any], config: dict[str, Any]) -> list[Any]:
    """One fitness evaluator per task (its fitness windows, structure, engine): the driver's
    and each worker's, built alike from config.json."""
    from pruner_zero.search.fitness import FitnessEvaluator

    fit = config["fitness"]
    evaluators = []
    for t in tasks:
        bench = benches.bench(t)
        windows = bench.split_windows(t.fitness_split, fit["fitness_windows"], spread=True)
        evaluators.append(FitnessEvaluator(
            bench, t.shape(config["compare"]), fit["fitness_windows"], fit["race_factor"],
            fit["race_chunk"], fit["canonical_cache"], fit["fingerprint_cache"], windows=windows,
            engine=benches.engine(t, t.seed, config["compare"])))
    return evaluators


def _evaluator(benches: Any, tasks: list[Any], config: dict[str, Any], log: Callable[[str], None],
               start_rows: list[dict[str, Any]] | None = None):
    """The multi-task evaluator, with the reference measured on every task's fitness windows;
    also returns the baselines' fitness-window rows (measured here, at the start). A resumed run
    passes the rows its checkpoint kept: fitness values stay on the scale they were measured on."""
    from pruner_zero.search.fitness import MultiTaskEvaluator

    evaluators = task_evaluators(benches, tasks, config)
    rows, refs = [], []
    names = list(dict.fromkeys([config["reference"], *config["baselines"]]))
    for t, ev in zip(tasks, evaluators):
        for name in names:
            tree = _metric_tree(name)
            ppl = ev.measure_ppl(tree)
            rows.append({"phase": "fitness", "task": t.name, "metric": name, "formula": str(tree),
                         "seed": t.seed,
                         "split": t.fitness_split, "windows": int(ev.windows.shape[0]), "ppl": ppl})
            if name == config["reference"]:
                refs.append(ppl)
        log(f"task {t.name}: reference {config['reference']} ppl {refs[-1]:.4f} on "
            f"{ev.windows.shape[0]} {t.fitness_split} windows")
    bad = [t.name for t, r in zip(tasks, refs) if not (r > 0 and math.isfinite(r))]
    if bad:
        raise ConfigError(f"the reference {config['reference']} has no finite perplexity on "
                          f"{', '.join(bad)}; choose another --reference")
    evaluator = MultiTaskEvaluator([t.name for t in tasks], evaluators, refs,
                                   [t.weight for t in tasks], start_rows=rows)
    return evaluator, rows


def _run(run: RunDir, config: dict[str, Any], space: Any, settings: Any, benches: Any,
         tasks: list[Any], progress: bool, log: Callable[[str], None],
         pool: Callable[[dict[str, Any], Any], Any] | None = None) -> list[HallOfFameEntry]:
    """Run or resume the GP, confirm the best over calibration seeds, report, write outputs.
    ``pool(config, needed)`` starts the workers that measure the GP's candidates (None: here)."""
    from pruner_zero.search.loop import run_gp

    state = run.load_checkpoint()
    if state is not None:  # every formula it holds must parse before any work is redone
        from pruner_zero.metric.io import parse_formula

        for d in state["population"] + state["hall_of_fame"]:
            try:
                parse_formula(d["formula"], space.pset())
            except MetricError as exc:
                raise ConfigError(f"{run.path / 'checkpoint.json'} is damaged ({exc}); restore "
                                  "the file, or start a new run with --out") from exc
    if state is not None and state.get("finished"):
        log(f"{run.path}: the search already finished; rewriting its final outputs")
        try:
            entries = _entries(state["hall_of_fame"], state["final"], space.pset())
        except (KeyError, TypeError, ValueError, MetricError) as exc:
            raise ConfigError(f"{run.path / 'checkpoint.json'} is damaged ({type(exc).__name__}: "
                              f"{exc}); restore the file, or start a new run with --out") from exc
        run.write_outputs(entries, _fitness_note(config), state["final"], config)
        return entries
    kept = (state or {}).get("evaluator", {}).get("start_rows")
    evaluator, start_rows = _evaluator(benches, tasks, config, log, kept)
    run.write_baselines(start_rows)
    seeds = _seed_trees(config["seed_metrics"], space)
    try:
        if pool is not None:
            evaluator.pool = pool(config, benches.needed)
        result = run_gp(space, evaluator, settings, run, seeds, progress, log)
    finally:
        run.close()
        if evaluator.pool is not None:
            again = sum(ev.remeasured for ev in evaluator.evaluators)
            if again:
                log(f"workers: {again} measurement(s) pruned masks that differ from this "
                    "process's (scores tied up to rounding); measured again here")
            evaluator.pool.close()
            evaluator.pool = None
    state = run.load_checkpoint()
    assert state is not None
    final = _confirm(benches, tasks, config, result.hall_of_fame, progress, log)
    final["baselines_fitness"] = start_rows
    state.update(finished=True, final=final)
    run.save_checkpoint(state)
    entries = _entries(state["hall_of_fame"], final, space.pset())
    run.write_outputs(entries, _fitness_note(config), final, config)
    if entries:
        best = best_entry(entries)
        log(f"best metric: {best.formula}  (rank {best.rank})  fitness {best.fitness:.4f}"
            + ("" if best.score is None else
               f"  selection {best.score:.4f} ± {best.score_std:.4f} over "
               f"{config['confirm_seeds']} seeds"))
    else:
        log("warning: no candidate metric was valid; the hall of fame is empty")
    for line in report_lines(final, config):
        log(line)
    return entries


def _confirm(benches: Any, tasks: list[Any], config: dict[str, Any], hof: list[Any],
             progress: bool, log: Callable[[str], None]) -> dict[str, Any]:
    """Re-measure the top metrics and the baselines over ``confirm_seeds`` calibration seeds on
    the selection split (the best = lowest mean score), then the best and the baselines on the
    report split. Every number is a plain record, kept in the checkpoint."""
    from pruner_zero.measure import grid, mean_std, seeds_for
    from pruner_zero.metric.io import format_formula
    from pruner_zero.tasks import geometric_fitness

    k, compare = config["confirm_seeds"], config["compare"]
    top = [format_formula(ind) for ind in hof[:config["final_top"]]]
    names = list(dict.fromkeys([config["reference"], *config["baselines"]]))
    base = [(n, _metric_tree(n)) for n in names]
    cand = [(f"#{i}", ind) for i, ind in enumerate(hof[:config["final_top"]], start=1)]
    if cand:
        log(f"confirming the top {len(cand)} and {len(base)} baselines over {k} calibration "
            f"seeds on {windows_note('the selection split', config['confirm_windows'])}, "
            "none of them a fitness window")
    sel = grid(benches, cand + base, tasks, k, lambda t: t.fitness_split, compare, progress,
               config["confirm_windows"], config["fitness"]["fitness_windows"])
    ppl = {(r["metric"], r["task"], r["seed"]): r["ppl"] for r in sel}

    def scores(metric: str) -> list[float]:
        """Per seed: the weighted geometric mean over tasks of ppl / reference ppl."""
        out = []
        for j in range(k):
            ratios = [ppl[(metric, t.name, seeds_for(t, k)[j])] /
                      ppl[(config["reference"], t.name, seeds_for(t, k)[j])] for t in tasks]
            out.append(geometric_fitness(ratios, [t.weight for t in tasks]))
        return out

    selection = {}
    for label, key in [(label, formula) for (label, _), formula in zip(cand, top)] + \
            [(name, name) for name in names]:
        per_seed = scores(label)
        m, s = mean_std(per_seed)
        selection[key] = {"score": m, "std": s, "scores": per_seed}
    finite = [(selection[f]["score"], i) for i, f in enumerate(top) if math.isfinite(selection[f]["score"])]
    best_i = min(finite)[1] if finite else 0
    best = [("best", hof[best_i])] if hof else []
    log(f"reporting {'the best (' + format_formula(hof[best_i]) + ') and ' if hof else ''}"
        f"the baselines on {windows_note('the report split', config['eval_windows'])}")
    report_rows = grid(benches, best + base, tasks, k, lambda t: t.report_split, compare, progress,
                       config["eval_windows"])
    for r in report_rows:
        if r["metric"] == "best":
            r["metric"] = r["formula"] = format_formula(hof[best_i])
    for r in sel:
        if r["metric"].startswith("#"):
            r["formula"] = top[int(r["metric"][1:]) - 1]
            r["metric"] = r["formula"]
    for rows in (sel, report_rows):
        for r in rows:
            r.setdefault("formula", format_formula(_metric_tree(r["metric"])))
    return {"selection_rows": [{"phase": "selection", **r} for r in sel],
            "report_rows": [{"phase": "report", **r} for r in report_rows],
            "selection": selection, "best_rank": best_i + 1 if hof else None,
            "best": format_formula(hof[best_i]) if hof else None, "top": top,
            "baseline_names": names, "seeds": {t.name: seeds_for(t, k) for t in tasks}}


def report_lines(final: dict[str, Any], config: dict[str, Any]) -> list[str]:
    """The report split, per task: the best metric and each baseline, mean ± std over the
    calibration seeds, and whether the best wins, loses or ties (within the seed spread)."""
    from pruner_zero.measure import mean_std, verdict

    rows = final.get("report_rows", [])
    if not rows:
        return []
    by: dict[tuple[str, str], list[float]] = {}
    for r in rows:
        by.setdefault((r["task"], r["metric"]), []).append(r["ppl"])
    names, best = final["baseline_names"], final["best"]
    out = []
    for t in config["tasks"]:
        task, split = t["name"], t["report_split"]
        seeds = len(by[(task, names[0])])
        windows = next((r.get("windows") for r in rows if r["task"] == task), None)
        where = split if windows is None else f"{split}, {windows} windows"
        if seeds < 2 and not out:
            out.append("(one calibration seed: no spread is measured, so better/worse below "
                       "are not tested against calibration noise; use --confirm-seeds 3)")
        if best is None:
            out.append(f"report [{task}, {where}, {seeds} seeds] no valid metric was found")
        else:
            m, s = mean_std(by[(task, best)])
            out.append(f"report [{task}, {where}, {seeds} seeds] best {m:.4f} ± {s:.4f}")
        for n in names:
            bm, bs = mean_std(by[(task, n)])
            than = "" if best is None else f"  -> best is {verdict(by[(task, best)], by[(task, n)])}"
            out.append(f"    {n:<12} {bm:.4f} ± {bs:.4f}{than}")
    return out


def _entries(hof: list[dict[str, Any]], final: dict[str, Any] | None, pset: Any) -> list[HallOfFameEntry]:
    """Hall-of-fame entries from checkpoint records and the confirmation's selection scores."""
    from pruner_zero.metric.io import parse_formula

    selection = (final or {}).get("selection", {})
    top = (final or {}).get("top", [])
    out = []
    for rank, rec in enumerate(hof, start=1):
        tree = parse_formula(rec["formula"], pset)
        measured = rank <= len(top)
        conf = selection.get(rec["formula"]) if measured else None
        out.append(HallOfFameEntry(
            rank=rank, formula=rec["formula"], fitness=float(rec["fitness"]),
            score=conf["score"] if conf else None, score_std=conf["std"] if conf else None,
            size=len(tree), height=tree.height, key=rec.get("key"), tree=tree,
            chosen=final is not None and final.get("best_rank") == rank))
    return out

