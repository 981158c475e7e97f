"""A candidate of the search: its metric tree and, when the search's genome holds the recipe
(``--recipe-space``), the recipe it is pruned under (an individual's ``recipe``; None: the run's
one recipe). What names a candidate in records, checkpoints and workers' jobs is its text: the
formula, then `` @ `` and the recipe's tag. Its cache key is the canonical key with the same tag,
so an equal metric under another recipe is another candidate."""
from __future__ import annotations

from typing import Any

from pruner_zero.metric.io import format_formula, parse_formula
from pruner_zero.metric.symbolic import canonical_key
from pruner_zero.recipe import Recipe, parse_tag
from pruner_zero.search.operators import make_individual

SEPARATOR = " @ "


def recipe_of(ind: Any) -> Recipe | None:
    """The candidate's own recipe, or None (a plain tree, or a search with one recipe)."""
    return getattr(ind, "recipe", None)


def candidate_text(ind: Any) -> str:
    recipe = recipe_of(ind)
    formula = format_formula(ind)
    return formula if recipe is None else f"{formula}{SEPARATOR}{recipe.tag()}"


def candidate_key(ind: Any) -> str:
    recipe = recipe_of(ind)
    key = canonical_key(ind)
    return key if recipe is None else f"{key}{SEPARATOR}{recipe.tag()}"


def masks_suffix(ind: Any) -> str:
    """What a fingerprint adds to the masks: the update (an allocation shows in the masks).
    The sweep's masks rebuilt by "obs" ("lsq") are the model of "sweep" ("sweep-lsq"), bit for
    bit: one suffix."""
    recipe = recipe_of(ind)
    if recipe is None:
        return ""
    update = {"sweep": "obs", "sweep-lsq": "lsq"}.get(recipe.update, recipe.update)
    return f"{SEPARATOR}{update or 'none'}"


def parse_candidate(text: str, pset: Any = None) -> Any:
    """An individual from a candidate's text (its recipe None when the text has no tag)."""
    formula, sep, tag = text.partition(SEPARATOR)
    ind = make_individual(parse_formula(formula, pset))
    ind.recipe = parse_tag(tag) if sep else None
    return ind
