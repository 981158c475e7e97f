"""``SearchConfig``: a search's options (``options.SearchOptions``) checked in one place.

The CLI builds one from its flags (``cli.search.config_from_args``), ``search()`` takes one (or
keywords that become one, ``from_options``), and a run's config.json is one
(``to_dict``/``from_dict``, its layout's versions in ``stored``): a resume continues with the
stored config and refuses any option given another value (``check_resume``), so nothing typed
is silently ignored.
"""
from __future__ import annotations

import importlib.util
import math
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from pruner_zero.errors import ConfigError, MetricError
from pruner_zero.methods import metric_tree as resolved_tree
from pruner_zero.metric.io import format_formula, parse_formula, split_metric_list
from pruner_zero.metric.space import SearchSpace, load_space
from pruner_zero.runtime import Runtime
from pruner_zero.search.options import (DEFAULT_SPACE, FREE_ON_RESUME, MAX_SEEDS, SearchOptions,
                                        resume_refusal)
from pruner_zero.search.settings import GPSettings
from pruner_zero.search.stored import CONFIG_VERSION, migrated
from pruner_zero.sparsegpt import SPARSEGPT
from pruner_zero.tasks import TASK_KEYS, Task, typed_task
from pruner_zero.windows import window_budget
from pruner_zero.workbench import Workbench

__all__ = ["CONFIG_VERSION", "MAX_SEEDS", "SearchConfig", "metric_tree", "require_ray",
           "resume_refusal", "seed_trees"]


@dataclass(frozen=True)
class SearchConfig(SearchOptions):
    """``checked()`` validates and normalises; ``to_dict()`` is config.json."""

    # ------------------------------------------------------------ the resume rule

    def check_resume(self, baseline: "SearchConfig | None" = None, how: str = "resume=True",
                     names: Callable[[list[str]], list[str]] = list) -> None:
        """A resume continues with the options in the run's config.json: an option given
        another value than ``baseline``'s (the front end's value for an option left out; the
        defaults for Python) would be silently ignored, so it is refused, named by ``names``."""
        baseline = SearchConfig() if baseline is None else baseline
        changed = [f.name for f in fields(self)
                   if f.name not in FREE_ON_RESUME and f.compare
                   and not (f.name == "model" and isinstance(self.model, Workbench))
                   and getattr(self, f.name) != getattr(baseline, f.name)]
        if changed:
            raise resume_refusal(how, names(sorted(changed)))

    # ------------------------------------------------------------ validation

    def checked(self, stored: bool = False) -> "SearchConfig":
        """Every option checked (the first problem is one ConfigError naming the option: its
        flag, or its config.json key when ``stored``) and normalised: metric lists are tuples
        of names, ``fitness_windows`` None for all, the space loaded (``space_definition``),
        ``max_height``/``polish`` resolved as ``GPSettings.checked`` does."""
        name = _key if stored else _option
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
        if not _count(self.final_top, 0):
            raise ConfigError(f"{name('final_top')} must be a non-negative integer, got "
                              f"{self.final_top!r}.")
        if not _count(self.confirm_seeds, 1, MAX_SEEDS):
            raise ConfigError(f"{name('confirm_seeds')} must be an integer from 1 to {MAX_SEEDS}, "
                              f"got {self.confirm_seeds!r}.")
        race = self.race_factor
        if race is not None and not (isinstance(race, (int, float)) and not isinstance(race, bool)
                                     and math.isfinite(race) and race >= 1.0):
            raise ConfigError(f"{name('race_factor')} must be at least 1 (or left off), got {race}.")
        if not _count(self.race_chunk, 1):
            raise ConfigError(f"{name('race_chunk')} must be a positive integer, got "
                              f"{self.race_chunk!r}.")
        budgets = {key: window_budget(getattr(self, key), name(key))
                   for key in ("fitness_windows", "confirm_windows", "eval_windows")}
        for key in ("canonical_cache", "fingerprint_cache", "allow_partial"):
            if not isinstance(getattr(self, key), bool):
                raise ConfigError(f"{name(key)} must be true or false, got {getattr(self, key)!r}.")
        if self.compare not in ("row", "layer"):
            raise ConfigError(f"{name('compare')} must be row or layer, got {self.compare!r}.")
        self._check_workers(name)
        require_ray(self.workers, self.ray_address)
        if not isinstance(self.reference, str):
            raise ConfigError(f"{name('reference')} must be a metric, got {self.reference!r}.")
        bases = tuple(split_metric_list(self.baselines, "--baselines"))
        for metric in [*bases, self.reference]:
            metric_tree(metric)
        return replace(self, seed_metrics=seeds, baselines=bases, **budgets,
                       max_height=settings.max_height, polish=settings.polish,
                       space_definition=_definition(space_obj))

    def _check_workers(self, name: Callable[[str], str]) -> None:
        """Where the candidates are measured: the options of the Ray pool."""
        if not _count(self.workers, 0):
            raise ConfigError(f"workers must be a non-negative integer, got {self.workers!r}.")
        if self.ray_address is not None and not isinstance(self.ray_address, str):
            raise ConfigError(f"ray_address must be an address or None, got {self.ray_address!r}.")
        if self.worker_cpus is not None and not _count(self.worker_cpus, 1):
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
             f"{_key('cache_dir') if stored else 'cache_dir'} must be a path", self.cache_dir)
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
                f"{_key(key) if stored else key} must be metrics separated by commas or a list "
                "of them", value)

    def gp_settings(self, space: Any = None) -> Any:
        """The GP loop's settings (``run_gp``), checked against ``space`` when given."""
        settings = GPSettings(**{f.name: getattr(self, f.name) for f in fields(GPSettings)})
        return settings if space is None else settings.checked(space)

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

    # ------------------------------------------------------------ config.json

    def to_dict(self) -> dict[str, Any]:
        """config.json: what a resume needs, every value resolved (tasks, space, GP)."""
        if self.task_list is None or self.space_definition is None:
            raise ConfigError("a search config is stored once its tasks and space are resolved")
        gp = {f.name: getattr(self, f.name) for f in fields(GPSettings)}
        return {
            "command": "search", "version": CONFIG_VERSION,
            "created": self.created or time.strftime("%Y-%m-%dT%H:%M:%S"),
            "tasks": [t.as_dict() for t in self.task_list],
            "runtime": self.runtime().as_dict(), "compare": self.compare,
            "cache_dir": None if self.cache_dir is None else str(self.cache_dir),
            "space": {"spec": str(self.space), "definition": dict(self.space_definition)},
            "gp": gp,
            "fitness": {"fitness_windows": self.fitness_windows, "windows_spread": True,
                        "race_factor": self.race_factor, "race_chunk": self.race_chunk,
                        "canonical_cache": self.canonical_cache,
                        "fingerprint_cache": self.fingerprint_cache},
            "reference": self.reference, "baselines": list(self.baselines or ()),
            "confirm_seeds": self.confirm_seeds, "confirm_windows": self.confirm_windows,
            "eval_windows": self.eval_windows, "seed_metrics": list(self.seed_metrics or ()),
            "final_top": self.final_top, "allow_partial": self.allow_partial,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], path: Path | str = "config.json",
                  **run: Any) -> "SearchConfig":
        """A run's config.json, after every value in it has passed the checks a new run's
        options pass: a hand-edited or damaged file is refused by name before any work, not
        hours later. ``run`` gives the options that are free on a resume (out, progress, ...)."""
        d = migrated(d)
        version = d.get("version") if isinstance(d, Mapping) else None
        if version != CONFIG_VERSION:
            raise ConfigError(f"{Path(path).parent} was made by an older pruner-zero (config "
                              f"version {version}); its format cannot be resumed, start a new run")

        def need(ok: bool, what: str) -> None:
            if not ok:
                raise ConfigError(what)

        try:
            need(isinstance(d.get("tasks"), list) and d["tasks"] != []
                 and all(isinstance(t, dict) for t in d["tasks"]), "'tasks' must be a list of tasks")
            for i, t in enumerate(d["tasks"], start=1):
                typed_task(t, f"task {i}")
                need(isinstance(t.get("name"), str) and t["name"], f"task {i} has no name")
            need(len({t["name"] for t in d["tasks"]}) == len(d["tasks"]), "task names repeat")
            need(isinstance(d.get("runtime"), dict), "'runtime' must be a mapping")
            runtime = Runtime(**d["runtime"])
            space = d.get("space")
            need(isinstance(space, dict) and isinstance(space.get("definition"), dict),
                 "'space.definition' must be a mapping")
            need(isinstance(d.get("gp"), dict), "'gp' must be a mapping")
            fit = d.get("fitness")
            need(isinstance(fit, dict), "'fitness' must be a mapping")
            unknown = sorted(set(d["gp"]) - {f.name for f in fields(GPSettings)})
            need(not unknown, f"GPSettings.__init__() got an unexpected keyword argument "
                              f"{unknown[0] if unknown else ''!r}")
            need(isinstance(d.get("baselines"), list), "'baselines' must be a list of metrics")
            need(isinstance(d.get("seed_metrics"), list), "'seed_metrics' must be a list of metrics")
            config = cls(
                **run, task_list=tuple(Task.from_dict(t) for t in d["tasks"]),
                **asdict(runtime), compare=d.get("compare"), cache_dir=d.get("cache_dir"),
                space=space.get("spec", DEFAULT_SPACE), space_definition=space["definition"],
                **d["gp"],
                fitness_windows=fit.get("fitness_windows"), race_factor=fit.get("race_factor"),
                race_chunk=fit.get("race_chunk"), canonical_cache=fit.get("canonical_cache"),
                fingerprint_cache=fit.get("fingerprint_cache"), reference=d.get("reference"),
                baselines=d["baselines"], seed_metrics=d["seed_metrics"],
                confirm_seeds=d.get("confirm_seeds"), final_top=d.get("final_top"),
                confirm_windows=d.get("confirm_windows"), eval_windows=d.get("eval_windows"),
                allow_partial=d.get("allow_partial", False), created=d.get("created"))
            for key in ("fitness_windows", "confirm_windows", "eval_windows"):
                if getattr(config, key) == 0:
                    raise ConfigError(f"{_key(key)} must be a positive integer or null")
            return config.checked(stored=True)
        except (ConfigError, MetricError, TypeError, ValueError, KeyError) as exc:
            kind = "" if isinstance(exc, (ConfigError, MetricError)) else type(exc).__name__ + ": "
            raise ConfigError(f"{path} is damaged ({kind}{exc}); nothing was changed: restore the "
                              "file, or start a new run with --out") from None


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
         "fingerprint_cache": "fitness.fingerprint_cache"}


def _key(name: str) -> str:
    """An option as config.json names it."""
    return f"'{_KEYS.get(name, name)}'"


def _option(name: str) -> str:
    """An option as the command line names it."""
    f = _FIELDS.get(name)
    if f is not None and "flag" in f.metadata:
        return f.metadata["flag"]
    return f"--{name.replace('_', '-')}"


_FIELDS = {f.name: f for f in fields(SearchConfig)}


def _count(v: Any, low: int, high: int | None = None) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= low and (high is None or v <= high)


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
