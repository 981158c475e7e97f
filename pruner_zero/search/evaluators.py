"""The fitness evaluators of a run, built alike in the driver and in each Ray worker from the
run's stored config: one ``FitnessEvaluator`` per task, and the multi-task one over them with its
reference measured and its measuring backend (this process, or a pool of workers) given."""
from __future__ import annotations

import math
from typing import Any, Callable

from ..errors import ConfigError
from ..measure import TaskBenches
from ..recipe import parse_tag
from ..measurement import Measurement
from ..tasks import Task
from ..sparsegpt import SPARSEGPT
from .config import SearchConfig, baseline_formula, baseline_metric
from .fitness import FitnessEvaluator
from .multitask import MultiTaskEvaluator


def task_evaluators(benches: TaskBenches, tasks: list[Task], config: SearchConfig
                    ) -> list[FitnessEvaluator]:
    """One fitness evaluator per task: its fitness windows, structure and engine."""
    fit, recipe = config.fitness_settings(), config.recipe()
    genes = [parse_tag(tag) for tag in config.recipe_space or ()]
    evaluators = []
    for t in tasks:
        bench = benches.bench(t)
        for gene in genes:  # an impossible recipe gene is an error now, not generations later
            try:
                benches.engine(t, t.seed, config.compare, gene)
            except ConfigError as exc:
                raise ConfigError(f"--recipe-space {gene.tag()}: {exc}") from None
        windows = bench.split_windows(t.fitness_split, fit.fitness_windows, spread=True)
        evaluators.append(FitnessEvaluator(
            bench, t.shape(config.compare), fitness_windows=fit.fitness_windows,
            race_factor=fit.race_factor, race_chunk=fit.race_chunk,
            canonical_cache=fit.canonical_cache, fingerprint_cache=fit.fingerprint_cache,
            windows=windows, engine=benches.engine(t, t.seed, config.compare, recipe),
            engines=None if config.recipe_space is None else
            (lambda r, t=t: benches.engine(t, t.seed, config.compare, r))))
    return evaluators


def run_evaluator(benches: TaskBenches, tasks: list[Task], config: SearchConfig,
                  log: Callable[[str], None], pool: Any = None
                  ) -> tuple[MultiTaskEvaluator, list[Measurement]]:
    """The multi-task evaluator, with the reference measured on every task's fitness windows,
    and the baselines' fitness-window rows measured with it (at the start). ``pool``: the
    workers that measure the GP's candidates (None: this process)."""
    evaluators = task_evaluators(benches, tasks, config)
    rows, refs = [], []
    names = list(dict.fromkeys([config.reference, *config.baselines]))
    for t, ev in zip(tasks, evaluators):
        for name in names:
            metric = baseline_metric(name)
            ppl = benches.ppl_on(t, t.seed, SPARSEGPT, ev.windows, config.compare) \
                if metric == SPARSEGPT else ev.measure_ppl(metric)
            rows.append(Measurement(phase="fitness", task=t.name, metric=name,
                                    formula=baseline_formula(name),
                                    seed=t.seed, split=t.fitness_split,
                                    windows=int(ev.windows.shape[0]), ppl=ppl))
            if name == config.reference:
                refs.append(ppl)
        log(f"task {t.name}: reference {config.reference} ppl {refs[-1]:.4f} on "
            f"{ev.windows.shape[0]} {t.fitness_split} windows")
    bad = [t.name for t, r in zip(tasks, refs) if not (r > 0 and math.isfinite(r))]
    if bad:
        raise ConfigError(f"the reference {config.reference} has no finite perplexity on "
                          f"{', '.join(bad)}; choose another --reference")
    evaluator = MultiTaskEvaluator([t.name for t in tasks], evaluators, refs,
                                   [t.weight for t in tasks], start_rows=rows, pool=pool,
                                   combine=config.task_combine)
    return evaluator, rows
