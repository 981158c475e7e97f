"""``search``: discover a pruning metric by GP and write the run directory (the CLI is a shell
over it). Orchestration only: the settings (``config``), the GP (``loop``), the evaluators
(``evaluators``, ``fitness``, ``workers``), the run directory (``rundir``) and what the tail
measured (``results``) live in their own modules.

``import pruner_zero`` does not import this module (it brings torch) until ``search`` is called.
"""
from __future__ import annotations

import math
import time
from dataclasses import fields, replace
from pathlib import Path
from typing import Any, Callable

from pruner_zero.errors import ConfigError, MetricError
from pruner_zero.files import user_path
from pruner_zero.measure import TaskBenches, grid, seeds_for
from pruner_zero.measurement import Measurement
from pruner_zero.search.candidate import candidate_text, parse_candidate, recipe_of
from pruner_zero.metric.registry import statistics_read
from pruner_zero.metric.tree import leaves
from pruner_zero.runtime import Runtime
from pruner_zero.search.checkpoint import Checkpoint, checked_formulas
from pruner_zero.sparsegpt import SPARSEGPT
from pruner_zero.search.config import (SearchConfig, baseline_formula, baseline_metric,
                                       check_task_combine, metric_tree, seed_trees)
from pruner_zero.search.evaluators import run_evaluator
from pruner_zero.search.layout import CHECKPOINT, CONFIG
from pruner_zero.search.loop import run_gp
from pruner_zero.search.options import FREE_ON_RESUME
from pruner_zero.search.settings import flag_name
from pruner_zero.search.results import FinalResults, Selection, fitness_note, report_lines
from pruner_zero.search.rundir import HallOfFameEntry, RunDir, best_entry
from pruner_zero.search.stored import check_resume, config_dict, read_config
from pruner_zero.search.workers import WorkerPool, require_ray
from pruner_zero.spread import mean_std
from pruner_zero.tasks import Task, build_tasks, check_tasks, task_fitness
from pruner_zero.windows import windows_note
from pruner_zero.workbench import Workbench


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
    checkpoint.json; any other option given a value other than its default is refused
    (``stored.check_resume``; the command line refuses any flag given, even at its default).
    """
    if isinstance(model, SearchConfig):
        if out is not None or options:
            raise ConfigError("search(config) takes the options in the SearchConfig alone")
        config = model
    else:
        config = SearchConfig.from_options(model=model, out=out, **options)
    if config.resume:
        check_resume(config)
    return run_search(config)


def run_search(config: SearchConfig) -> list[HallOfFameEntry]:
    """``search`` of one config, its resume rule already applied by the front end (Python:
    ``check_resume``; the command line refuses the flags it was given)."""
    if config.out is None:
        raise ConfigError("search needs an output directory (--out).")
    if not isinstance(config.out, (str, Path)):
        raise ConfigError(f"out must be a directory path, got {config.out!r}")
    preloaded = config.model if isinstance(config.model, Workbench) else None
    if config.resume:
        require_ray(config.workers, config.ray_address)
    else:
        config = config.checked()
    run = RunDir(config.out)
    with run.lock("--resume" if config.resume else "--out"):  # one process per run directory; a killed holder's lock is taken over
        if config.resume:
            config = read_config(  # the run's options, and how to run it now
                run.read_config(), run.path / CONFIG,
                **{name: getattr(config, name) for name in FREE_ON_RESUME})
        else:
            run.check_new()
            config = _resolved_tasks(config, preloaded)
        space_obj = config.search_space()
        settings = config.gp_settings(space_obj)
        benches = TaskBenches(config.runtime(),
                              None if config.cache_dir is None else Path(config.cache_dir),
                              config.progress, config.log, preloaded,
                              needed=_statistics_needed(config, space_obj))
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
            run.create(config_dict(config))
        return _run(run, config, space_obj, settings, benches, list(config.task_list),
                    progress=config.progress, log=config.log, pool=_pool_factory(config))


def _pool_factory(config: SearchConfig) -> Callable[[SearchConfig, Any], Any] | None:
    """How to start the run's Ray workers, or None to measure in this process."""
    if not config.workers and config.ray_address is None:
        return None
    if isinstance(config.model, Workbench):
        raise ConfigError("workers load their own model: give a model id or directory, not a "
                          "loaded Workbench, with workers")

    def start(stored: SearchConfig, needed: Any) -> Any:
        if stored.cache_dir is None:
            config.log("warning: no statistics cache (--cache-dir): every worker computes the "
                       "statistics again")
        return WorkerPool(stored, needed, config.workers or 1, config.ray_address,
                          config.worker_cpus, config.worker_gpus, progress=config.progress,
                          log=config.log)
    return start


def _resolved_tasks(config: SearchConfig, preloaded: Any) -> SearchConfig:
    """A new run's tasks (checked before any model loads), runtime and cache directory."""
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
    check_task_combine(task_list, config.task_combine, flag_name)
    task_list = [t.located() for t in task_list]
    cache = None if config.cache_dir is None else str(user_path(config.cache_dir).resolve())
    return replace(config, task_list=tuple(task_list), cache_dir=cache)


def _statistics_needed(config: SearchConfig, space: Any) -> set[str]:
    """What the space's terminals and the run's named metrics (reference, baselines, seeds) read."""
    names = [n for n in (config.reference, *config.baselines, *config.seed_metrics)
             if n != SPARSEGPT]
    owl = {"X"} if config.recipe().allocation.kind == "owl" or any(
        t.startswith("owl") for t in config.recipe_space or ()) else set()
    return statistics_read(set(space.terminals).union(*(leaves(metric_tree(n)) for n in names))) \
        | owl


def _run(run: RunDir, config: SearchConfig, space: Any, settings: Any, benches: Any,
         tasks: list[Any], *, progress: bool, log: Callable[[str], None],
         pool: Callable[[SearchConfig, Any], Any] | None = None) -> list[HallOfFameEntry]:
    """Run or resume the GP, confirm the best over calibration seeds, report, write outputs.
    ``pool(config, needed)`` starts the workers that measure the GP's candidates (None: here)."""
    state = run.load_checkpoint()
    if state is not None:  # every formula it holds must parse before any work is redone
        checked_formulas(state, space.pset(), run.path)
    if state is not None and state.finished:
        return _rewritten(run, state, config, space, log)
    workers = None if pool is None else pool(config, benches.needed)
    evaluator = None
    try:
        evaluator, start_rows = run_evaluator(benches, tasks, config, log, workers)
        run.write_baselines(start_rows)
        result = run_gp(space, evaluator, settings, run, seed_trees(config.seed_metrics, space),
                        progress, log)
    finally:
        run.close()
        if workers is not None:
            again = 0 if evaluator is None else sum(ev.remeasured for ev in evaluator.evaluators)
            if again:
                log(f"workers: {again} measurement(s) pruned masks that differ from this "
                    "process's (scores tied up to rounding); measured again here")
            workers.close()
    state = run.load_checkpoint()
    assert state is not None
    final = replace(_confirm(benches, tasks, config, result.hall_of_fame, progress, log),
                    baselines_fitness=start_rows)
    run.save_checkpoint(state.finished_with(final))
    entries = _entries(state.hall_of_fame, final, space.pset())
    run.write_outputs(entries, fitness_note(config), final, config)
    if entries:
        best = best_entry(entries)
        log(f"best metric: {best.formula}  (rank {best.rank})  fitness {best.fitness:.4f}"
            + ("" if best.score is None else
               f"  selection {best.score:.4f} ± {best.score_std:.4f} over "
               f"{config.confirm_seeds} seeds"))
    else:
        log("warning: no candidate metric was valid; the hall of fame is empty")
    for line in report_lines(final, config):
        log(line)
    return entries


def _rewritten(run: RunDir, state: Checkpoint, config: SearchConfig, space: Any,
               log: Callable[[str], None]) -> list[HallOfFameEntry]:
    """A finished run resumed: its final outputs written again from its checkpoint."""
    log(f"{run.path}: the search already finished; rewriting its final outputs")
    try:
        final = state.final
        entries = _entries(state.hall_of_fame, final, space.pset())
    except (KeyError, TypeError, ValueError, MetricError) as exc:
        raise ConfigError(f"{run.path / CHECKPOINT} is damaged ({type(exc).__name__}: "
                          f"{exc}); restore the file, or start a new run with --out") from exc
    run.write_outputs(entries, fitness_note(config), final, config)
    return entries


def _confirm(benches: Any, tasks: list[Any], config: SearchConfig, hof: list[Any],
             progress: bool, log: Callable[[str], None]) -> FinalResults:
    """Re-measure the top metrics and the baselines over ``confirm_seeds`` calibration seeds on
    the selection split (the best = lowest mean score), then the best and the baselines on the
    report split. Every number is a plain record, kept in the checkpoint."""
    tail, compare = config.confirm_settings(), config.compare
    k = tail.confirm_seeds
    top = [candidate_text(ind) for ind in hof[:tail.final_top]]
    names = list(dict.fromkeys([config.reference, *config.baselines]))
    base = [(n, baseline_metric(n)) for n in names]
    recipe = config.recipe()
    cand = [(f"#{i}", ind, recipe_of(ind)) for i, ind in enumerate(hof[:tail.final_top], start=1)]
    if cand:
        log(f"confirming the top {len(cand)} and {len(base)} baselines over {k} calibration "
            f"seeds on {windows_note('the selection split', tail.confirm_windows)}, "
            "none of them a fitness window")
    sel = grid(benches, cand + base, tasks, k, lambda t: t.fitness_split, compare=compare,
               progress=progress, budget=tail.confirm_windows, skip=config.fitness_windows,
               recipe=recipe)
    ppl = {(r.metric, r.task, r.seed): r.ppl for r in sel}

    def scores(metric: str) -> list[float]:
        """Per seed: the tasks' ppl / reference ppl combined as the fitness combines them."""
        out = []
        for j in range(k):
            ratios = [ppl[(metric, t.name, seeds_for(t, k)[j])] /
                      ppl[(config.reference, t.name, seeds_for(t, k)[j])] for t in tasks]
            out.append(task_fitness(ratios, [t.weight for t in tasks], config.task_combine))
        return out

    selection = {}
    for label, key in [(c[0], formula) for c, formula in zip(cand, top)] + \
            [(name, name) for name in names]:
        per_seed = scores(label)
        m, s = mean_std(per_seed)
        selection[key] = Selection(m, s, per_seed)
    finite = [(selection[f].score, i) for i, f in enumerate(top) if math.isfinite(selection[f].score)]
    best_i = min(finite)[1] if finite else 0
    best = [("best", hof[best_i], recipe_of(hof[best_i]))] if hof else []
    log(f"reporting {'the best (' + candidate_text(hof[best_i]) + ') and ' if hof else ''}"
        f"the baselines on {windows_note('the report split', tail.eval_windows)}")
    report_rows = grid(benches, best + base, tasks, k, lambda t: t.report_split,
                       compare=compare, progress=progress, budget=tail.eval_windows,
                       recipe=recipe)
    def named(r: Measurement, phase: str, labels: dict[str, str]) -> Measurement:
        """A row under the formula it measured (the ranks and 'best' only labelled the grid)."""
        formula = labels.get(r.metric) or baseline_formula(r.metric)
        return replace(r, phase=phase, metric=formula if r.metric in labels else r.metric,
                       formula=formula)

    ranks = {f"#{i}": formula for i, formula in enumerate(top, start=1)}
    chosen = {"best": candidate_text(hof[best_i])} if hof else {}
    return FinalResults(selection_rows=[named(r, "selection", ranks) for r in sel],
                        report_rows=[named(r, "report", chosen) for r in report_rows],
                        selection=selection, best_rank=best_i + 1 if hof else None,
                        best=candidate_text(hof[best_i]) if hof else None, top=top,
                        baseline_names=names, seeds={t.name: seeds_for(t, k) for t in tasks})


def _entries(hof: list[dict[str, Any]], final: FinalResults | None, pset: Any) -> list[HallOfFameEntry]:
    """Hall-of-fame entries from checkpoint records and the confirmation's selection scores."""
    selection = final.selection if final else {}
    top = final.top if final else []
    out = []
    for rank, rec in enumerate(hof, start=1):
        tree = parse_candidate(rec["formula"], pset)
        measured = rank <= len(top)
        conf = selection.get(rec["formula"]) if measured else None
        out.append(HallOfFameEntry(
            rank=rank, formula=rec["formula"], fitness=float(rec["fitness"]),
            score=conf.score if conf else None, score_std=conf.std if conf else None,
            size=len(tree), height=tree.height, key=rec.get("key"), tree=tree,
            chosen=final is not None and final.best_rank == rank))
    return out

