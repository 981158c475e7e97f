"""metric/builtin.py: the built-in metrics are the published formulas."""

import json

import torch

from conftest import PAPER_FORMULA, PAPER_JSON, scores_of
from pruner_zero.metric.builtin import BUILTINS
from pruner_zero.metric.io import resolve_metric, to_paper_json


def test_builtin_wanda_and_gblm_equal_direct_formulas(wgx):
    W, G, X = wgx
    signed = W * torch.where(torch.rand(W.shape) < 0.5, -1.0, 1.0)
    _, wanda = resolve_metric("wanda")
    torch.testing.assert_close(scores_of(wanda, signed.abs(), G, X), signed.abs() * torch.sqrt(X).view(1, -1))
    _, gblm = resolve_metric("gblm")
    torch.testing.assert_close(scores_of(gblm, W, G, X), W * (X.sqrt().view(1, -1) + 100 * G))
    _, mag = resolve_metric("magnitude")
    torch.testing.assert_close(scores_of(mag, W, G, X), W)


def test_builtin_pruner_zero_is_the_paper_metric():
    assert BUILTINS["pruner-zero"] == PAPER_FORMULA
    assert to_paper_json(resolve_metric("pruner-zero")[1]) == json.loads(PAPER_JSON)
