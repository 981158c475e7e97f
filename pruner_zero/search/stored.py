"""A run's config.json: a ``SearchConfig`` written (``config_dict``) and read back
(``read_config``, after migrating the older layouts this version still reads), and the resume
rule (``check_resume``): a resume continues with the stored options and refuses any option given
another value, so nothing typed is silently ignored."""
from __future__ import annotations

import time
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any, Mapping

from pruner_zero.errors import ConfigError, MetricError
from pruner_zero.recipe import PLAIN, Recipe
from pruner_zero.runtime import Runtime
from pruner_zero.search.config import SearchConfig, config_key
from pruner_zero.search.layout import CONFIG
from pruner_zero.search.options import DEFAULT_SPACE, FREE_ON_RESUME, resume_refusal
from pruner_zero.search.settings import ConfirmSettings, FitnessSettings, GPSettings
from pruner_zero.tasks import Task, typed_task
from pruner_zero.workbench import Workbench

__all__ = ["CONFIG_VERSION", "check_resume", "config_dict", "migrated", "read_config"]

CONFIG_VERSION = 6
"""config.json's layout; ``read_config`` reads this version and migrates older ones it knows
(2 -> 3: the runtime gained stats_device and stats_dtype; a version-2 run had them at their
defaults, statistics beside the weights in float32. 3 -> 4: confirm_windows and eval_windows;
a version-3 run confirmed and reported on whole splits, null. 4 -> 5: the recipe; a version-4
run pruned uniformly without an update. 5 -> 6: fitness.task_combine; a version-5 run combined
its tasks by the weighted geometric mean)."""


def migrated(d: Mapping[str, Any]) -> Mapping[str, Any]:
    """An older config.json as the current version says the same run (anything else unchanged)."""
    if not isinstance(d, Mapping):
        return d
    if d.get("version") == 2 and isinstance(d.get("runtime"), dict):
        d = {**d, "version": 3,
             "runtime": {**d["runtime"], "stats_device": None, "stats_dtype": "float32"}}
    if d.get("version") == 3:
        d = {**d, "version": 4, "confirm_windows": None, "eval_windows": None}
    if d.get("version") == 4:
        d = {**d, "version": 5, "recipe": PLAIN.as_dict()}
    if d.get("version") == 5 and isinstance(d.get("fitness"), dict):
        d = {**d, "version": 6, "fitness": {"task_combine": "mean", **d["fitness"]}}
    return d


def config_dict(config: SearchConfig) -> dict[str, Any]:
    """config.json: what a resume needs, every value resolved (tasks, space, GP)."""
    if config.task_list is None or config.space_definition is None:
        raise ConfigError("a search config is stored once its tasks and space are resolved")
    confirm = config.confirm_settings()
    return {
        "command": "search", "version": CONFIG_VERSION,
        "created": config.created or time.strftime("%Y-%m-%dT%H:%M:%S"),
        "tasks": [t.as_dict() for t in config.task_list],
        "runtime": config.runtime().as_dict(), "compare": config.compare,
        "cache_dir": None if config.cache_dir is None else str(config.cache_dir),
        "space": {"spec": str(config.space), "definition": dict(config.space_definition)},
        "gp": config.gp_settings().as_dict(),
        "fitness": config.fitness_settings().as_dict(),
        "reference": config.reference, "baselines": list(config.baselines or ()),
        "confirm_seeds": confirm.confirm_seeds, "confirm_windows": confirm.confirm_windows,
        "eval_windows": confirm.eval_windows, "seed_metrics": list(config.seed_metrics or ()),
        "final_top": confirm.final_top, "allow_partial": config.allow_partial,
        "recipe": config.recipe().as_dict(),
    }


def read_config(d: Mapping[str, Any], path: Path | str = CONFIG, *, check: bool = True,
                **run: Any) -> SearchConfig:
    """A run's config.json, after every value in it has passed the checks a new run's options
    pass: a hand-edited or damaged file is refused by name before any work, not hours later.
    ``run`` gives the options that are free on a resume (out, progress, ...). ``check=False``:
    the structure only (a worker, given what the driver checked, and where the driver's metric
    files may not be)."""
    d = migrated(d)
    version = d.get("version") if isinstance(d, Mapping) else None
    if version != CONFIG_VERSION:
        raise ConfigError(f"{Path(path).parent} was made by an older pruner-zero (config "
                          f"version {version}); its format cannot be resumed, start a new run")
    try:
        config = SearchConfig(**run, **_options(d), created=d.get("created"))
        if not check:
            return config
        for key in ("fitness_windows", "confirm_windows", "eval_windows"):
            if getattr(config, key) == 0:
                raise ConfigError(f"{config_key(key)} must be a positive integer or null")
        return config.checked(stored=True)
    except (ConfigError, MetricError, TypeError, ValueError, KeyError) as exc:
        kind = "" if isinstance(exc, (ConfigError, MetricError)) else type(exc).__name__ + ": "
        raise ConfigError(f"{path} is damaged ({kind}{exc}); nothing was changed: restore the "
                          "file, or start a new run with --out") from None


def _options(d: Mapping[str, Any]) -> dict[str, Any]:
    """The options a current config.json stores, by their SearchConfig names (the structure
    checked here, the values by ``SearchConfig.checked``)."""
    def need(ok: bool, what: str) -> None:
        if not ok:
            raise ConfigError(what)

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
    need(isinstance(d.get("fitness"), dict), "'fitness' must be a mapping")
    unknown = sorted(set(d["gp"]) - {f.name for f in fields(GPSettings)})
    need(not unknown, f"GPSettings.__init__() got an unexpected keyword argument "
                      f"{unknown[0] if unknown else ''!r}")
    need(isinstance(d.get("baselines"), list), "'baselines' must be a list of metrics")
    need(isinstance(d.get("seed_metrics"), list), "'seed_metrics' must be a list of metrics")
    confirm = {f.name: d.get(f.name) for f in fields(ConfirmSettings)}
    recipe = Recipe.from_dict(d.get("recipe"), "'recipe'")
    return {"task_list": tuple(Task.from_dict(t) for t in d["tasks"]), **asdict(runtime),
            "compare": d.get("compare"), "cache_dir": d.get("cache_dir"),
            "space": space.get("spec", DEFAULT_SPACE), "space_definition": space["definition"],
            **d["gp"], **asdict(FitnessSettings.from_dict(d["fitness"])), **confirm,
            "reference": d.get("reference"), "baselines": d["baselines"],
            "seed_metrics": d["seed_metrics"], "allow_partial": d.get("allow_partial", False),
            "allocation": recipe.allocation, "owl_m": recipe.allocation.owl_m,
            "owl_lambda": recipe.allocation.owl_lambda, "update": recipe.update or "none"}


def check_resume(config: SearchConfig) -> None:
    """A resume continues with the options in the run's config.json: an option of ``config``
    given another value than its default would be silently ignored, so it is refused (the
    command line refuses every flag it was given instead, a default value included)."""
    baseline = SearchConfig()
    changed = [f.name for f in fields(config)
               if f.name not in FREE_ON_RESUME and f.compare
               and not (f.name == "model" and isinstance(config.model, Workbench))
               and getattr(config, f.name) != getattr(baseline, f.name)]
    if changed:
        raise resume_refusal("resume=True", sorted(changed))
