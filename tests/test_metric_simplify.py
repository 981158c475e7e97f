"""Opposing-operation simplification keeps scores and shrinks trees."""

import random

import pytest
import torch
from deap import gp
from hypothesis import given, strategies as st

from pruner_zero.metric import registry
from pruner_zero.metric.io import parse_formula
from pruner_zero.metric.simplify import RULES, rules_markdown, simplify, simplify_traced
from pruner_zero.metric.space import build_pset, load_space
from conftest import random_wgx, scores_of


def _inputs(seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(12, 10, generator=g, dtype=dtype).abs()
    G = torch.rand(12, 10, generator=g, dtype=dtype)
    X = torch.rand(10, generator=g, dtype=dtype) + 0.01
    return W, G, X


def _assert_same_scores(a, b, rtol=1e-6):
    """Equal wherever both are finite, with a tolerance relative to the score scale."""
    both = torch.isfinite(a) & torch.isfinite(b)
    scale = float(a[both].abs().max()) if both.any() else 1.0
    torch.testing.assert_close(a[both], b[both], rtol=rtol, atol=rtol * max(scale, 1e-12))


def _scores(tree, seed=0):
    W, G, X = _inputs(seed)
    return scores_of(tree, W, G, X, dtype=torch.float64)


@pytest.mark.parametrize("rule", RULES, ids=[r.name for r in RULES])
def test_each_rule_fires_on_its_example_and_shrinks(rule):
    tree = parse_formula(rule.example)
    new, fired = simplify_traced(tree, approximate=True)
    assert rule.name in fired
    assert len(new) < len(tree)
    if rule.exact:
        for seed in range(3):
            _assert_same_scores(_scores(tree, seed), _scores(new, seed))
    else:
        assert str(simplify(tree)) == str(tree)  # approximate rules are off by default


@pytest.mark.parametrize("before, after", [
    ("neg(neg(W))", "W"),
    ("abs(abs(sub(W, G)))", "abs(sub(W, G))"),
    ("abs(mul(W, sqrt(X)))", "mul(W, sqrt(X))"),
    ("abs(mms(G))", "mms(G)"),
    ("sqrt(sqr(sub(W, G)))", "abs(sub(W, G))"),
    ("sqrt(pow(sub(W, G)))", "abs(sub(W, G))"),
    ("sqr(sqrt(sub(W, G)))", "abs(sub(W, G))"),
    ("pow(sqrt(sub(W, G)))", "abs(sub(W, G))"),
    ("sqrt(sqr(W))", "W"),
    ("abs(neg(log(W)))", "abs(log(W))"),
    ("sqr(neg(log(W)))", "sqr(log(W))"),
    ("skp(W)", "W"),
    ("mul(log(W), log(W))", "sqr(log(W))"),
    ("mms(mms(G))", "mms(G)"),
    ("mms(zsn(G))", "mms(G)"),
    ("zsn(zsn(G))", "zsn(G)"),
    ("zsn(mms(G))", "zsn(G)"),
    ("add(W, sub(G, G))", "W"),
    ("add(sub(mul(W, X), mul(W, X)), G)", "G"),
    ("mul(G, sub(log(W), log(W)))", "0"),
    ("mul(abs(mul(W, W)), mms(G))", "mul(sqr(W), mms(G))"),
])
def test_expected_rewrites(before, after):
    tree = parse_formula(before)
    new = simplify(tree)
    assert str(new) == after
    assert len(new) < len(tree)
    _assert_same_scores(_scores(tree), _scores(new))


def test_approximate_rules_change_numbers_only_slightly():
    tree = parse_formula("log(exp(sub(W, G)))")
    new = simplify(tree, approximate=True)
    assert str(new) == "sub(W, G)"
    assert not torch.allclose(_scores(tree), _scores(new), rtol=1e-9, atol=0)
    torch.testing.assert_close(_scores(tree), _scores(new), rtol=0, atol=5e-3)


def test_nothing_to_simplify_returns_an_equal_copy():
    tree = parse_formula("mul(W, sqrt(X))")
    new, fired = simplify_traced(tree)
    assert fired == [] and str(new) == str(tree) and new is not tree


@pytest.mark.parametrize("formula", [
    "zsn(add(X, sub(W, W)))",
    "div(X, add(X, sub(W, W)))",
    "div(X, add(X, mul(G, 0)))",
])
def test_broadcast_shape_is_respected(formula):
    """X is a row; dropping a full-shape zero would change zsn's std and div's norm."""
    tree = parse_formula(formula)
    naive = parse_formula(formula.replace("add(X, sub(W, W))", "X").replace("add(X, mul(G, 0))", "X"))
    assert not torch.allclose(_scores(tree), _scores(naive))  # the guard matters
    _assert_same_scores(_scores(tree), _scores(simplify(tree)))


def test_shape_insensitive_context_still_simplifies():
    tree = parse_formula("mms(add(X, sub(W, W)))")
    assert str(simplify(tree)) == "mms(X)"
    _assert_same_scores(_scores(tree), _scores(simplify(tree)))


def test_pset_forbids_introducing_missing_ops():
    no_sqr = build_pset(("W", "G", "X"), ("abs", "log"), ("mul", "add"))
    tree = parse_formula("mul(log(W), log(W))")
    assert str(simplify(tree, pset=no_sqr)) == str(tree)
    assert str(simplify(tree)) == "sqr(log(W))"


@pytest.mark.parametrize("seed", range(4))
def test_random_trees_keep_their_scores(seed):
    pset = load_space("paper").pset()
    random.seed(seed)
    W, G, X = _inputs(seed)
    fired_any = 0
    for _ in range(150):
        tree = gp.PrimitiveTree(gp.genHalfAndHalf(pset, 2, 6))
        new, fired = simplify_traced(tree)
        assert len(new) <= len(tree)
        if not fired:
            continue
        fired_any += 1
        assert len(new) < len(tree)
        a = scores_of(tree, W, G, X, dtype=torch.float64)
        b = scores_of(new, W, G, X, dtype=torch.float64)
        _assert_same_scores(a, b)
        # float32 (what pruning uses) agrees too, with a looser tolerance.
        _assert_same_scores(scores_of(tree, W, G, X), scores_of(new, W, G, X), rtol=1e-3)
    assert fired_any > 20


def test_rules_are_documented():
    table = rules_markdown()
    for r in RULES:
        assert r.reason and r.before and r.after
        assert f"| {r.name} |" in table
    assert {r.name for r in RULES if not r.exact} == {"log-exp", "exp-log"}


def _trees(max_leaves: int = 6):
    names1, names2 = registry.names(1), registry.names(2)
    leaf = st.sampled_from(["W", "G", "X", "W", "G", "X", "0", "1", "2", "0.5"])

    def extend(children):
        return st.one_of(st.tuples(st.sampled_from(names1), children).map(lambda t: f"{t[0]}({t[1]})"),
                         st.tuples(st.sampled_from(names2), children, children)
                         .map(lambda t: f"{t[0]}({t[1]}, {t[2]})"))

    return st.recursive(leaf, extend, max_leaves=max_leaves)


def _same(a: torch.Tensor, b: torch.Tensor, rtol: float = 1e-6) -> None:
    both = torch.isfinite(a) & torch.isfinite(b)
    assert torch.equal(torch.isfinite(a), torch.isfinite(b)) or not both.all()
    scale = float(a[both].abs().max()) if both.any() else 1.0
    torch.testing.assert_close(a[both], b[both], rtol=rtol, atol=rtol * max(scale, 1e-12))


@given(_trees(), st.integers(0, 3))
def test_exact_oos_rewrites_keep_the_scores(formula, seed):
    tree = parse_formula(formula)
    new = simplify(tree)
    W, G, X = random_wgx(seed)
    _same(scores_of(tree, W, G, X, torch.float64), scores_of(new, W, G, X, torch.float64))
