"""Sympy form, LaTeX and canonical keys."""

import random

import pytest
import sympy
import torch
from deap import gp

from conftest import random_wgx, scores_of
from pruner_zero.masks import make_mask, parse_structure
from pruner_zero.metric.io import format_formula, parse_formula
from pruner_zero.metric.space import full_pset, load_space
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


def test_keys_are_deterministic():
    """A key is the same computed twice and from the formula's text. (Its speed is a benchmark
    figure, part of a candidate's cost in experiments/bench_fitness.py, not a unit test: a timed
    assertion failed in CI at 0.29 s against 0.05 s on a loaded machine.)"""
    pset = load_space("paper").pset()
    random.seed(0)
    trees = [gp.PrimitiveTree(gp.genHalfAndHalf(pset, 2, 6)) for _ in range(100)]
    for tree in trees:
        k = canonical_key(tree)
        assert k == canonical_key(parse_formula(str(tree))) == canonical_key(tree)


def test_equal_canonical_keys_give_equal_masks():
    """Random trees bucketed by canonical key: every pair in a bucket prunes the same weights."""
    pset = full_pset()
    rng = random.Random(11)
    state = random.getstate()
    random.seed(11)
    try:
        trees = [gp.PrimitiveTree(gp.genHalfAndHalf(pset, 1, 3)) for _ in range(2500)]
    finally:
        random.setstate(state)
    buckets: dict[str, list] = {}
    for t in trees:
        buckets.setdefault(canonical_key(t), {}).setdefault(format_formula(t), t)
    shared = [list(b.values()) for b in buckets.values() if len(b) > 1]
    assert len(shared) > 30  # the check below is not vacuous
    shape = parse_structure("unstructured", 0.5)
    checked = 0
    for group in shared:
        for seed in (rng.randrange(100), rng.randrange(100)):
            W, G, X = random_wgx(seed)
            H = random_wgx(seed + 1000)[2]  # the curvature: one positive value per column
            scores = [scores_of(t, W, G, X, torch.float64, H) for t in group]
            if not all(bool(torch.isfinite(s).all()) and s.max() > s.min() for s in scores):
                continue  # a metric pruning cannot use (NaN, constant) has no masks
            masks = [make_mask(s, shape) for s in scores]
            assert all(torch.equal(masks[0], m) for m in masks[1:]), [format_formula(t) for t in group]
            checked += 1
    assert checked > 30
