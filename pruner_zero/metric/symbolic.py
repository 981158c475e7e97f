"""Metrics as sympy expressions: LaTeX for reports, canonical keys for dedup.

Each op's sympy form and each terminal's symbol come from the registry. Terminals are declared
non-negative where they are (|weight|, a norm, a mean of squares), so sympy itself removes e.g.
``Abs(W)``; ops without an exact sympy equivalent are the opaque functions of ``sympy_forms``.
"""

from __future__ import annotations

import sympy
from deap import gp
from sympy import Rational

from pruner_zero.errors import MetricError
from pruner_zero.metric import registry
from pruner_zero.metric.registry import shape_class
from pruner_zero.metric.sympy_forms import ExpC, Log3, MMS, Norm, ZSN
from pruner_zero.metric.tree import format_number, is_constant, label

W, G, X = (registry.symbol(n) for n in ("W", "G", "X"))


def _constant(value: float) -> sympy.Expr:
    """Exact rational for a constant, so 0.5 * 2 folds to 1."""
    return Rational(format_number(value))


def to_sympy(tree: gp.PrimitiveTree) -> sympy.Expr:
    """The metric as a sympy expression (sympy canonicalises it automatically)."""
    stack: list[tuple[sympy.Expr, int]] = []
    for node in reversed(tree):
        name = label(node)
        if node.arity == 0:
            if is_constant(node):
                stack.append((_constant(node.value), 0))
            else:
                stack.append((registry.symbol(name), registry.terminal(name).shape))
            continue
        args = [stack.pop() for _ in range(node.arity)]
        cls = max(c for _, c in args)
        stack.append((registry.op(name).sympy([a for a, _ in args], cls), cls))
    if len(stack) != 1:
        raise MetricError(f"metric {tree} is malformed.")
    return stack[0][0]


def to_latex(tree: gp.PrimitiveTree) -> str:
    """LaTeX of the metric, with named ops (mms, zsn) and explicit log/exp guards."""
    return sympy.latex(to_sympy(tree))


def canonical_key(tree: gp.PrimitiveTree) -> str:
    """A string equal for metrics sympy proves equal (commutativity, x-x, sqr=pow=x*x, ...).

    Uses only sympy's automatic canonicalisation (no ``simplify``), so it is
    fast; different keys do not prove that two metrics differ.
    """
    return sympy.srepr(to_sympy(tree))


__all__ = ["W", "G", "X", "Log3", "ExpC", "MMS", "ZSN", "Norm", "to_sympy", "to_latex",
           "canonical_key", "shape_class"]
