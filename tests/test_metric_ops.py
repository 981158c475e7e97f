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
