"""``SearchConfig``: a search's options (``options.SearchOptions``) checked in one place, and
composed of the settings each part of the search reads (``settings``: GP, fitness, confirmation;
``runtime.Runtime``).

The CLI builds one from its flags (``cli.search.config_from_args``), ``search()`` takes one (or
keywords that become one, ``from_options``), and a run's config.json is one (``stored``).
"""
from __future__ import annotations

import importlib.util
import math
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Callable, Sequence

from pruner_zero.allocation import OWL_LAMBDA, OWL_M, Allocation, allocation_option
from pruner_zero.errors import ConfigError, MetricError
from pruner_zero.methods import metric_tree as resolved_tree
from pruner_zero.metric.io import format_formula, parse_formula, split_metric_list
from pruner_zero.metric.space import SearchSpace, load_space
from pruner_zero.recipe import Recipe, parse_tag
from pruner_zero.runtime import Runtime
from pruner_zero.search.options import SearchOptions
from pruner_zero.search.settings import (ConfirmSettings, FitnessSettings, GPSettings,
                                         whole_number)
from pruner_zero.sparsegpt import SPARSEGPT
from pruner_zero.tasks import TASK_KEYS
from pruner_zero.workbench import Workbench

__all__ = ["SearchConfig", "baseline_formula", "baseline_metric", "config_key", "metric_tree",
           "require_ray", "seed_trees"]


@dataclass(frozen=True)
class SearchConfig(SearchOptions):
    """``checked()`` validates and normalises; ``stored`` writes and reads it as config.json."""

    # ------------------------------------------------------------ validation

    def checked(self, stored: bool = False) -> "SearchConfig":
        """Every option checked (the first problem is one ConfigError naming the option: its
        flag, or its config.json key when ``stored``) and normalised: metric lists are tuples
        of names, ``fitness_windows`` None for all, the space loaded (``space_definition``),
        ``max_height``/``polish`` resolved as ``GPSettings.checked`` does."""
        name = config_key if stored else _option
        tags = recipe_tags(self.recipe_space)
        if tags != self.recipe_space:
            return replace(self, recipe_space=tags).checked(stored)
        if tags is not None and not self.recipe().plain:
            raise ConfigError(f"{name('recipe_space')} lists the recipes the search chooses "
                              f"among; leave {name('allocation')} and {name('update')} out")
        owl_given = (self.owl_m, self.owl_lambda) != (OWL_M, OWL_LAMBDA)
        if owl_given and (tags is not None or not (self.allocation == "owl" or (
                isinstance(self.allocation, Allocation) and self.allocation.kind == "owl"))):
            raise ConfigError(f"{name('owl_m')} and {name('owl_lambda')} are OWL's: give "
                              f"{name('allocation')} owl" + (
                                  " (or, in a recipe space, owl:M:LAMBDA)" if tags else ""))
        self._check_types(stored)
        if stored:
            space_obj = SearchSpace(**self.space_definition)
        else:
            space_obj = load_space(self.space)
        settings = self.gp_settings(space_obj)
        seeds = tuple(split_metric_list(self.seed_metrics, "--seed-metrics"))
        seed_trees(seeds, space_obj)
        if len(seeds) > self.population:
            raise ConfigError(f"{len(seeds)} seed metrics do not fit into a population of "
                              f"{self.population}.")
        fitness = self.fitness_settings().checked(name)
        confirm = self.confirm_settings().checked(name)
        if not isinstance(self.allow_partial, bool):
            raise ConfigError(f"{name('allow_partial')} must be true or false, got "
                              f"{self.allow_partial!r}.")
        if self.compare not in ("row", "layer"):
            raise ConfigError(f"{name('compare')} must be row or layer, got {self.compare!r}.")
        self._check_workers(name)
        require_ray(self.workers, self.ray_address)
        if not isinstance(self.reference, str):
            raise ConfigError(f"{name('reference')} must be a metric, got {self.reference!r}.")
        bases = tuple(split_metric_list(self.baselines, "--baselines"))
        metric_tree(self.reference)
        for metric in bases:
            baseline_metric(metric)
        if SPARSEGPT in bases and self.compare != "row":
            raise ConfigError(f"sparsegpt selects its own masks: it cannot be a baseline with "
                              f"{name('compare')} {self.compare}")
        if self.task_list is not None:
            check_task_combine(self.task_list, fitness.task_combine, name)
        recipe = self.recipe()
        return replace(self, seed_metrics=seeds, baselines=bases, **_fields_of(fitness),
                       allocation=recipe.allocation, update=recipe.update or "none",
                       **_fields_of(confirm), **_fields_of(settings),
                       space_definition=_definition(space_obj))

    def _check_workers(self, name: Callable[[str], str]) -> None:
        """Where the candidates are measured: the options of the Ray pool."""
        if not whole_number(self.workers, 0):
            raise ConfigError(f"workers must be a non-negative integer, got {self.workers!r}.")
        if self.ray_address is not None and not isinstance(self.ray_address, str):
            raise ConfigError(f"ray_address must be an address or None, got {self.ray_address!r}.")
        if self.worker_cpus is not None and not whole_number(self.worker_cpus, 1):
            raise ConfigError(f"{name('worker_cpus')} must be a positive integer, got "
                              f"{self.worker_cpus!r}.")
        if self.worker_gpus is not None and (
                isinstance(self.worker_gpus, bool) or not isinstance(self.worker_gpus, (int, float))
                or not 0 < self.worker_gpus < math.inf):
            raise ConfigError(f"{name('worker_gpus')} must be a positive number, got "
                              f"{self.worker_gpus!r}.")
        if self.worker_gpus is not None and str(self.device).startswith("cpu"):
            raise ConfigError(f"{name('worker_gpus')} with --device {self.device}: a CPU run uses "
                              "no GPU; leave it out, or run on a GPU.")

    def _check_types(self, stored: bool) -> None:
        """The Python API's arguments, checked as the CLI's are: one clear error, not a
        TypeError from deep inside."""
        def need(ok: bool, what: str, value: Any) -> None:
            if not ok:
                raise ConfigError(f"{what}, got {value!r}")

        path_like = (str, Path)
        if self.out is None and not stored:
            raise ConfigError("search needs an output directory (--out).")
        need(self.out is None or isinstance(self.out, path_like), "out must be a directory path",
             self.out)
        need(self.cache_dir is None or isinstance(self.cache_dir, path_like),
             f"{config_key('cache_dir') if stored else 'cache_dir'} must be a path", self.cache_dir)
        need(self.model is None or isinstance(self.model, (str, Workbench)) or (
            isinstance(self.model, (list, tuple)) and all(isinstance(m, str) for m in self.model)),
            "model must be a hub id or directory, a list of them, or a Workbench", self.model)
        need(self.tasks is None or isinstance(self.tasks, path_like) or (
            isinstance(self.tasks, (list, tuple)) and all(isinstance(t, dict) or hasattr(t, "as_dict")
                                                          for t in self.tasks)),
            "tasks must be a tasks.yaml path or a list of task mappings", self.tasks)
        for key in ("baselines", "seed_metrics"):
            value = getattr(self, key)
            need(value is None or isinstance(value, str) or (
                isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)),
                f"{config_key(key) if stored else key} must be metrics separated by commas or a list "
                "of them", value)

    def recipe(self) -> Recipe:
        """The allocation and update every candidate is pruned with."""
        a = self.allocation
        if isinstance(a, str):
            a = allocation_option(a, self.owl_m, self.owl_lambda)
        elif not isinstance(a, Allocation):
            raise ConfigError(f"allocation must be uniform, owl, a file of block sparsities or "
                              f"an Allocation, got {a!r}")
        return Recipe(a, self.update).checked()

    def gp_settings(self, space: Any = None) -> GPSettings:
        """The GP loop's settings (``run_gp``), checked against ``space`` when given."""
        settings = GPSettings(**self._fields(GPSettings))
        return settings if space is None else settings.checked(space)

    def fitness_settings(self) -> FitnessSettings:
        """How a candidate is measured (``FitnessEvaluator``)."""
        return FitnessSettings(**self._fields(FitnessSettings))

    def confirm_settings(self) -> ConfirmSettings:
        """The search's tail (``api._confirm``)."""
        return ConfirmSettings(**self._fields(ConfirmSettings))

    def _fields(self, settings: type) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(settings)}

    def search_space(self) -> Any:
        """The run's search space: the frozen definition once there is one, else ``space``."""
        if self.space_definition is not None:
            return SearchSpace(**self.space_definition)
        return load_space(self.space)

    def runtime(self) -> Any:
        """Where and how models run (the options given; the rest Runtime's defaults)."""
        return Runtime(**{f.name: getattr(self, f.name) for f in fields(Runtime)
                          if getattr(self, f.name) is not None})

    def protocol(self) -> dict[str, Any]:
        """The task options given (None: not given), for ``build_tasks``."""
        return {k: getattr(self, k) for k in TASK_KEYS
                if k not in ("model", "sparsity", "structure", "seed")
                and getattr(self, k) is not None}


RAY_HINT = "pip install 'pruner-zero[ray]' (or ray>=2.9)"


def require_ray(workers: int, address: str | None) -> None:
    """Refuse --workers/--ray-address by name when Ray is not installed, before any work."""
    if not workers and address is None:
        return
    try:
        found = importlib.util.find_spec("ray") is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise ConfigError(f"search --workers/--ray-address evaluate on Ray, which is not "
                          f"installed: {RAY_HINT}; or leave --workers out to evaluate in this "
                          "process")


_KEYS = {"fitness_windows": "fitness.fitness_windows", "race_factor": "fitness.race_factor",
         "race_chunk": "fitness.race_chunk", "canonical_cache": "fitness.canonical_cache",
         "fingerprint_cache": "fitness.fingerprint_cache", "task_combine": "fitness.task_combine"}


def check_task_combine(tasks: Any, combine: str, name: Callable[[str], str]) -> None:
    """The worst task's ratio has no use for task weights: unequal ones are refused, not
    ignored."""
    if combine == "worst" and len({t.weight for t in tasks}) > 1:
        raise ConfigError(f"{name('task_combine')} worst takes the worst task's ratio, so task "
                          "weights do not apply: leave them out, or combine by the mean")


def config_key(name: str) -> str:
    """An option as config.json names it."""
    return f"'{_KEYS.get(name, name)}'"


def _option(name: str) -> str:
    """An option as the command line names it."""
    f = _FIELDS.get(name)
    if f is not None and "flag" in f.metadata:
        return f.metadata["flag"]
    return f"--{name.replace('_', '-')}"


_FIELDS = {f.name: f for f in fields(SearchConfig)}


def _fields_of(settings: Any) -> dict[str, Any]:
    """A settings object's values, as the options of the same names."""
    return {f.name: getattr(settings, f.name) for f in fields(settings)}


def _definition(space: Any) -> dict[str, Any]:
    """A SearchSpace as config.json stores it (lists, no private fields)."""
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(space).items()
            if not k.startswith("_")}


def metric_tree(spec: str) -> Any:
    """A named metric of a search (baseline, reference): its tree; SparseGPT is refused."""
    if spec == SPARSEGPT:
        raise ConfigError("sparsegpt is a pruning method, not a metric; it cannot be a search "
                          "baseline or reference (compare it with `pruner-zero compare`)")
    return resolved_tree(spec)


def recipe_tags(space: Any) -> tuple[str, ...] | None:
    """A recipe space (text with commas, or a list) as checked, normalised tags, each once."""
    if space is None:
        return None
    items = [t.strip() for t in space.split(",")] if isinstance(space, str) else space
    if not isinstance(items, (list, tuple)) or not items or \
            not all(isinstance(t, str) and t.strip() for t in items):
        raise ConfigError(f"--recipe-space must list recipes such as uniform/none,uniform/obs, "
                          f"got {space!r}")
    return tuple(dict.fromkeys(parse_tag(t).tag() for t in items))


def baseline_metric(spec: str) -> Any:
    """A baseline: its tree, or SPARSEGPT (a method measured beside the metrics)."""
    return SPARSEGPT if spec == SPARSEGPT else metric_tree(spec)


def baseline_formula(spec: str) -> str:
    return SPARSEGPT if spec == SPARSEGPT else format_formula(metric_tree(spec))


def seed_trees(names: Sequence[str], space: Any) -> list[Any]:
    """Built-in or user metrics that start in the initial population, parsed over the space's ops."""
    trees = []
    for name in names:
        tree = resolved_tree(name, "a seed metric")
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
