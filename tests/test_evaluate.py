"""The perplexity's head path: the NLL taken from the hidden states a slice of tokens at a time
equals the whole forward's, and only architectures whose logits are the bare head take it."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from pruner_zero import evaluate
from conftest import tiny_llama


def _reference_nll(model, windows: torch.Tensor) -> float:
    """Summed NLL from the whole forward's logits, in float64."""
    with torch.no_grad():
        logits = model(input_ids=windows).logits[:, :-1].double()
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), windows[:, 1:].reshape(-1),
                           reduction="sum").item()


@pytest.mark.parametrize("chunk_elements", [64 * 5, 64 * 7 + 3, 1 << 24])
def test_head_path_equals_the_whole_forward(monkeypatch, chunk_elements):
    model = tiny_llama(seed=3)
    assert evaluate.plain_head(model) is model.lm_head
    # slices of 5 and 7 tokens (not dividing the 2 x 15 predicted tokens), and all at once
    monkeypatch.setattr(evaluate, "HEAD_CHUNK_ELEMENTS", chunk_elements)
    windows = torch.randint(0, 64, (3, 16), generator=torch.Generator().manual_seed(0))
    got = list(evaluate.window_nll(model, windows, batch_size=2))
    assert [n for _, n in got] == [30, 15]
    assert sum(v for v, _ in got) == pytest.approx(_reference_nll(model, windows), rel=1e-6)
    ppl = evaluate.perplexity(model, windows, batch_size=2)
    assert ppl == pytest.approx(math.exp(_reference_nll(model, windows) / 45), rel=1e-6)


def test_head_path_never_runs_the_whole_forward(monkeypatch):
    model = tiny_llama(seed=4)
    windows = torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(1))
    expected = _reference_nll(model, windows)

    def refuse(*args, **kwargs):
        raise AssertionError("the whole forward ran")

    monkeypatch.setattr(type(model), "forward", refuse)
    assert sum(v for v, _ in evaluate.window_nll(model, windows)) == pytest.approx(expected,
                                                                                  rel=1e-6)


@pytest.mark.parametrize("change", ["model_type", "softcap", "logit_scale"])
def test_other_heads_take_the_whole_forward(change):
    model = tiny_llama(seed=5)
    if change == "model_type":
        model.config.model_type = "gemma2"
    elif change == "softcap":
        model.config.final_logit_softcapping = 30.0
    else:
        model.config.logit_scale = 0.5
    assert evaluate.plain_head(model) is None
    windows = torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(2))
    # the whole forward: the same NLL (this model has no soft-capping; the config only says so)
    got = sum(v for v, _ in evaluate.window_nll(model, windows))
    assert got == pytest.approx(_reference_nll(model, windows), rel=1e-5)


def test_a_bare_module_takes_the_whole_forward():
    assert evaluate.plain_head(torch.nn.Linear(3, 3)) is None


def test_head_path_calls_the_head_module_so_its_hooks_run():
    """A model spread over devices or offloaded moves inputs and loads weights in the head's
    hooks: the head is called as a module, not read as a weight."""
    model = tiny_llama(seed=6)
    seen: list[torch.Size] = []
    model.lm_head.register_forward_pre_hook(lambda mod, args: seen.append(args[0].shape))
    windows = torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(3))
    total = sum(v for v, _ in evaluate.window_nll(model, windows))
    assert seen and sum(s[0] for s in seen) == 2 * 11
    assert total == pytest.approx(_reference_nll(model, windows), rel=1e-6)


def test_remote_code_of_a_known_type_takes_the_whole_forward():
    model = tiny_llama(seed=7)
    remote = type("LlamaForCausalLM", (type(model),), {"__module__": "transformers_modules.x"})
    model.__class__ = remote
    assert evaluate.plain_head(model) is None
