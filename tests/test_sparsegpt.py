"""sparsegpt.py: the weight update beats plain masking; N:M groups stay whole."""
import pytest
import torch


def test_sparsegpt_weight_update_beats_plain_masking_on_the_layer_output():
    from pruner_zero.masks import Structure
    from pruner_zero.sparsegpt import HessianAccumulator, sparsegpt_weight

    torch.manual_seed(0)
    W = torch.randn(16, 32)
    x = torch.randn(4, 64, 32) * torch.linspace(0.1, 3, 32)
    acc = HessianAccumulator(32, torch.device("cpu"))
    for b in x:
        acc.add(b[None])
    new = sparsegpt_weight(W, acc.H, Structure(0.5))
    assert (new == 0).float().mean().item() == pytest.approx(0.5, abs=0.05)
    masked = W.masked_fill(new == 0, 0)
    inp = x.reshape(-1, 32)
    err_update = (inp @ (W - new).t()).pow(2).sum()
    err_mask = (inp @ (W - masked).t()).pow(2).sum()
    assert err_update < err_mask


def test_sparsegpt_n_m_groups_stay_whole_when_m_does_not_divide_the_block():
    from pruner_zero.masks import Structure
    from pruner_zero.sparsegpt import sparsegpt_weight

    torch.manual_seed(0)
    W, x = torch.randn(6, 192), torch.randn(256, 192)
    new = sparsegpt_weight(W, 2 * x.t() @ x / 256, Structure(1 / 3, n=2, m=3))
    zeros = (new == 0).view(6, 64, 3).sum(dim=2)
    assert torch.equal(zeros, torch.ones_like(zeros))  # exactly one of every 3, across column 128
