"""metric/ops.py: the primitive ops match direct torch computations."""

import pytest
import torch

from conftest import BINARY, UNARY


@pytest.fixture()
def xy():
    g = torch.Generator().manual_seed(0)
    return torch.randn(6, 5, generator=g) * 3, torch.randn(6, 5, generator=g)


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
        "rown": torch.stack([r / sum(abs(v) for v in r) for r in x]),
        "coln": torch.stack([c / sum(abs(v) for v in c) for c in x.T]).T,
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


def test_rown_and_coln_express_ria_and_read_their_operands_shape(xy):
    """RIA's score (Zhang et al. 2024) from the two ops, against its definition written out;
    a row X [1, in] and the same X repeated over the rows differ under coln, and every form
    of the metric (sympy key, simplification) keeps them apart."""
    from pruner_zero.metric.builtin import BUILTINS
    from pruner_zero.metric.io import parse_formula
    from pruner_zero.metric.simplify import simplify
    from pruner_zero.metric.symbolic import canonical_key

    from conftest import scores_of

    w, x = xy[0].abs(), xy[1][:1].abs()
    ria = (w / w.sum(dim=0, keepdim=True) + w / w.sum(dim=1, keepdim=True)) * x ** 0.25
    torch.testing.assert_close(scores_of(parse_formula(BUILTINS["ria"]), w, X=x), ria)
    assert torch.equal(UNARY["coln"](x), torch.ones_like(x))  # a row: each column is one value
    repeated = UNARY["coln"](x.expand(6, 5))
    torch.testing.assert_close(repeated, torch.full((6, 5), 1 / 6))
    alone, broadcast = parse_formula("coln(X)"), parse_formula("coln(add(X, sub(W, W)))")
    assert canonical_key(alone) != canonical_key(broadcast)
    assert str(simplify(broadcast)) != "coln(X)"  # the rewrite keeps the operand's shape
    assert canonical_key(parse_formula("rown(mul(W, 3.0))")) == canonical_key(parse_formula("rown(W)"))
