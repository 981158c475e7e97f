"""Primitive ops and tree evaluation match direct torch computations."""

import pickle

import pytest
import torch

from pruner_zero.errors import MetricError
from pruner_zero.metric.io import parse_formula, resolve_metric
from conftest import scores_of
from pruner_zero.metric.tree import check_scores, height, leaves, size

from pruner_zero.metric import registry

UNARY = {n: registry.op(n).torch for n in registry.names(1)}
BINARY = {n: registry.op(n).torch for n in registry.names(2)}


@pytest.fixture()
def xy():
    g = torch.Generator().manual_seed(0)
    return torch.randn(6, 5, generator=g) * 3, torch.randn(6, 5, generator=g)


def test_op_tables_have_exactly_the_paper_ops():
    assert list(UNARY) == ["sqr", "neg", "abs", "log", "exp", "sqrt", "tanh", "pow", "skp", "mms", "zsn"]
    assert list(BINARY) == ["add", "sub", "mul", "div"]
    assert {n: o.arity for n, o in registry.OPS.items()} == \
        {**{k: 1 for k in UNARY}, **{k: 2 for k in BINARY}}


def test_unary_ops_match_their_definitions(xy):
    x, _ = xy
    n = x.numel()
    mean = x.sum() / n
    std = torch.sqrt(((x - mean) ** 2).sum() / (n - 1))  # unbiased, written out
    lo, hi = x.flatten().sort().values[[0, -1]]
    expected = {
        "sqr": x * x, "neg": 0 - x, "abs": torch.where(x < 0, -x, x),
        "log": torch.log(torch.where(x < 0, -x, x) + 0.001),
        "exp": torch.exp(torch.minimum(x, torch.tensor(100.0))),
        "sqrt": torch.where(x < 0, -x, x) ** 0.5, "tanh": torch.tanh(x), "pow": x * x, "skp": x,
        "mms": (x - lo) / (hi - lo), "zsn": (x - mean) / std,
    }
    for name, want in expected.items():
        torch.testing.assert_close(UNARY[name](x), want, msg=name)


def test_exp_is_clamped_at_100():
    big = torch.tensor([50.0, 100.0, 200.0], dtype=torch.float64)
    out = UNARY["exp"](big)
    assert out[2] == out[1] == torch.exp(torch.tensor(100.0, dtype=torch.float64))
    assert out[0] == torch.exp(torch.tensor(50.0, dtype=torch.float64))


def test_mms_and_zsn_normalise_the_whole_tensor(xy):
    x, _ = xy
    m = UNARY["mms"](x)
    assert m.min() == 0 and m.max() == 1
    z = UNARY["zsn"](x)
    assert abs(float(z.mean())) < 1e-6 and abs(float(z.std()) - 1) < 1e-5


def test_binary_ops_match_their_definitions(xy):
    x, y = xy
    frob = torch.sqrt((y * y).sum())
    torch.testing.assert_close(BINARY["add"](x, y), x + y)
    torch.testing.assert_close(BINARY["sub"](x, y), x - y)
    torch.testing.assert_close(BINARY["mul"](x, y), x * y)
    torch.testing.assert_close(BINARY["div"](x, y), x / frob)


def test_binary_ops_broadcast_and_div_uses_norm_of_broadcast_divisor(xy):
    x, _ = xy
    row = torch.rand(1, 5) + 0.1
    torch.testing.assert_close(BINARY["mul"](x, row), x * row)
    # As in the original repo: the divisor is broadcast to [6, 5] before its norm is taken.
    torch.testing.assert_close(BINARY["div"](x, row), x / (torch.sqrt(torch.tensor(6.0)) * row.norm()))


@pytest.fixture()
def wgx():
    g = torch.Generator().manual_seed(1)
    W = torch.randn(8, 6, generator=g).abs()
    G = torch.rand(8, 6, generator=g)
    X = torch.rand(6, generator=g) + 0.01
    return W, G, X


def test_x_only_metric_is_expanded_to_weight_shape(wgx):
    W, G, X = wgx
    scores = scores_of(parse_formula("mms(X)"), W, G, X)
    assert scores.shape == W.shape and scores.dtype == torch.float32
    want = (X - X.min()) / (X.max() - X.min())
    for row in scores:
        torch.testing.assert_close(row, want)


def test_builtin_wanda_and_gblm_equal_direct_formulas(wgx):
    W, G, X = wgx
    signed = W * torch.where(torch.rand(W.shape) < 0.5, -1.0, 1.0)
    _, wanda = resolve_metric("wanda")
    torch.testing.assert_close(scores_of(wanda, signed.abs(), G, X), signed.abs() * torch.sqrt(X).view(1, -1))
    _, gblm = resolve_metric("gblm")
    torch.testing.assert_close(scores_of(gblm, W, G, X), W * (X.sqrt().view(1, -1) + 100 * G))
    _, mag = resolve_metric("magnitude")
    torch.testing.assert_close(scores_of(mag, W, G, X), W)


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
