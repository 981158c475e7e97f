"""Pruning metrics: expression trees over W (|weight|), G (gradient norm), X (activations).

Submodules: ``registry`` (every op and terminal, declared once), ``ops`` (their torch
functions), ``sympy_forms`` (their opaque sympy functions), ``space`` (search spaces, DEAP
primitive sets), ``tree`` (scoring), ``io`` (formula text, paper JSON,
files), ``builtin`` (named metrics), ``symbolic`` (sympy, LaTeX, canonical
keys), ``simplify`` (opposing-operation simplification).
"""

from pruner_zero.metric.builtin import BUILTINS
from pruner_zero.metric.io import (format_formula, from_paper_json, load_metric_file, parse_formula,
                                   resolve_metric, save_metric_json, to_paper_json)
from pruner_zero.metric.simplify import RULES, simplify
from pruner_zero.metric.space import SearchSpace, full_pset, load_space
from pruner_zero.metric.symbolic import canonical_key, to_latex, to_sympy
from pruner_zero.metric.tree import check_scores, height, leaves, score_metric, size

__all__ = [
    "BUILTINS", "RULES", "SearchSpace", "canonical_key", "check_scores", "score_metric", "format_formula",
    "from_paper_json", "full_pset", "height", "leaves", "load_metric_file", "load_space",
    "parse_formula", "resolve_metric", "save_metric_json", "simplify", "size", "to_latex",
    "to_paper_json", "to_sympy",
]
