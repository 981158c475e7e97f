"""`pruner-zero compare`: the leaderboard of metrics x tasks, printed as markdown."""
from __future__ import annotations

import argparse

from ..errors import ConfigError
from .common import (add_allocation_args, add_eval_windows_flag, add_task_args, add_update_args,
                     allocation_from, cache_from, log, runtime_from, task_options)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare", help="leaderboard of metrics x tasks on the report split",
        description="Measure metrics on tasks (models x sparsities, or --tasks) on the report "
                    "split, over several calibration seeds, and print a markdown table of "
                    "perplexity mean ± std; with --out also leaderboard.csv and leaderboard.png.")
    p.add_argument("--metrics", required=True,
                   help="comma-separated metrics: built-in names (magnitude, wanda, gblm, "
                        "pruner-zero), sparsegpt, formulas such as 'mul(W, sqrt(X))' (their "
                        "commas stay inside parentheses), metric .json files, or search run "
                        "directories (their best_metric.json)")
    add_task_args(p)
    g = p.add_argument_group("compare")
    add_eval_windows_flag(g, what="each task's report split")
    g.add_argument("--seeds", type=int, default=3,
                   help="calibration seeds per task: the task's seed and the next ones (default 3)")
    g.add_argument("--out", default=None, metavar="DIR",
                   help="also write leaderboard.csv and leaderboard.png here")
    r = p.add_argument_group("recipe", "applied to every metric but sparsegpt and recipe files "
                                       "(which bring their own)")
    add_allocation_args(r)
    add_update_args(r)
    p.set_defaults(func=run)


def run(a: argparse.Namespace) -> int:
    from ..allocation import Allocation
    from ..compare import compare, resolve_metric_specs
    from ..recipe import Recipe
    from ..tasks import build_tasks
    from ..workbench import default_cache_dir

    resolve_metric_specs(a.metrics)  # a bad metric is the first error, before the tasks
    recipe = Recipe(allocation_from(a) or Allocation(), a.update).checked()
    if not a.model and not a.tasks:
        raise ConfigError("compare needs --model (repeatable) or --tasks tasks.yaml")
    tasks = build_tasks(a.model, a.sparsity, a.tasks, **task_options(a))
    result = compare(a.metrics, tasks, seeds=a.seeds, compare=a.compare, runtime=runtime_from(a),
                     cache_dir=cache_from(a, default_cache_dir()), out=a.out,
                     progress=not a.quiet, log=log, allow_partial=a.allow_partial,
                     eval_windows=a.eval_windows, recipe=recipe)
    print(result["markdown"], flush=True)
    for kind in ("csv", "png"):
        if kind in result["files"]:
            log(f"wrote {result['files'][kind]}")
    return 0
