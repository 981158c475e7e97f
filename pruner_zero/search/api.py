"""``search``: discover a pruning metric by GP and write the run directory (the CLI is a shell over it).

Heavy modules (torch, deap, sympy) are imported inside the functions so that
``import pruner_zero`` stays cheap for the other commands.
"""
from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from pruner_zero.errors import ConfigError, MetricError
from pruner_zero.metric.io import split_metric_list
from pruner_zero.search.rundir import HallOfFameEntry, RunDir, best_entry
from pruner_zero.files import user_path

DEFAULT_SPACE = "paper"
DEFAULT_FITNESS_WINDOWS = 128
DEFAULT_FINAL_TOP = 5
DEFAULT_BASELINES = ("magnitude", "wanda", "gblm", "pruner-zero")
DEFAULT_REFERENCE = "wanda"
DEFAULT_CONFIRM_SEEDS = 3
CONFIG_VERSION = 2
MAX_SEEDS = 100  # calibration seeds of a confirmation or a comparison: each is a full measurement


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
        if len(tree) > space.max_size or tree.height > space.max_height:
            raise ConfigError(f"seed metric '{name}' ({len(tree)} nodes, height {tree.height}) "
                              f"exceeds the search space '{space.name}' (max_size {space.max_size}, "
                              f"max_height {space.max_height})")
    return trees


def checked_config(config: dict[str, Any], path: Path) -> tuple[Any, Any]:
    """The search space and GP settings of a run's config.json, after every value in it has
    passed the checks a new run's options pass: a hand-edited or damaged config is refused by
    name before any work, instead of failing (or giving nonsense) hours later."""
    from pruner_zero.measure import Runtime
    from pruner_zero.search.loop import GPSettings
    from pruner_zero.tasks import _typed

    def need(ok: bool, what: str) -> None:
        if not ok:
            raise ConfigError(what)

    def count(v: Any, low: int, high: int | None = None) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v >= low and (high is None or v <= high)

    try:
        need(isinstance(config.get("tasks"), list) and config["tasks"] != []
             and all(isinstance(t, dict) for t in config["tasks"]), "'tasks' must be a list of tasks")
        for i, t in enumerate(config["tasks"], start=1):
            _typed(t, f"task {i}")
            need(isinstance(t.get("name"), str) and t["name"], f"task {i} has no name")
        need(len({t["name"] for t in config["tasks"]}) == len(config["tasks"]), "task names repeat")
        need(isinstance(config.get("runtime"), dict), "'runtime' must be a mapping")
        Runtime(**config["runtime"])
        need(config.get("compare") in ("row", "layer"), "'compare' must be row or layer")
        need(config.get("cache_dir") is None or isinstance(config["cache_dir"], str),
             "'cache_dir' must be a path or null")
        space = config.get("space")
        need(isinstance(space, dict) and isinstance(space.get("definition"), dict),
             "'space.definition' must be a mapping")
        space_obj = _space_from_config(config)
        need(isinstance(config.get("gp"), dict), "'gp' must be a mapping")
        settings = GPSettings(**config["gp"]).checked(space_obj)
        fit = config.get("fitness")
        need(isinstance(fit, dict), "'fitness' must be a mapping")
        need(fit.get("fitness_windows") is None or count(fit["fitness_windows"], 1),
             "'fitness.fitness_windows' must be a positive integer or null")
        race = fit.get("race_factor")
        need(race is None or (isinstance(race, (int, float)) and not isinstance(race, bool)
                              and math.isfinite(race) and race >= 1), "'fitness.race_factor' must be >= 1 or null")
        need(count(fit.get("race_chunk"), 1), "'fitness.race_chunk' must be a positive integer")
        need(all(isinstance(fit.get(k), bool) for k in ("canonical_cache", "fingerprint_cache")),
             "'fitness' caches must be true or false")
        need(isinstance(config.get("reference"), str), "'reference' must be a metric")
        for key in ("baselines", "seed_metrics"):
            need(isinstance(config.get(key), list) and all(isinstance(n, str) for n in config[key]),
                 f"'{key}' must be a list of metrics")
        for name in [config["reference"], *config["baselines"]]:
            _metric_tree(name)
        _seed_trees(config["seed_metrics"], space_obj)
        need(count(config.get("confirm_seeds"), 1, MAX_SEEDS), f"'confirm_seeds' must be 1 to {MAX_SEEDS}")
        need(count(config.get("final_top"), 0), "'final_top' must be a non-negative integer")
    except (ConfigError, MetricError, TypeError, ValueError, KeyError) as exc:
        raise ConfigError(f"{path} is damaged ({type(exc).__name__ + ': ' if not isinstance(exc, (ConfigError, MetricError)) else ''}"
                          f"{exc}); nothing was changed: restore the file, or start a new run "
                          "with --out") from None
    return space_obj, settings


def _space_from_config(config: dict[str, Any]) -> Any:
    from pruner_zero.metric.space import SearchSpace

    return SearchSpace(**config["space"]["definition"])


def _fitness_windows(value: int | None) -> int | None:
    if value is None or value == 0:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"--fitness-windows must be a positive integer (0 = all windows), got {value!r}.")
    return value


def _fitness_note(config: dict[str, Any]) -> str:
    """What the fitness column measures, for best_metric.txt."""
    n = config["fitness"]["fitness_windows"]
    splits = sorted({t["fitness_split"] for t in config["tasks"]})
    windows = "all windows of" if n is None else f"{n} windows spread evenly over"
    many = "weighted geometric mean over tasks of " if len(config["tasks"]) > 1 else ""
    return (f"{many}ppl / ppl({config['reference']}), on {windows} the selection split "
            f"({', '.join(splits)})")



def _metric_tree(spec: str) -> Any:
    from pruner_zero.metric.io import resolve_metric

    if spec == "sparsegpt":
        raise ConfigError("sparsegpt is a pruning method, not a metric; it cannot be a search "
                          "baseline or reference (compare it with `pruner-zero compare`)")
    return resolve_metric(spec)[1]


def _check_argument_types(model: Any, out: Any, tasks: Any, cache_dir: Any, baselines: Any,
                          seed_metrics: Any) -> None:
    """The Python API's arguments, checked as the CLI's are: one clear error, not a TypeError
    from deep inside."""
    from pruner_zero.workbench import Workbench

    def need(ok: bool, what: str, value: Any) -> None:
        if not ok:
            raise ConfigError(f"{what}, got {value!r}")

    path_like = (str, Path)
    need(isinstance(out, path_like), "out must be a directory path", out)
    need(cache_dir is None or isinstance(cache_dir, path_like), "cache_dir must be a path", cache_dir)
    need(model is None or isinstance(model, (str, Workbench)) or (
        isinstance(model, (list, tuple)) and all(isinstance(m, str) for m in model)),
        "model must be a hub id or directory, a list of them, or a Workbench", model)
    need(tasks is None or isinstance(tasks, path_like) or (
        isinstance(tasks, (list, tuple)) and all(isinstance(t, dict) or hasattr(t, "as_dict")
                                                 for t in tasks)),
        "tasks must be a tasks.yaml path or a list of task mappings", tasks)
    for name, value in (("baselines", baselines), ("seed_metrics", seed_metrics)):
        need(value is None or isinstance(value, str) or (
            isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)),
            f"{name} must be metrics separated by commas or a list of them", value)


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


def search(model: Any = None, out: str | Path | None = None, *, generations: int = 10,
           population: int = 20, seed: int = 0, space: str | Path = DEFAULT_SPACE,
           sparsity: Any = None, structure: str = "unstructured", compare: str = "row",
           tasks: Any = None, tournament: int = 3, cx_prob: float = 0.5, mut_prob: float = 0.3,
           elite: int = 2, max_height: int | None = None, hof_size: int = 10, polish: int = 3,
           fitness_windows: int | None = DEFAULT_FITNESS_WINDOWS, race_factor: float | None = None,
           race_chunk: int = 16, canonical_cache: bool = True, fingerprint_cache: bool = True,
           seed_metrics: str | Sequence[str] | None = None, final_top: int = DEFAULT_FINAL_TOP,
           baselines: str | Sequence[str] | None = DEFAULT_BASELINES,
           reference: str = DEFAULT_REFERENCE, confirm_seeds: int = DEFAULT_CONFIRM_SEEDS,
           resume: bool = False, calib_seed: int | None = None, cache_dir: str | Path | None = None,
           allow_partial: bool = False,
           progress: bool = True, log: Callable[[str], None] = _stderr,
           **protocol: Any) -> list[HallOfFameEntry]:
    """Search a pruning metric and write ``out`` (see README); returns the hall of fame, best
    fitness first (``rundir.best_entry`` picks the recommended metric).

    ``model`` is a hub id, a local directory, a list of them (one task per model and sparsity),
    or a loaded ``Workbench``; ``tasks`` a tasks.yaml path or a list of task mappings instead.
    The other protocol options (``data_dir``, ``calib_split``, ``fitness_split``,
    ``report_split``, ``nsamples``, ``seqlen``, ``device``, ...) are the defaults of every task.
    ``seed`` seeds the GP and, unless ``calib_seed`` is given, the calibration sampling.
    ``resume=True`` continues the run in ``out`` from its config.json and checkpoint.json; any
    other argument given a value other than its default is refused, as on the command line (a
    loaded ``Workbench`` may still be passed as ``model``, and ``progress``/``log``).
    """
    from pruner_zero.measure import Runtime, TaskBenches
    from pruner_zero.metric.space import load_space
    from pruner_zero.search.loop import GPSettings
    from pruner_zero.tasks import check_tasks
    from pruner_zero.workbench import Workbench

    if out is None:
        raise ConfigError("search needs an output directory (--out).")
    if resume:
        _check_resume_arguments(dict(locals()), protocol)
    _check_argument_types(model, out, tasks, cache_dir, baselines, seed_metrics)
    run = RunDir(out)
    with run.lock("--resume" if resume else "--out"):  # one process per run directory; a killed holder's lock is taken over
        preloaded = model if isinstance(model, Workbench) else None
        if resume:
            config = run.read_config()
            if config.get("version") != CONFIG_VERSION:
                raise ConfigError(f"{run.path} was made by an older pruner-zero (config version "
                                  f"{config.get('version')}); its format cannot be resumed, start a new run")
            space_obj, settings = checked_config(config, run.path / "config.json")
        else:
            run.check_new()
            space_obj = load_space(space)
            settings = GPSettings(population=population, generations=generations, tournament=tournament,
                                  cx_prob=cx_prob, mut_prob=mut_prob, elite=elite, hof_size=hof_size,
                                  max_height=max_height, seed=seed, polish=polish).checked(space_obj)
            names = split_metric_list(seed_metrics, "--seed-metrics")
            _seed_trees(names, space_obj)
            if len(names) > population:
                raise ConfigError(f"{len(names)} seed metrics do not fit into a population of {population}.")
            if isinstance(final_top, bool) or not isinstance(final_top, int) or final_top < 0:
                raise ConfigError(f"--final-top must be a non-negative integer, got {final_top!r}.")
            if isinstance(confirm_seeds, bool) or not isinstance(confirm_seeds, int) or \
                    not 1 <= confirm_seeds <= MAX_SEEDS:
                raise ConfigError(f"--confirm-seeds must be an integer from 1 to {MAX_SEEDS}, got "
                                  f"{confirm_seeds!r}.")
            if race_factor is not None and not race_factor >= 1.0:
                raise ConfigError(f"--race-factor must be at least 1 (or left off), got {race_factor}.")
            if isinstance(race_chunk, bool) or not isinstance(race_chunk, int) or race_chunk < 1:
                raise ConfigError(f"--race-chunk must be a positive integer, got {race_chunk!r}.")
            windows = _fitness_windows(fitness_windows)
            base_names = split_metric_list(baselines, "--baselines")
            for name in [*base_names, reference]:
                _metric_tree(name)
            from dataclasses import fields

            runtime_keys = [f.name for f in fields(Runtime)]
            if preloaded is not None:
                p = preloaded.protocol
                protocol = {**{k: getattr(p, k) for k in ("data_dir", "calib_split", "nsamples",
                                                           "seqlen", "seed", "calib_data",
                                                           "text_join")}, **protocol}
                runtime = Runtime(**{k: getattr(p, k) for k in runtime_keys})
                model = p.model
            else:
                runtime = Runtime(**{k: protocol[k] for k in runtime_keys if protocol.get(k) is not None})
                if calib_seed is not None or "seed" not in protocol:
                    protocol["seed"] = seed if calib_seed is None else calib_seed
            if model is None and tasks is None:
                raise ConfigError("search needs a model (--model) or tasks (--tasks) unless it resumes "
                                  "a run (--resume).")
            task_list = build_tasks(model, sparsity, tasks, structure=structure, **protocol)
            check_tasks(task_list, compare)
            from dataclasses import asdict

            config = {
                "command": "search", "version": CONFIG_VERSION,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "tasks": [t.as_dict() for t in task_list],
                "runtime": runtime.as_dict(), "compare": compare,
                "cache_dir": None if cache_dir is None else str(user_path(cache_dir).resolve()),
                "space": {"spec": str(space), "definition": {
                    k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(space_obj).items()
                    if not k.startswith("_")}},
                "gp": settings.as_dict(),
                "fitness": {"fitness_windows": windows, "windows_spread": True,
                            "race_factor": race_factor, "race_chunk": race_chunk,
                            "canonical_cache": canonical_cache, "fingerprint_cache": fingerprint_cache},
                "reference": reference, "baselines": base_names, "confirm_seeds": confirm_seeds,
                "seed_metrics": names, "final_top": final_top, "allow_partial": allow_partial,
            }
        from pruner_zero.tasks import Task

        task_list = [Task.from_dict(t) for t in config["tasks"]]
        benches = TaskBenches(Runtime(**config["runtime"]),
                              None if config["cache_dir"] is None else Path(config["cache_dir"]),
                              progress, log, preloaded)
        benches.needed = _statistics_needed(config, space_obj)
        if not resume:
            # models, widths, data, statistics: before the run dir exists
            benches.prepare(task_list, config["compare"], "fitness_split", with_stats=True,
                            allow_partial=allow_partial)
            for t, d in zip(task_list, config["tasks"]):  # resolved paths, so a resume finds them
                b = benches.bench(t)
                d.update(model=b.protocol.model, data_dir=b.protocol.data_dir, seqlen=b.protocol.seqlen)
            run.create(config)
            task_list = [Task.from_dict(t) for t in config["tasks"]]
        return _run(run, config, space_obj, settings, benches, task_list, progress, log)


def _check_resume_arguments(given: dict[str, Any], protocol: dict[str, Any]) -> None:
    """A resume continues with the run's config.json: an option given another value would be
    silently ignored, so it is refused (the CLI's rule, for the Python API too). What only says
    where and how to run (a loaded Workbench, progress, log) may still be passed."""
    import inspect

    defaults = {name: p.default for name, p in inspect.signature(search).parameters.items()
                if p.default is not inspect.Parameter.empty}
    free = {"model", "out", "resume", "progress", "log"}
    changed = sorted(k for k, v in given.items()
                     if k in defaults and k not in free and v != defaults[k])
    if isinstance(given.get("model"), (str, list, tuple)):  # another model, not a loaded one
        changed.insert(0, "model")
    changed += sorted(protocol)
    if changed:
        raise ConfigError(f"resume=True continues the run with the options in its config.json; "
                          f"drop {', '.join(changed)} (or start a new run in another directory)")


def _statistics_needed(config: dict[str, Any], space: Any) -> set[str]:
    """What the space's terminals and the run's named metrics (reference, baselines, seeds) read."""
    from pruner_zero.metric.registry import statistics_read
    from pruner_zero.metric.tree import leaves

    names = [config["reference"], *config["baselines"], *config["seed_metrics"]]
    return statistics_read(set(space.terminals).union(*(leaves(_metric_tree(n)) for n in names)))


def _evaluator(benches: Any, tasks: list[Any], config: dict[str, Any], log: Callable[[str], None],
               start_rows: list[dict[str, Any]] | None = None):
    """The multi-task evaluator, with the reference measured on every task's fitness windows;
    also returns the baselines' fitness-window rows (measured here, at the start). A resumed run
    passes the rows its checkpoint kept: fitness values stay on the scale they were measured on."""
    from pruner_zero.search.fitness import FitnessEvaluator, MultiTaskEvaluator

    fit = config["fitness"]
    evaluators = []
    for t in tasks:
        bench = benches.bench(t)
        windows = bench.split_windows(t.fitness_split, fit["fitness_windows"], spread=True)
        evaluators.append(FitnessEvaluator(
            bench, t.shape(config["compare"]), fit["fitness_windows"], fit["race_factor"],
            fit["race_chunk"], fit["canonical_cache"], fit["fingerprint_cache"], windows=windows,
            engine=benches.engine(t, t.seed, config["compare"])))
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
         tasks: list[Any], progress: bool, log: Callable[[str], None]) -> list[HallOfFameEntry]:
    """Run or resume the GP, confirm the best over calibration seeds, report, write outputs."""
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
        result = run_gp(space, evaluator, settings, run, seeds, progress, log)
    finally:
        run.close()
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
            f"seeds on the selection split")
    sel = grid(benches, cand + base, tasks, k, lambda t: t.fitness_split, compare, progress)
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
        "the baselines on the report split")
    report_rows = grid(benches, best + base, tasks, k, lambda t: t.report_split, compare, progress)
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
        if seeds < 2 and not out:
            out.append("(one calibration seed: no spread is measured, so better/worse below "
                       "are not tested against calibration noise; use --confirm-seeds 3)")
        if best is None:
            out.append(f"report [{task}, {split}, {seeds} seeds] no valid metric was found")
        else:
            m, s = mean_std(by[(task, best)])
            out.append(f"report [{task}, {split}, {seeds} seeds] best {m:.4f} ± {s:.4f}")
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

