"""A search's settings by role, each self-validating and light (no torch, no deap): the GP
loop (``GPSettings``), how a candidate is measured (``FitnessSettings``) and the search's tail
(``ConfirmSettings``). ``SearchConfig`` is composed of them: it builds each from its options
(one flag each) and lets each check its own."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import TYPE_CHECKING, Any, Callable, Mapping

from pruner_zero.errors import ConfigError
from pruner_zero.search.options import (DEFAULT_CONFIRM_SEEDS, DEFAULT_CONFIRM_WINDOWS,
                                        DEFAULT_FINAL_TOP, DEFAULT_FITNESS_WINDOWS,
                                        DEFAULT_REPORT_WINDOWS, MAX_SEEDS, TASK_COMBINES)
from pruner_zero.windows import window_budget

if TYPE_CHECKING:
    from pruner_zero.metric.space import SearchSpace


@dataclass(frozen=True)
class GPSettings:
    """Parameters of the GP loop; defaults are meant for a first search on one GPU or a CPU."""

    population: int = 20
    generations: int = 10
    tournament: int = 3
    cx_prob: float = 0.5
    mut_prob: float = 0.3
    elite: int = 2
    hof_size: int = 10
    max_height: int | None = None  # None: the search space's max_height
    seed: int = 0
    polish: int = 3  # hall-of-fame metrics whose shrink neighbours are tried at the end
    recipe_space: tuple[str, ...] | None = None  # recipe genes (tags); None: the run's one recipe

    def checked(self, space: SearchSpace) -> "GPSettings":
        """A copy with max_height resolved; ConfigError for the first out-of-range value."""
        def need(ok: bool, message: str) -> None:
            if not ok:
                raise ConfigError(message)

        for name in ("population", "generations", "tournament", "elite", "hof_size", "seed", "polish"):
            value = getattr(self, name)
            need(isinstance(value, int) and not isinstance(value, bool),
                 f"--{name.replace('_', '-')} must be an integer, got {value!r}.")
        need(self.population >= 2, f"--population must be at least 2, got {self.population}.")
        need(self.generations >= 0, f"--generations must be at least 0, got {self.generations}.")
        need(1 <= self.tournament <= self.population,
             f"--tournament must be between 1 and the population ({self.population}), "
             f"got {self.tournament}.")
        for name in ("cx_prob", "mut_prob"):
            value = getattr(self, name)
            need(isinstance(value, (int, float)) and 0.0 <= value <= 1.0,
                 f"--{name.replace('_', '-')} must be between 0 and 1, got {value!r}.")
        need(self.hof_size >= 1, f"--hof-size must be at least 1, got {self.hof_size}.")
        need(self.polish >= 0, f"--polish must be at least 0, got {self.polish}.")
        need(0 <= self.elite < self.population,
             f"--elite must be between 0 and population - 1 ({self.population - 1}), got {self.elite}.")
        need(self.elite <= self.hof_size,
             f"--elite ({self.elite}) cannot exceed --hof-size ({self.hof_size}): elites come from it.")
        need(self.recipe_space is None or (
            isinstance(self.recipe_space, (list, tuple)) and len(self.recipe_space) >= 1
            and all(isinstance(t, str) for t in self.recipe_space)),
            f"--recipe-space must be a list of recipes, got {self.recipe_space!r}.")
        height = space.max_height if self.max_height is None else self.max_height
        need(isinstance(height, int) and height >= space.init_max_depth,
             f"--max-height must be an integer >= the space's init_max_depth "
             f"({space.init_max_depth}), got {height!r}.")
        return replace(self, max_height=height, polish=min(self.polish, self.hof_size),
                       recipe_space=None if self.recipe_space is None else tuple(self.recipe_space))

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if d["recipe_space"] is not None:
            d["recipe_space"] = list(d["recipe_space"])
        return d


def whole_number(v: Any, low: int, high: int | None = None) -> bool:
    """An int (not a bool) from ``low`` to ``high`` (None: no upper bound)."""
    return isinstance(v, int) and not isinstance(v, bool) and v >= low and (high is None or v <= high)


def flag_name(name: str) -> str:
    """An option as the command line names it by default."""
    return f"--{name.replace('_', '-')}"


@dataclass(frozen=True)
class FitnessSettings:
    """How a candidate is measured: its windows of the selection split (spread evenly; None:
    all), racing against the hall of fame, and the two exact caches."""

    fitness_windows: int | None = DEFAULT_FITNESS_WINDOWS
    race_factor: float | None = None
    race_chunk: int = 16
    canonical_cache: bool = True
    fingerprint_cache: bool = True
    task_combine: str = "mean"  # TASK_COMBINES

    def checked(self, name: Callable[[str], str] = flag_name) -> "FitnessSettings":
        """A copy with the window budget normalised (0: None); ConfigError for the first bad
        value, named by ``name`` (a flag, or a config.json key)."""
        race = self.race_factor
        if race is not None and not (isinstance(race, (int, float)) and not isinstance(race, bool)
                                     and math.isfinite(race) and race >= 1.0):
            raise ConfigError(f"{name('race_factor')} must be at least 1 (or left off), got {race}.")
        if not whole_number(self.race_chunk, 1):
            raise ConfigError(f"{name('race_chunk')} must be a positive integer, got "
                              f"{self.race_chunk!r}.")
        budget = window_budget(self.fitness_windows, name("fitness_windows"))
        for key in ("canonical_cache", "fingerprint_cache"):
            if not isinstance(getattr(self, key), bool):
                raise ConfigError(f"{name(key)} must be true or false, got {getattr(self, key)!r}.")
        if self.task_combine not in TASK_COMBINES:
            raise ConfigError(f"{name('task_combine')} must be one of {', '.join(TASK_COMBINES)}, "
                              f"got {self.task_combine!r}.")
        return replace(self, fitness_windows=budget)

    def as_dict(self) -> dict[str, Any]:
        """config.json's 'fitness' (the windows are always spread: said for the reader)."""
        return {"fitness_windows": self.fitness_windows, "windows_spread": True,
                "race_factor": self.race_factor, "race_chunk": self.race_chunk,
                "canonical_cache": self.canonical_cache,
                "fingerprint_cache": self.fingerprint_cache, "task_combine": self.task_combine}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "FitnessSettings":
        """config.json's 'fitness' (unchecked: ``checked`` names what is wrong)."""
        return cls(**{f.name: d.get(f.name) for f in fields(cls)})


@dataclass(frozen=True)
class ConfirmSettings:
    """A search's tail: the top ``final_top`` hall-of-fame metrics re-measured over
    ``confirm_seeds`` calibration seeds on ``confirm_windows`` of the selection split, then the
    best and the baselines on ``eval_windows`` of the report split (None: every window)."""

    final_top: int = DEFAULT_FINAL_TOP
    confirm_seeds: int = DEFAULT_CONFIRM_SEEDS
    confirm_windows: int | None = DEFAULT_CONFIRM_WINDOWS
    eval_windows: int | None = DEFAULT_REPORT_WINDOWS

    def checked(self, name: Callable[[str], str] = flag_name) -> "ConfirmSettings":
        """A copy with the window budgets normalised; ConfigError for the first bad value."""
        if not whole_number(self.final_top, 0):
            raise ConfigError(f"{name('final_top')} must be a non-negative integer, got "
                              f"{self.final_top!r}.")
        if not whole_number(self.confirm_seeds, 1, MAX_SEEDS):
            raise ConfigError(f"{name('confirm_seeds')} must be an integer from 1 to {MAX_SEEDS}, "
                              f"got {self.confirm_seeds!r}.")
        return replace(self, **{key: window_budget(getattr(self, key), name(key))
                                for key in ("confirm_windows", "eval_windows")})
