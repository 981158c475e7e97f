"""The GP loop's settings, self-validating and light (no torch, no deap): ``SearchConfig`` builds
them from its options and checks them against the search space."""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

from pruner_zero.errors import ConfigError

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
        height = space.max_height if self.max_height is None else self.max_height
        need(isinstance(height, int) and height >= space.init_max_depth,
             f"--max-height must be an integer >= the space's init_max_depth "
             f"({space.init_max_depth}), got {height!r}.")
        return replace(self, max_height=height, polish=min(self.polish, self.hof_size))

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
