"""What a metric argument names, resolved in one place for `prune`, `search`, `compare` and
`show`: a built-in name, a formula, a metric JSON file, a search run directory (its
best_metric.json), or ``sparsegpt`` (a method that also updates weights, not a formula). A file
or a run directory may hold a recipe (a metric with its allocation and update)."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Sequence

from .errors import ConfigError, MetricError
from .files import user_path
from .metric.builtin import BUILTINS
from .metric.io import (format_formula, metric_file_of, parse_formula, resolve_metric,
                        split_metric_list)
from .recipe import Recipe, load_recipe
from .search.layout import BEST_JSON
from .sparsegpt import SPARSEGPT


@dataclass(frozen=True)
class MetricSpec:
    """A resolved metric argument: its label, formula text ('' for SparseGPT), what a prune
    applies (a tree, or the string SPARSEGPT) and, from a recipe file, its ``recipe``."""

    label: str
    formula: str
    metric: Any
    recipe: Recipe | None = None


def _is_formula(text: str) -> bool:
    try:
        parse_formula(text)
    except MetricError:
        return False
    return True


def resolve_metric_spec(spec: str) -> MetricSpec:
    """A built-in name, formula, metric JSON file, ``sparsegpt``, or a search run directory
    (its best_metric.json, labelled ``<dirname>:best``)."""
    spec = spec.strip() if isinstance(spec, str) else spec
    if spec == SPARSEGPT:
        return MetricSpec(SPARSEGPT, "", SPARSEGPT)
    if isinstance(spec, str) and spec and spec not in BUILTINS and user_path(spec).is_dir() \
            and not _is_formula(spec):  # the rule of metric files: a formula wins
        path = user_path(spec)
        best = path / BEST_JSON
        if not best.is_file():
            raise MetricError(f"metric {spec} is a directory without {BEST_JSON}: not a finished "
                              "search run (give the run directory of a search that has ended, "
                              "or a metric file)")
        tree, recipe = load_recipe(best)
        name = path.resolve().name or str(path)
        return MetricSpec(f"{name}:best", format_formula(tree), tree, recipe)
    file = metric_file_of(spec) if isinstance(spec, str) and spec.strip() else None
    if file is not None:
        tree, recipe = load_recipe(file)
        return MetricSpec(file, format_formula(tree), tree, recipe)
    label, tree = resolve_metric(spec)
    return MetricSpec(label, format_formula(tree), tree)


def resolve_metric_specs(specs: str | Sequence[str]) -> list[MetricSpec]:
    """Every spec resolved (the first bad one raises); the same metric listed twice is kept
    once, different metrics with the same label get ``#2``, ``#3``."""
    names = split_metric_list(specs, "--metrics")
    if not names:
        raise ConfigError("--metrics is empty: give metrics separated by commas, e.g. "
                          "magnitude,wanda,'mul(W, sqrt(X))'")
    out: list[MetricSpec] = []
    for name in names:
        m = resolve_metric_spec(name)
        if any(o.label == m.label and o.formula == m.formula and o.recipe == m.recipe
               for o in out):
            continue
        label, k = m.label, 1
        while any(o.label == label for o in out):
            k += 1
            label = f"{m.label}#{k}"
        out.append(replace(m, label=label))
    return out


def metric_tree(spec: str, what: str = "a metric") -> Any:
    """The formula tree a metric argument names; SparseGPT, a method, is refused by name."""
    resolved = resolve_metric_spec(spec)
    if resolved.metric == SPARSEGPT:
        raise MetricError(f"sparsegpt is a pruning method with a weight update, not {what}")
    if resolved.recipe is not None and not resolved.recipe.plain:
        raise MetricError(f"{spec} is a recipe ({resolved.recipe.describe()}), not {what}: give "
                          "it where a whole recipe is used (prune --metric, compare --metrics)")
    return resolved.metric
