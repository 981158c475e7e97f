"""A pruning recipe beyond its metric: how the sparsity is spread over the blocks (an
``Allocation``) and what the kept weights become (``update``). With its metric it is what a
search exports and ``prune`` reuses. A recipe file is a metric file with the recipe beside it;
a plain recipe (uniform, no update) is written as a plain metric file, so the paper's format
stays what a plain search exports.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .allocation import Allocation
from .errors import ConfigError, MetricError
from .files import atomic_write_json, read_json, user_path
from .metric.io import (MAX_NESTING, RECIPE_KEYS, format_formula, from_paper_json,
                        is_recipe_file, load_metric_file, parse_formula, to_paper_json)

UPDATES = (None, "obs", "sweep", "lsq", "sweep-lsq")
"""None: the kept weights stay; "obs": reconstructed under the metric's masks by SparseGPT's
solver, block after block on the calibration windows; "sweep": the same solver, but the metric
chooses each block's mask inside it, on the weights as updated so far (SparseGPT's own way of
choosing: with ``mul(sqr(W), H)`` and blocks ranked over all their rows, or N:M, it is
SparseGPT up to SparseGPT's rounding of one weight per block); "lsq" and "sweep-lsq": the masks
of "obs" and "sweep", the kept weights then solved exactly by least squares (each row's best
reconstruction of the layer's outputs under its mask, ``sparsegpt.lsq_weight``) instead of by
the solver's one sweep over the columns."""
SWEEPS = ("sweep", "sweep-lsq")
"""The updates whose masks the metric chooses inside SparseGPT's sweep."""
LSQS = ("lsq", "sweep-lsq")
"""The updates that solve the kept weights exactly (``sparsegpt.lsq_weight``)."""
UPDATE_NAMES = "none, obs, sweep, lsq or sweep-lsq"


def checked_update(update: Any) -> str | None:
    """None or one of UPDATES ("none" is None)."""
    update = None if update in (None, "none") else update
    if update not in UPDATES:
        raise ConfigError(f"--update must be {UPDATE_NAMES}, got {update!r}")
    return update


@dataclass(frozen=True)
class Recipe:
    """What a prune does besides scoring: ``allocation`` and ``update``."""

    allocation: Allocation = field(default_factory=Allocation)
    update: str | None = None

    def checked(self) -> "Recipe":
        if not isinstance(self.allocation, Allocation):
            raise ConfigError(f"a recipe's allocation must be an Allocation, got "
                              f"{self.allocation!r}")
        return Recipe(self.allocation.checked(), checked_update(self.update))

    @property
    def plain(self) -> bool:
        """Uniform and no update: what a metric alone does."""
        return self.allocation.uniform and self.update is None

    def describe(self) -> str:
        return f"{self.allocation.describe()} / update {self.update or 'none'}"

    def as_dict(self) -> dict[str, Any]:
        return {"allocation": self.allocation.as_dict(), "update": self.update or "none"}

    @classmethod
    def from_dict(cls, d: Any, where: str) -> "Recipe":
        if not isinstance(d, dict):
            raise ConfigError(f"{where}: a recipe is an object with allocation and update")
        allocation = Allocation.from_dict(d.get("allocation", {"kind": "uniform"}), where)
        try:
            update = checked_update(d.get("update"))
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        return cls(allocation, update)

    def tag(self) -> str:
        """Short text of a searchable recipe: ``uniform/obs``, ``owl:5:0.04/none``."""
        a = self.allocation
        if a.kind == "given":
            raise ConfigError("a given allocation has no tag: it is not a search gene")
        alloc = "uniform" if a.uniform else f"owl:{_exact(a.owl_m)}:{_exact(a.owl_lambda)}"
        return f"{alloc}/{self.update or 'none'}"


def _exact(x: float) -> str:
    """A number as short as it reads back exactly (5, 0.04, 0.04000001)."""
    text = repr(float(x))
    return text[:-2] if text.endswith(".0") else text


def parse_tag(text: str) -> Recipe:
    """The recipe a tag names (``Recipe.tag``'s inverse), checked."""
    alloc, sep, update = str(text).strip().partition("/")
    parts = alloc.split(":")
    try:
        if not sep or parts[0] not in ("uniform", "owl") or \
                (parts[0] == "uniform" and len(parts) != 1) or \
                (parts[0] == "owl" and len(parts) not in (1, 3)):
            raise ValueError
        allocation = Allocation("uniform") if parts[0] == "uniform" else \
            Allocation("owl") if len(parts) == 1 else \
            Allocation("owl", float(parts[1]), float(parts[2]))
    except ValueError:
        raise ConfigError(f"recipe {text!r}: write ALLOCATION/UPDATE, ALLOCATION uniform, owl or "
                          f"owl:M:LAMBDA and UPDATE {UPDATE_NAMES}, e.g. owl:5:0.04/obs") from None
    return Recipe(allocation, update).checked()


PLAIN = Recipe()
"""Uniform, no update: what a metric alone does."""


def merged(found: Recipe | None, allocation: Allocation | None, update: str | None,
           where: str = "the metric") -> Recipe:
    """The recipe of a prune: a recipe file's, with flags that only repeat it; a flag that
    contradicts the file is refused (which one wins would be a guess)."""
    given = Recipe(allocation or Allocation(), checked_update(update)).checked()
    if found is None:
        return given
    if allocation is not None and allocation.checked() != found.allocation:
        raise ConfigError(f"{where} is a recipe with allocation {found.allocation.describe()}; "
                          f"--allocation {allocation.describe()} contradicts it (leave it out)")
    if update is not None and checked_update(update) != found.update:
        raise ConfigError(f"{where} is a recipe with update {found.update or 'none'}; "
                          f"--update {update} contradicts it (leave it out)")
    return found


def recipe_json(tree: Any, recipe: Recipe) -> dict[str, Any]:
    """A metric file (the paper's format) for a plain recipe, else a recipe file."""
    if recipe.plain:
        return to_paper_json(tree)
    return {"formula": format_formula(tree), "metric": to_paper_json(tree), **recipe.as_dict()}


def save_recipe(tree: Any, recipe: Recipe, path: str | Path) -> None:
    atomic_write_json(path, recipe_json(tree, recipe))


def load_recipe(path: str | Path) -> tuple[Any, Recipe | None]:
    """(tree, recipe) of a recipe file, (tree, None) of a plain metric file."""
    if not user_path(path).is_file():  # the metric file's own error
        return load_metric_file(path), None
    obj = read_json(path, "metric file", MetricError, max_depth=MAX_NESTING + 4)
    if not is_recipe_file(obj):
        return load_metric_file(path), None
    try:
        if isinstance(obj.get("formula"), str):
            tree = parse_formula(obj["formula"])
        elif "metric" in obj:
            tree = from_paper_json(obj["metric"])
        else:
            raise MetricError("a recipe file needs its metric: 'formula' (text) or 'metric' "
                              "(the paper's JSON)")
        recipe = Recipe.from_dict({k: obj[k] for k in RECIPE_KEYS if k in obj}, str(path))
    except (MetricError, ConfigError) as exc:
        raise MetricError(f"recipe file {path}: {exc}") from None
    return tree, recipe
