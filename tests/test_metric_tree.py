"""metric/tree.py: scoring a metric tree on W, G, X (shapes, dtypes, missing inputs, NaN and
constant scores) and the structure helpers."""

import pickle

import pytest
import torch

from conftest import scores_of
from pruner_zero.errors import MetricError
from pruner_zero.metric.io import parse_formula
from pruner_zero.metric.tree import check_scores, height, leaves, size


def test_x_only_metric_is_expanded_to_weight_shape(wgx):
    W, G, X = wgx
    scores = scores_of(parse_formula("mms(X)"), W, G, X)
    assert scores.shape == W.shape and scores.dtype == torch.float32
    want = (X - X.min()) / (X.max() - X.min())
    for row in scores:
        torch.testing.assert_close(row, want)


def test_evaluate_converts_to_float32_and_never_aliases_inputs(wgx):
    W, G, X = wgx
    scores = scores_of(parse_formula("W"), W, G, X)
    scores[0, 0] = -1.0
    assert W[0, 0] != -1.0
    half = scores_of(parse_formula("mul(W, G)"), W.half(), G.half(), X.half())
    assert half.dtype == torch.float32


def test_evaluate_rejects_missing_or_misshaped_inputs(wgx):
    W, G, X = wgx
    with pytest.raises(MetricError, match="no values of X"):
        scores_of(parse_formula("mul(W, X)"), W, G, None)
    with pytest.raises(MetricError, match="no values of G"):
        scores_of(parse_formula("mul(W, G)"), W, None, X)
    with pytest.raises(MetricError, match=r"G has shape \(8, 3\), expected \(8, 6\)"):
        scores_of(parse_formula("mul(W, G)"), W, G[:, :3], X)
    with pytest.raises(MetricError, match="one per input column"):
        scores_of(parse_formula("mul(W, X)"), W, G, X[:3])
    # Unused inputs may be absent.
    scores_of(parse_formula("abs(W)"), W, None, None)


def test_check_scores_rejects_nan_and_constant_scores(wgx):
    W, G, X = wgx
    with pytest.raises(MetricError, match=r"mms\(sub\(W, W\)\) yields NaN/inf"):
        tree = parse_formula("mms(sub(W, W))")
        check_scores(scores_of(tree, W, G, X), tree)
    with pytest.raises(MetricError, match="constant scores"):
        check_scores(scores_of(parse_formula("sub(G, G)"), W, G, X), "sub(G, G)")
    check_scores(scores_of(parse_formula("mul(W, G)"), W, G, X), "mul(W, G)")


def test_size_height_leaves():
    tree = parse_formula("mul(W, add(sqrt(X), mul(100, G)))")
    assert size(tree) == 8
    assert height(tree) == 3
    assert leaves(tree) == {"W", "G", "X"}
    assert leaves(parse_formula("abs(W)")) == {"W"}


def test_trees_with_constants_pickle():
    tree = parse_formula("mul(W, add(sqrt(X), mul(100, G)))")
    again = pickle.loads(pickle.dumps(tree))
    assert str(again) == str(tree)
