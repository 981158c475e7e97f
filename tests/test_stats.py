"""X and G against a direct computation on a tiny random LLaMA."""
import torch
from torch import nn

from pruner_zero.model import prunable_linears
from pruner_zero.stats import GradientNorm, SquaredInputMean, compute_stats


def test_prunable_linears_are_decoder_linears_only(tiny_model):
    names = list(prunable_linears(tiny_model))
    assert len(names) == 2 * 7  # q k v o gate up down per block
    assert all(n.startswith("model.layers.") for n in names)
    assert not any("lm_head" in n or "embed" in n for n in names)


def test_accumulators_match_definitions():
    torch.manual_seed(0)
    a, b = torch.randn(2, 5, 3), torch.randn(1, 7, 3)
    acc = SquaredInputMean(3, torch.device("cpu"))
    acc.add(a)
    acc.add(b)
    tokens = torch.cat([a.reshape(-1, 3), b.reshape(-1, 3)])
    assert torch.allclose(acc.value(), (tokens ** 2).mean(dim=0))
    g = GradientNorm(torch.Size([2, 2]), torch.device("cpu"))
    grads = [torch.randn(2, 2) for _ in range(4)]
    for x in grads:
        g.add(x)
    assert torch.allclose(g.value(), torch.stack(grads).norm(dim=0))


def test_X_and_G_equal_direct_computation(tiny_model):
    torch.manual_seed(3)
    calib = torch.randint(0, 64, (3, 12))
    linears = prunable_linears(tiny_model)
    stats = compute_stats(tiny_model, linears, calib, progress=False)
    # the model is left as it was: no gradients, trainable flags restored
    assert all(p.grad is None for p in tiny_model.parameters())
    assert all(p.requires_grad for p in tiny_model.parameters())

    # direct: capture inputs of every linear, and per-sample gradients, by hand
    name = "model.layers.1.mlp.down_proj"
    lin = linears[name]
    inputs, grads = [], []
    h = lin.register_forward_hook(lambda m, a, o: inputs.append(a[0].detach().reshape(-1, lin.in_features)))
    for window in calib:
        tiny_model.zero_grad()
        ids = window[None]
        logits = tiny_model(input_ids=ids).logits
        loss = nn.functional.cross_entropy(logits[0, :-1], ids[0, 1:])
        loss.backward()
        grads.append(lin.weight.grad.detach().clone())
    h.remove()
    X = (torch.cat(inputs) ** 2).mean(dim=0)
    G = torch.stack(grads).pow(2).sum(dim=0).sqrt()
    assert torch.allclose(stats[name].X, X, rtol=1e-5, atol=1e-8)
    assert torch.allclose(stats[name].G, G, rtol=1e-4, atol=1e-9)
    assert stats[name].G.shape == lin.weight.shape and stats[name].X.shape == (lin.in_features,)
