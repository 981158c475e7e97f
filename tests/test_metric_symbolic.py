"""Sympy form, LaTeX and canonical keys."""

import random
import time

import pytest
import sympy
from deap import gp

from pruner_zero.metric.io import parse_formula
from pruner_zero.metric.space import load_space
from pruner_zero.metric.symbolic import G, W, X, canonical_key, to_latex, to_sympy


def key(formula):
    return canonical_key(parse_formula(formula))


@pytest.mark.parametrize("a, b", [
    ("mul(W, G)", "mul(G, W)"),
    ("sqr(W)", "pow(W)"),
    ("sqr(W)", "mul(W, W)"),
    ("add(W, sub(G, G))", "W"),
    ("neg(neg(W))", "W"),
    ("abs(W)", "W"),
    ("sqrt(sqr(W))", "W"),
    ("mms(zsn(G))", "mms(G)"),
    ("mms(mul(2, G))", "mms(G)"),
    ("log(neg(sub(W, G)))", "log(sub(G, W))"),
    ("div(W, neg(G))", "div(W, G)"),
    ("mul(abs(mul(W, W)), mms(G))", "mul(mms(G), sqr(W))"),
])
def test_equivalent_trees_share_a_key(a, b):
    assert key(a) == key(b)


@pytest.mark.parametrize("a, b", [
    ("mul(W, G)", "add(W, G)"),
    ("sub(W, G)", "sub(G, W)"),
    ("exp(W)", "W"),
    ("log(exp(W))", "W"),
    ("mms(neg(G))", "mms(G)"),
    # Same symbols but different broadcast shapes: the scores differ.
    ("div(X, X)", "div(X, add(X, sub(W, W)))"),
    ("zsn(X)", "zsn(add(X, sub(G, G)))"),
])
def test_different_metrics_get_different_keys(a, b):
    assert key(a) != key(b)


def test_to_sympy_exact_equivalents():
    assert to_sympy(parse_formula("mul(W, add(sqrt(X), mul(100, G)))")) == W * (sympy.sqrt(X) + 100 * G)
    assert to_sympy(parse_formula("sqrt(neg(W))")) == sympy.sqrt(W)
    assert to_sympy(parse_formula("tanh(sub(W, G))")) == sympy.tanh(W - G)
    assert to_sympy(parse_formula("mul(0.5, mul(2, W))")) == W


def test_latex_names_the_custom_ops():
    tex = to_latex(parse_formula("mul(abs(mul(W, W)), mms(G))"))
    assert tex == r"W^{2} \operatorname{mms}\left(G\right)"
    tex = to_latex(parse_formula("div(zsn(log(sub(W, G))), exp(X))"))
    assert r"\operatorname{zsn}" in tex and r"\lVert" in tex and r"10^{-3}" in tex and r"\min" in tex


def test_keys_are_fast_and_deterministic():
    pset = load_space("paper").pset()
    random.seed(0)
    trees = [gp.PrimitiveTree(gp.genHalfAndHalf(pset, 2, 6)) for _ in range(100)]
    canonical_key(trees[0])  # warm sympy's caches
    worst = 0.0
    for tree in trees:
        start = time.perf_counter()
        k = canonical_key(tree)
        worst = max(worst, time.perf_counter() - start)
        assert k == canonical_key(parse_formula(str(tree)))
    assert worst < 0.05
