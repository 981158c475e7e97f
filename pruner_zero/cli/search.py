"""`pruner-zero search`: flags -> ``SearchConfig`` -> ``run_search``, and the JSON result line.

The search group's flags are generated from ``SearchConfig``'s field metadata, so a flag, its
default and its help live beside the option they set."""
from __future__ import annotations

import argparse
import math
from dataclasses import fields
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..search.options import FREE_ON_RESUME, SearchOptions, resume_refusal
from .common import add_task_args, cache_from, finite_float, log, runtime_from, window_count


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("search", help="discover a pruning metric by genetic programming",
                       description="Discover a pruning metric by genetic programming and write "
                                   "config.json, checkpoint.json, evaluations.jsonl, "
                                   "hall_of_fame.csv and best_metric.json/.txt into --out.")
    add_task_args(p)
    g = p.add_argument_group("search")
    g.add_argument("--out", default=None, help="new run directory, e.g. runs/NAME")
    g.add_argument("--resume", default=None, metavar="DIR",
                   help="continue the run in DIR (its config.json gives every other option)")
    add_search_flags(g)
    p.set_defaults(func=run, _search_parser=p)


def add_search_flags(group: Any) -> None:
    """One flag per ``SearchConfig`` field that declares one."""
    types = {"finite_float": finite_float, "window_count": window_count}
    for f in fields(SearchOptions):
        kwargs = dict(f.metadata)
        if "flag" not in kwargs:
            continue
        flag = kwargs.pop("flag")
        kwargs["type"] = types.get(kwargs.get("type"), kwargs.get("type"))
        if kwargs["type"] is None:
            del kwargs["type"]
        if "action" not in kwargs:
            kwargs["default"] = kwargs.pop("cli_default", f.default)
        group.add_argument(flag, **kwargs)


def _dest(f: Any) -> str:
    return f.metadata["flag"][2:].replace("-", "_")


def config_from_args(a: argparse.Namespace):
    """The one place the search's flags become options (a ``SearchConfig``). The statistics
    cache defaults to $PRUNER_ZERO_CACHE (or ~/.cache/pruner_zero) on the command line, to none
    in Python."""
    from ..search.config import SearchConfig
    from ..workbench import default_cache_dir

    searched = {f.name: getattr(a, _dest(f)) for f in fields(SearchOptions) if "flag" in f.metadata}
    searched["seed"] = a.seed if a.gp_seed is None else a.gp_seed
    return SearchConfig(
        out=a.resume if a.resume is not None else a.out, resume=a.resume is not None,
        model=a.model, tasks=a.tasks, sparsity=a.sparsity, structure=a.structure,
        compare=a.compare, calib_seed=a.seed, cache_dir=cache_from(a, default_cache_dir()),
        allow_partial=a.allow_partial, data_dir=a.data_dir, calib_split=a.calib_split,
        fitness_split=a.fitness_split, report_split=a.report_split, nsamples=a.nsamples,
        seqlen=a.seqlen, calibration=a.calibration, calib_data=a.calib_data,
        text_join=a.text_join, progress=not a.quiet, log=log, **runtime_from(a).as_dict(),
        **searched)


FIELD_OF_FLAG = {"quiet": "progress", "gp_seed": "seed", "seed": "calib_seed", "no_cache": "cache_dir"}
"""The ``SearchConfig`` field a flag's destination sets, where the two names differ."""


def given_flags(parser: argparse.ArgumentParser, argv: list[str]) -> dict[str, str]:
    """The flags ``argv`` gives (destination -> flag), a value equal to its default included:
    comparing the parsed values with the defaults cannot tell ``--task-combine mean`` from
    nothing, and a resume would silently keep the run's ``worst``."""
    unset = object()
    seen = argparse.Namespace(**{act.dest: unset for act in parser._actions
                                 if act.dest != argparse.SUPPRESS})
    parser.parse_known_args(argv, seen)  # argparse fills no default into a name already there
    flags = {act.dest: act.option_strings[-1] for act in parser._actions if act.option_strings}
    return {dest: flag for dest, flag in flags.items() if getattr(seen, dest, unset) is not unset}


def _refuse_fixed_flags(a: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """A resume takes every option but where and how to run from the run's config.json."""
    given = given_flags(parser, a._argv)
    fixed = sorted(flag for dest, flag in given.items()
                   if dest != "resume" and FIELD_OF_FLAG.get(dest, dest) not in FREE_ON_RESUME)
    if fixed:
        raise resume_refusal("--resume", fixed)


def run(a: argparse.Namespace) -> int:
    from ..files import dumps_json
    from ..search.api import run_search

    parser = a._search_parser
    if a.resume is not None and a.out is not None:  # the run's directory is named twice
        raise resume_refusal("--resume", ["--out"])
    if a.resume is not None:
        _refuse_fixed_flags(a, parser)
    else:
        if not a.model and not a.tasks:
            raise ConfigError("search needs --model or --tasks (or --resume DIR to continue a run).")
        if not a.out:
            raise ConfigError("search needs --out DIR for its results (e.g. --out runs/NAME).")
    config = config_from_args(a)
    entries = run_search(config)
    print(dumps_json(search_summary(Path(config.out), entries)))
    return 0


def search_summary(out: Path, entries: list) -> dict:
    """The CLI's JSON line: the best metric, which split each number is on, report per task."""
    from ..search.results import read_final
    from ..search.rundir import best_entry
    from ..spread import by_task_metric, mean_std

    best = best_entry(entries) if entries else None
    summary = {"out": str(out), "best": best and best.formula, "hall_of_fame": len(entries),
               "fitness": best and best.fitness, "fitness_on": "fitness windows of the selection split",
               "selection": best and best.score, "selection_std": best and best.score_std,
               "selection_on": "selection split, mean over calibration seeds", "report": {}}
    final = read_final(out)
    counts = sorted({r.windows for r in final.selection_rows}, key=str) if final else []
    if counts and None not in counts:  # per seed, when the calibration windows are left out
        summary["selection_on"] = (f"{'/'.join(map(str, counts))} windows of the selection "
                                   "split, mean over calibration seeds")
    elif counts:  # a run made before the window budgets
        summary["selection_on"] = "whole selection split, mean over calibration seeds"
    rows = final.report_rows if final else []
    for r in rows:
        summary["report"].setdefault(r.task, {"split": r.split, "windows": r.windows})
    for (task, metric), values in by_task_metric(rows).items():
        m, sd = mean_std(values)
        label = "best" if best is not None and metric == best.formula else metric
        summary["report"][task][label] = [m if math.isfinite(m) else None,
                                          sd if math.isfinite(sd) else None]
    return summary
