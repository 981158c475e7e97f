"""Metrics x tasks x calibration seeds -> perplexities: what a search's final confirmation and
``compare`` both measure. Each model is loaded once; each (task, seed) has its own calibration
and statistics (cached on disk like any other); a metric is applied and undone in place."""
from __future__ import annotations

import hashlib
import math
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from tqdm.auto import tqdm

from .allocation import linear_sparsities
from .data import resolve_calib_data, resolve_data_dir
from .engine import Engine, undo_kind, weights_kept_on_host
from .errors import ConfigError, MetricError
from .evaluate import perplexity
from .files import user_path
from .masks import check_fits
from .measurement import Measurement
from .metric.io import format_formula
from .model import check_linear_share, input_device, layers_prefix
from .ppl_cache import FORMAT, read_ppl, write_ppl
from .recipe import PLAIN, Recipe
from .runtime import Runtime
from .sparsegpt import SPARSEGPT, sparsegpt_prune
from .stats import cache_key, model_identity
from .tasks import Task
from .workbench import Protocol, Workbench


class TaskBenches:
    """Loaded models and their per-(task, seed) workbenches and engines."""

    def __init__(self, runtime: Runtime, cache_dir: Path | None = None, progress: bool = True,
                 log: Callable[[str], None] = print, preloaded: Any = None,
                 needed: set[str] | None = None) -> None:
        self.runtime, self.cache_dir, self.progress, self.log = runtime, cache_dir, progress, log
        self._models: dict[str, Any] = {}  # model -> a Workbench holding it
        self._benches: dict[tuple, Any] = {}
        self._engines: dict[tuple, Any] = {}
        self._dense: dict[int, dict] = {}  # model -> its dense weights, for every engine's undo
        self.needed = needed  # the statistics the metrics read (None: all)
        self.reused = 0  # perplexities served by the cache directory
        if preloaded is not None:
            self._models[preloaded.protocol.model] = preloaded

    def bench(self, task: Task, seed: int | None = None) -> Any:
        """The Workbench of ``task`` calibrated with ``seed`` (default the task's own)."""
        seed = task.seed if seed is None else seed
        key = _bench_key(task, task.seqlen, seed)
        if key in self._benches:
            return self._benches[key]
        changes = dict(data_dir=task.data_dir, calib_split=task.calib_split, eval_split=task.report_split,
                       nsamples=task.nsamples, seed=seed, calib_data=task.calib_data,
                       text_join=task.text_join)
        base = self._find_model(task.model)
        if base is None:
            base = Workbench(Protocol(model=task.model, seqlen=task.seqlen, **changes,
                                      **self.runtime.as_dict()),
                             cache_dir=self.cache_dir, progress=self.progress, log=self.log)
            self._models[base.protocol.model] = base
            bench = base
        else:
            changes["seqlen"] = task.seqlen  # None: the model's default (Workbench.variant)
            changes["data_dir"] = _resolved_dir(task.data_dir)
            changes["calib_data"] = resolve_calib_data(task.calib_data)
            same = all(getattr(base.protocol, k) == v for k, v in changes.items()
                       if k != "eval_split" and not (k == "seqlen" and v is None))
            taken = any(b is base for b in self._benches.values())
            bench = base if same and not taken else base.variant(**changes)
        self._benches[key] = bench
        p = bench.protocol  # also under its resolved seqlen: a task written back with it finds it
        self._benches.setdefault(_bench_key(task, p.seqlen, p.seed), bench)
        return bench

    def prepare(self, tasks: Sequence[Task], compare: str, split_role: str,
                with_stats: bool = False, allow_partial: bool = False) -> None:
        """Load every model once and check what needs the model, before any long work: the
        share of the decoder its linears hold (``model.check_linear_share``), N:M widths, the
        split each task reads in this phase (``split_role``, e.g. "fitness_split") and its
        calibration (with ``with_stats``, the statistics themselves)."""
        for t in tasks:
            bench = self.bench(t)
            try:
                check_linear_share(bench.model, bench.linears, allow_partial, self.log)
            except ConfigError as exc:
                raise ConfigError(f"task {t.name}: {exc}") from None
            try:
                check_fits((m.in_features for m in bench.linears.values()), t.shape(compare))
            except ConfigError as exc:
                raise ConfigError(f"task {t.name}: {exc}") from None
            bench.split_windows(getattr(t, split_role), 1)  # a missing or too short split fails here
            _ = self.statistics(bench) if with_stats else bench.calib

    def statistics(self, bench: Any, owl: bool = False) -> dict:
        """The statistics the metrics of this run read (``needed``), no more: a space without G
        never runs a backward pass. OWL's allocation reads X."""
        if self.needed is None:
            return bench.stats
        return bench.statistics(self.needed | {"X"} if owl else self.needed)

    def _find_model(self, model: str) -> Any:
        if model in self._models:
            return self._models[model]
        resolved = str(user_path(model).resolve()) if user_path(model).exists() else model
        return self._models.get(resolved)

    def engine(self, task: Task, seed: int | None, compare: str = "row",
               recipe: Recipe = PLAIN) -> Any:
        """The engine of (task, seed) pruning under ``recipe`` (its allocation and update)."""
        bench = self.bench(task, seed)
        shape = task.shape(compare)
        key = (id(bench), shape, task.calibration, recipe)
        if key not in self._engines:  # the undo is kept on the host, one copy per model
            walks = task.calibration == "sequential" or recipe.update is not None
            stats = self.statistics(bench, owl=recipe.allocation.kind == "owl")
            try:
                recipe.allocation.check_fits(shape)
                sparsities = linear_sparsities(recipe.allocation, shape.sparsity, bench.linears,
                                               stats, layers_prefix(bench.model))
            except ConfigError as exc:
                raise ConfigError(f"task {task.name}: {exc}") from None
            self._engines[key] = Engine(
                bench.model, bench.linears, stats, shape, task.calibration,
                bench.calib if walks else None, sparsities=sparsities, update=recipe.update,
                keep="copy" if recipe.update is not None else undo_kind(bench.linears),
                dense=self._dense.setdefault(id(bench.model), {}))
        return self._engines[key]

    def windows(self, task: Task, seed: int | None, split: str, budget: int | None = None,
                skip: int | None = None) -> Any:
        """The windows of ``split`` a measurement reads: all, or ``budget`` spread evenly;
        ``skip``: not the ``skip`` spread windows a search's fitness reads."""
        return self.bench(task, seed).split_windows(split, budget, spread=True, skip_spread=skip)

    def ppl(self, task: Task, seed: int | None, metric: Any, split: str, compare: str = "row",
            budget: int | None = None, skip: int | None = None) -> float:
        """Perplexity on the windows of ``split`` (all, or ``budget`` spread evenly) after
        pruning with ``metric``."""
        return self.ppl_on(task, seed, metric, self.windows(task, seed, split, budget, skip),
                           compare)

    def ppl_on(self, task: Task, seed: int | None, metric: Any, windows: Any,
               compare: str = "row", recipe: Recipe = PLAIN) -> float:
        """Perplexity on ``windows`` after pruning with ``metric`` (a tree under ``recipe``,
        SPARSEGPT, or None: the dense model); the dense weights are restored afterwards. With a
        cache directory, a perplexity measured before with the same inputs is read back."""
        bench = self.bench(task, seed)
        own = PLAIN if metric == SPARSEGPT else recipe
        key = None
        if self.cache_dir is not None:
            key = _ppl_key(bench, task, metric, windows, compare, own)
            cached = read_ppl(self.cache_dir, key, "perplexity", self.log)
            if cached is not None:
                self.reused += 1
                return cached
        ppl = self._measure(bench, task, seed, metric, windows, compare, own)
        if key is not None:
            record: dict[str, Any] = {"model": bench.protocol.model, "metric": "dense"}
            if metric is not None:  # what was pruned, how (the dense model: none of it)
                record.update(metric=metric if metric == SPARSEGPT else format_formula(metric),
                              recipe=own.describe(), structure=task.shape(compare).describe())
            write_ppl(self.cache_dir, key, {**record, "windows": int(windows.shape[0]),
                                            "ppl": ppl}, "perplexity", self.log)
        return ppl

    def _measure(self, bench: Any, task: Task, seed: int | None, metric: Any, windows: Any,
                 compare: str, recipe: Recipe) -> float:
        import torch

        engine = self.engine(task, seed, compare, recipe)
        if metric == SPARSEGPT:  # it updates the weights it keeps, too: a whole copy on the host
            with weights_kept_on_host(bench.linears):
                sparsegpt_prune(bench.model, bench.calib, engine.structure, False)
                with torch.no_grad():
                    return perplexity(bench.model, windows, bench.protocol.batch_size, False)
        try:
            if metric is not None:
                engine.prune(metric, format_formula(metric))
            with torch.no_grad():
                return perplexity(bench.model, windows, bench.protocol.batch_size, False)
        finally:
            engine.restore()

    def release(self, task: Task, seed: int) -> None:
        """Forget the workbench and engines of (task, another calibration seed): its statistics
        weigh as much as the model in float32, and the cache on disk brings them back."""
        bench = self._benches.get(_bench_key(task, task.seqlen, seed))
        if bench is None or seed == task.seed or any(bench is m for m in self._models.values()):
            return
        for k in [k for k, b in self._benches.items() if b is bench]:
            del self._benches[k]
        for k in [k for k in self._engines if k[0] == id(bench)]:
            del self._engines[k]

    def dense_ppl(self, task: Task, split: str, budget: int | None = None) -> float:
        return self.ppl(task, None, None, split, budget=budget)


def _ppl_key(bench: Any, task: Task, metric: Any, windows: Any, compare: str,
             recipe: Recipe) -> str:
    """All a perplexity depends on: the model's files, dtype, device and batch size and the
    windows' tokens; pruned, also the metric, its recipe, the structure, the calibration (mode
    and tokens) and the statistics' dtype and device."""
    import torch

    p = bench.protocol
    extra: dict[str, Any] = {
        "measure": "perplexity", "format": FORMAT, "batch_size": p.batch_size,
        "windows": list(windows.shape),  # the tokens' bytes alone do not tell 4 x 1024 from 2 x 2048
        "dtype": str(next(bench.model.parameters()).dtype),
        "device": input_device(bench.model).type}
    if metric is not None:
        own = recipe.as_dict()
        own["allocation"].pop("source", None)  # where a given allocation was read: not what it is
        calib = bench.calib.to("cpu", dtype=torch.int64).contiguous().numpy()
        extra.update(metric=metric if metric == SPARSEGPT else format_formula(metric),
                     recipe=own, structure=asdict(task.shape(compare)),
                     calibration=task.calibration,
                     statistics=[p.stats_dtype, p.stats_device],
                     calib=hashlib.sha256(calib.tobytes()).hexdigest())
    return cache_key(model_identity(p.model, p.revision), windows, extra)


def _bench_key(task: Task, seqlen: int | None, seed: int) -> tuple:
    """What a workbench's calibration and text depend on (its report split is the task's)."""
    path = user_path(task.model)
    model = str(path.resolve()) if path.exists() else task.model
    return (model, _resolved_dir(task.data_dir), task.calib_split,
            resolve_calib_data(task.calib_data), task.text_join, task.nsamples, seqlen, seed)


def _resolved_dir(data_dir: str | None) -> str | None:
    """A data dir as a Workbench stores it (absolute), None for the hub."""
    path = resolve_data_dir(data_dir)
    return None if path is None else str(path.resolve())


def seeds_for(task: Task, count: int) -> list[int]:
    """The calibration seeds of a confirmation: the task's own seed, then the next ones."""
    return [task.seed + k for k in range(count)]


def grid(benches: TaskBenches, metrics: Iterable[tuple], tasks: Sequence[Task],
         seeds: int, split_of: Callable[[Task], str], *, compare: str = "row",
         progress: bool = True, budget: int | None = None,
         skip: int | None = None, recipe: Recipe = PLAIN) -> list[Measurement]:
    """One row per (metric, task, seed): perplexity on ``split_of(task)``, all its windows or
    ``budget`` of them spread evenly (the row says how many), not the ``skip`` spread ones.
    ``metrics``: (name, metric) pruned under ``recipe``, or (name, metric, its own recipe)."""
    metrics = [(m[0], m[1], m[2] if len(m) > 2 and m[2] is not None else recipe) for m in metrics]
    jobs = [(name, m, r, t, s) for t in tasks for s in seeds_for(t, seeds)
            for name, m, r in metrics]
    rows, reused = [], benches.reused
    for name, metric, own, task, seed in tqdm(jobs, desc=f"measuring {len(metrics)} metrics", unit="run",
                                         disable=not progress, leave=False, file=sys.stderr):
        windows = benches.windows(task, seed, split_of(task), budget, skip)
        where = dict(metric=name, task=task.name, seed=seed, split=split_of(task),
                     windows=int(windows.shape[0]))
        try:
            row = Measurement(**where, ppl=benches.ppl_on(task, seed, metric, windows, compare,
                                                          own))
        except (MetricError, RuntimeError, ValueError, ArithmeticError) as exc:
            # a metric valid under one calibration can be NaN/constant under another: that cell
            # is inf (it loses every comparison), the rest of the table is still measured
            row = Measurement(**where, ppl=math.inf, error=f"{type(exc).__name__}: {exc}")
            benches.log(f"warning: {name} on {task.name} (seed {seed}): {row.error}")
        rows.append(row)
        if (task, seed) != (jobs[-1][3], jobs[-1][4]) and name == metrics[-1][0]:
            benches.release(task, seed)  # this (task, seed) is done: one seed's statistics at a time
    if benches.reused > reused:
        benches.log(f"{benches.reused - reused} of {len(jobs)} perplexities read from the cache "
                    f"{benches.cache_dir} (measured before with the same model, tokens, metric "
                    "and recipe; --no-cache measures them again)")
    return rows
